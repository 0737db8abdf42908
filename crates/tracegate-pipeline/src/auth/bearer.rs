//! The `bearertokenauth` extension, with the collector's keys: a token
//! (or several) sent in a header by exporters and required of clients by
//! receivers. A token `filename` is read at start and again whenever the
//! file changes (see [`super::watch`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{Authenticator, ClientAuthenticator, Credentials, ServerAuthenticator};
use crate::config::{error, ComponentError};
use crate::context::BuildContext;
use crate::extension::{BuildExtension, RunningExtension, Started};
use crate::file_watch as watch;

/// `extensions: bearertokenauth[/name]:`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header that carries the token. Default `Authorization`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Written before the token, with a space: `Bearer <token>`. Default
    /// `Bearer`; `""` sends the token alone.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The token.
    #[serde(default)]
    pub token: String,
    /// Several tokens: a receiver accepts any of them, an exporter sends
    /// the first.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// A file holding the token(s), one per line; when set, `token` and
    /// `tokens` are ignored. Read again whenever it changes.
    #[serde(default)]
    pub filename: String,
}

/// Tokens are secrets: a config is shown without them.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("header", &self.header)
            .field("scheme", &self.scheme)
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "[REDACTED]"
                },
            )
            .field("tokens", &format!("[{} REDACTED]", self.tokens.len()))
            .field("filename", &self.filename)
            .finish()
    }
}

fn default_header() -> String {
    "Authorization".into()
}
fn default_scheme() -> String {
    "Bearer".into()
}

impl Config {
    /// The collector's checks, and that the header name and values can be
    /// sent.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        if self.token.is_empty() && self.tokens.is_empty() && self.filename.is_empty() {
            return Err(error("", "no bearer token provided"));
        }
        if !self.token.is_empty() && !self.tokens.is_empty() {
            return Err(error(
                "",
                "either tokens or token should be provided, not both",
            ));
        }
        HeaderName::from_bytes(self.header.as_bytes()).map_err(|_| {
            error(
                "header",
                format!("{:?} is not a valid header name", self.header),
            )
        })?;
        let mut warnings = Vec::new();
        if self.filename.is_empty() {
            for (i, token) in self.configured_tokens().iter().enumerate() {
                if let Err(e) = self.value_of(token) {
                    let key = if self.tokens.is_empty() {
                        "token".to_string()
                    } else {
                        format!("tokens[{i}]")
                    };
                    return Err(error(&key, e));
                }
            }
        } else if !self.token.is_empty() || !self.tokens.is_empty() {
            warnings.push("filename is set, so token and tokens are ignored".to_string());
        }
        Ok(warnings)
    }

    fn configured_tokens(&self) -> Vec<String> {
        if self.tokens.is_empty() {
            vec![self.token.clone()]
        } else {
            self.tokens.clone()
        }
    }

    /// `<scheme> <token>`, or the token alone without a scheme.
    fn value_of(&self, token: &str) -> Result<HeaderValue, String> {
        let text = if self.scheme.is_empty() {
            token.to_string()
        } else {
            format!("{} {token}", self.scheme)
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| "the token is not a valid header value".to_string())?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The header values of the tokens in the file: one per non-empty
    /// line, trimmed.
    fn read_file(&self) -> Result<Vec<HeaderValue>, String> {
        let text = std::fs::read_to_string(&self.filename)
            .map_err(|e| format!("cannot read token file {}: {e}", self.filename))?;
        let values = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|token| self.value_of(token))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("token file {}: {e}", self.filename))?;
        if values.is_empty() {
            return Err(format!("token file {} holds no token", self.filename));
        }
        Ok(values)
    }
}

/// A started `bearertokenauth`: the header and the accepted values, the
/// first of which clients send.
pub struct BearerToken {
    header: HeaderName,
    values: RwLock<Arc<[HeaderValue]>>,
}

impl BearerToken {
    fn values(&self) -> Arc<[HeaderValue]> {
        self.values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, values: Vec<HeaderValue>) {
        *self.values.write().unwrap_or_else(|e| e.into_inner()) = values.into();
    }
}

#[async_trait::async_trait]
impl ServerAuthenticator for BearerToken {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<(), String> {
        let Some(sent) = credentials
            .first(self.header.as_str())
            .filter(|v| !v.is_empty())
        else {
            return Err(format!(
                "missing or empty authorization header: {}",
                self.header
            ));
        };
        // Every value is compared, in constant time, so that the time
        // taken tells nothing of how much of a token matched.
        let mut matched = subtle::Choice::from(0);
        for value in self.values().iter() {
            matched |= subtle::ConstantTimeEq::ct_eq(value.as_bytes(), sent);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err("scheme or token does not match".to_string())
        }
    }
}

impl ClientAuthenticator for BearerToken {
    fn header(&self) -> (HeaderName, HeaderValue) {
        let value = self
            .values()
            .first()
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""));
        (self.header.clone(), value)
    }
}

