//! The `basicauth` extension, with the collector's keys: HTTP Basic
//! authentication, checked against htpasswd content by receivers
//! (`htpasswd`) or sent by exporters (`client_auth`); one extension is one
//! or the other.

use std::sync::Arc;

use base64::Engine;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::htpasswd::Htpasswd;
use super::{Authenticator, ClientAuthenticator, Credentials, ServerAuthenticator};
use crate::config::{error, ComponentError};
use crate::context::BuildContext;
use crate::extension::{BuildExtension, RunningExtension, Started};

/// `extensions: basicauth[/name]:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The accepted users, for receivers.
    #[serde(default)]
    pub htpasswd: Option<HtpasswdSettings>,
    /// The credentials exporters send.
    #[serde(default)]
    pub client_auth: Option<ClientAuthSettings>,
}

/// `htpasswd:`; with both, the file is read first and `inline` after it,
/// so a user in both has the inline password.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdSettings {
    /// An htpasswd file, read once at start.
    #[serde(default)]
    pub file: String,
    /// htpasswd lines (`user:hash`) in the config itself.
    #[serde(default)]
    pub inline: String,
}

/// `client_auth:`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSettings {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

/// The password is a secret: it is shown redacted.
impl std::fmt::Debug for ClientAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthSettings")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

impl Config {
    /// The collector's checks: one of `htpasswd` or `client_auth`, a
    /// source of users for a server, a username without `:`.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        match (&self.htpasswd, &self.client_auth) {
            (Some(_), Some(_)) => Err(error(
                "",
                "only one of `htpasswd` or `client_auth` can be specified",
            )),
            (None, None) => Err(error("", "no credential source provided")),
            (Some(h), None) if h.file.is_empty() && h.inline.is_empty() => Err(error(
                "htpasswd",
                "no credential source provided: set file or inline",
            )),
            (Some(h), None) => {
                if !h.inline.is_empty() {
                    Htpasswd::parse(&h.inline, "htpasswd.inline")
                        .map_err(|e| error("htpasswd.inline", e))?;
                }
                Ok(Vec::new())
            }
            (None, Some(c)) => {
                if c.username.contains(':') {
                    return Err(error(
                        "client_auth.username",
                        "invalid authorization format: the username cannot contain ':'",
                    ));
                }
                client_header(c).map_err(|e| error("client_auth", e))?;
                Ok(Vec::new())
            }
        }
    }
}

fn client_header(c: &ClientAuthSettings) -> Result<HeaderValue, String> {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "the credentials do not make a header value".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// A `basicauth` extension for receivers.
pub struct BasicServer {
    htpasswd: Htpasswd,
}

/// A `basicauth` extension for exporters.
pub struct BasicClient {
    header: HeaderValue,
}

impl ClientAuthenticator for BasicClient {
    fn header(&self) -> (HeaderName, HeaderValue) {
        (http::header::AUTHORIZATION, self.header.clone())
    }
}

#[async_trait::async_trait]
impl ServerAuthenticator for BasicServer {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<(), String> {
        let Some(sent) = credentials.first("authorization").filter(|v| !v.is_empty()) else {
            return Err("no basic auth provided".into());
        };
        let (user, password) = parse_basic(sent)?;
        if self.htpasswd.matches(&user, &password).await {
            Ok(())
        } else {
            Err("invalid credentials".into())
        }
    }
}

/// `Basic <base64 of user:password>`, the scheme's case aside, as Go's
/// `Request.BasicAuth` reads it.
fn parse_basic(value: &[u8]) -> Result<(String, String), String> {
    const PREFIX: &[u8] = b"basic ";
    if value.len() < PREFIX.len() || !value[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return Err("invalid authorization scheme prefix".into());
    }
    let invalid = || "invalid authorization format".to_string();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&value[PREFIX.len()..])
        .map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok((user.to_string(), password.to_string()))
}

impl BasicServer {
    /// Reads `file` (if set) then `inline`.
    fn load(settings: &HtpasswdSettings) -> Result<BasicServer, String> {
        let mut text = String::new();
        if !settings.file.is_empty() {
            let content = std::fs::read_to_string(&settings.file)
                .map_err(|e| format!("open htpasswd file {}: {e}", settings.file))?;
            // Parsed on its own first, so that an error names the file.
            Htpasswd::parse(&content, &format!("htpasswd file {}", settings.file))?;
            text.push_str(&content);
            text.push('\n');
        }
        text.push_str(&settings.inline);
        Ok(BasicServer {
            htpasswd: Htpasswd::parse(&text, "htpasswd")?,
        })
    }
}