impl BearerToken {
    /// Reads the tokens (the file, if one is set) and, with a file, starts
    /// watching it until `ctx.shutdown`. A file that cannot be read, or
    /// holds no token, fails the start; later, such a version is logged
    /// and the tokens read before stay in use.
    pub fn start(
        id: &str,
        config: &Config,
        ctx: &BuildContext,
    ) -> Result<Arc<BearerToken>, String> {
        let header = HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| format!("{:?} is not a valid header name", config.header))?;
        if config.filename.is_empty() {
            let values = config
                .configured_tokens()
                .iter()
                .map(|t| config.value_of(t))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Arc::new(BearerToken {
                header,
                values: RwLock::new(values.into()),
            }));
        }
        let path = PathBuf::from(&config.filename);
        let seen = watch::identity(&path);
        let auth = Arc::new(BearerToken {
            header,
            values: RwLock::new(config.read_file()?.into()),
        });
        let weak = Arc::downgrade(&auth);
        let config = config.clone();
        let id = id.to_string();
        watch::spawn_poll(
            path,
            seen,
            watch::POLL_EVERY,
            ctx.shutdown.clone(),
            move || {
                let Some(auth) = weak.upgrade() else { return };
                match config.read_file() {
                    Ok(values) => {
                        tracing::info!(extension = %id, file = %config.filename, "token file changed: tokens reloaded");
                        auth.set(values);
                    }
                    Err(e) => {
                        tracing::warn!(extension = %id, error = %e, "token file changed but cannot be used; keeping the tokens read before");
                    }
                }
            },
        );
        Ok(auth)
    }
}

#[async_trait::async_trait]
impl BuildExtension for Config {
    async fn start(&self, id: &str, ctx: &BuildContext) -> Started {
        let auth = BearerToken::start(id, self, ctx)?;
        Ok(RunningExtension {
            authenticator: Some(Authenticator {
                server: Some(auth.clone()),
                client: Some(auth),
            }),
            ..RunningExtension::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Uri};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::from_value;

    fn config(value: serde_json::Value) -> Config {
        from_value(value).unwrap()
    }

    async fn check(auth: &BearerToken, header: &str, value: Option<&str>) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(
                HeaderName::from_bytes(header.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let uri = Uri::from_static("/");
        auth.authenticate(&Credentials::new(&headers, &uri, &[]))
            .await
    }

    #[test]
    fn defaults_and_checks_are_the_collectors() {
        let c = config(serde_json::json!({"token": "t"}));
        assert_eq!(
            (c.header.as_str(), c.scheme.as_str()),
            ("Authorization", "Bearer")
        );
        assert_eq!(c.validate().unwrap(), Vec::<String>::new());
        let none = config(serde_json::Value::Null).validate().unwrap_err();
        assert_eq!(none.message, "no bearer token provided");
        let both = config(serde_json::json!({"token": "t", "tokens": ["u"]}));
        assert!(both.validate().unwrap_err().message.contains("not both"));
        let file_wins = config(serde_json::json!({"token": "t", "filename": "f"}));
        assert_eq!(file_wins.validate().unwrap().len(), 1);
        let bad = config(serde_json::json!({"tokens": ["ok", "new\nline"]}));
        assert_eq!(bad.validate().unwrap_err().path, "tokens[1]");
        assert!(
            !format!("{:?}", config(serde_json::json!({"token": "s3cret"}))).contains("s3cret")
        );
    }

    #[tokio::test]
    async fn servers_take_any_token_and_clients_send_the_first() {
        let c = config(serde_json::json!({"tokens": ["one", "two"], "header": "X-Api-Key"}));
        let auth = BearerToken::start("bearertokenauth", &c, &BuildContext::default()).unwrap();
        assert_eq!(check(&auth, "x-api-key", Some("Bearer two")).await, Ok(()));
        assert_eq!(check(&auth, "x-api-key", Some("Bearer one")).await, Ok(()));
        assert_eq!(
            check(&auth, "x-api-key", Some("Bearer three")).await,
            Err("scheme or token does not match".into())
        );
        assert_eq!(
            check(&auth, "authorization", Some("Bearer one")).await,
            Err("missing or empty authorization header: x-api-key".into())
        );
        assert_eq!(
            ClientAuthenticator::header(auth.as_ref()),
            (
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("Bearer one")
            )
        );
        let raw = config(serde_json::json!({"token": "abc", "scheme": ""}));
        let raw = BearerToken::start("b", &raw, &BuildContext::default()).unwrap();
        assert_eq!(check(&raw, "authorization", Some("abc")).await, Ok(()));
        assert!(check(&raw, "authorization", Some("Bearer abc"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_token_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n\n second \n").unwrap();
        let c = config(serde_json::json!({"filename": path.to_str().unwrap()}));
        let shutdown = CancellationToken::new();
        let auth = BearerToken::start("b", &c, &BuildContext::from(shutdown.clone())).unwrap();
        assert_eq!(
            check(&auth, "authorization", Some("Bearer second")).await,
            Ok(())
        );
        assert!(check(&auth, "authorization", Some("Bearer "))
            .await
            .is_err());
        // Replaced as Kubernetes does: a new file renamed over the old.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "rotated").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while check(&auth, "authorization", Some("Bearer rotated"))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new token was never read"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(check(&auth, "authorization", Some("Bearer first"))
            .await
            .is_err());
        assert_eq!(
            ClientAuthenticator::header(auth.as_ref()).1,
            HeaderValue::from_static("Bearer rotated")
        );
        // An emptied file is not taken: the tokens read before stay.
        std::fs::write(&path, "\n").unwrap();
        tokio::time::sleep(watch::POLL_EVERY * 2).await;
        assert_eq!(
            check(&auth, "authorization", Some("Bearer rotated")).await,
            Ok(())
        );
        shutdown.cancel();

        let missing =
            config(serde_json::json!({"filename": dir.path().join("nope").to_str().unwrap()}));
        let e = BearerToken::start("b", &missing, &BuildContext::default())
            .err()
            .unwrap();
        assert!(e.contains("cannot read token file"), "{e}");
    }
}