#[async_trait::async_trait]
impl BuildExtension for Config {
    async fn start(&self, _: &str, _: &BuildContext) -> Started {
        let authenticator = match (&self.htpasswd, &self.client_auth) {
            (Some(settings), _) => Authenticator {
                server: Some(Arc::new(BasicServer::load(settings)?)),
                client: None,
            },
            (None, Some(client)) => Authenticator {
                server: None,
                client: Some(Arc::new(BasicClient {
                    header: client_header(client)?,
                })),
            },
            (None, None) => return Err("no credential source provided".into()),
        };
        Ok(RunningExtension {
            authenticator: Some(authenticator),
            ..RunningExtension::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Uri};

    use super::*;
    use crate::config::from_value;

    fn config(value: serde_json::Value) -> Config {
        from_value(value).unwrap()
    }

    async fn check(server: &BasicServer, value: Option<&str>) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert("authorization", HeaderValue::from_str(value).unwrap());
        }
        let uri = Uri::from_static("/");
        server
            .authenticate(&Credentials::new(&headers, &uri, &[]))
            .await
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn one_side_only_as_in_the_collector() {
        let both = config(serde_json::json!({
            "htpasswd": {"inline": "u:p"}, "client_auth": {"username": "u", "password": "p"}
        }));
        assert!(both.validate().unwrap_err().message.contains("only one of"));
        let none = config(serde_json::Value::Null);
        assert_eq!(
            none.validate().unwrap_err().message,
            "no credential source provided"
        );
        let empty = config(serde_json::json!({"htpasswd": {}}));
        assert_eq!(empty.validate().unwrap_err().path, "htpasswd");
        let colon =
            config(serde_json::json!({"client_auth": {"username": "a:b", "password": "p"}}));
        assert_eq!(colon.validate().unwrap_err().path, "client_auth.username");
        let unsupported = config(serde_json::json!({"htpasswd": {"inline": "u:$6$s$h"}}));
        let e = unsupported.validate().unwrap_err();
        assert_eq!(e.path, "htpasswd.inline");
        assert!(e.message.contains("not supported"), "{e}");
        let c = config(serde_json::json!({"client_auth": {"username": "u", "password": "s3cret"}}));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn the_file_is_read_and_inline_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        let hash = bcrypt::hash("from-file", 4).unwrap();
        std::fs::write(&file, format!("alice:{hash}\nbob:old\n")).unwrap();
        let server = BasicServer::load(&HtpasswdSettings {
            file: file.to_str().unwrap().into(),
            inline: "bob:new".into(),
        })
        .unwrap();
        assert_eq!(
            check(&server, Some(&basic("alice:from-file"))).await,
            Ok(())
        );
        assert_eq!(check(&server, Some(&basic("bob:new"))).await, Ok(()));
        assert_eq!(
            check(&server, Some(&basic("bob:old"))).await,
            Err("invalid credentials".into())
        );
        assert_eq!(
            check(&server, None).await,
            Err("no basic auth provided".into())
        );
        assert_eq!(
            check(&server, Some("Bearer x")).await,
            Err("invalid authorization scheme prefix".into())
        );
        assert_eq!(
            check(&server, Some("basic !!!")).await,
            Err("invalid authorization format".into())
        );
        assert_eq!(
            check(&server, Some(&basic("nocolon"))).await,
            Err("invalid authorization format".into())
        );
        let missing = BasicServer::load(&HtpasswdSettings {
            file: dir.path().join("nope").to_str().unwrap().into(),
            inline: String::new(),
        });
        assert!(missing.err().unwrap().contains("open htpasswd file"));
    }

    #[test]
    fn clients_send_basic_credentials() {
        let header = client_header(&ClientAuthSettings {
            username: "u".into(),
            password: "p:w".into(),
        })
        .unwrap();
        assert_eq!(header, HeaderValue::from_str(&basic("u:p:w")).unwrap());
        assert_eq!(
            parse_basic(header.as_bytes()).unwrap(),
            ("u".into(), "p:w".into())
        );
    }
}
