//! Authentication, with the collector's authenticator extensions
//! (`bearertokenauth`, `basicauth`) and its `auth: authenticator: <id>`
//! key: under a receiver's protocol an authenticator checks every request
//! before anything of it is read, and under an exporter it adds its
//! header to every request sent. A started authenticator extension is
//! reached by components through
//! [`BuildContext::authenticators`](crate::context::BuildContext).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use crate::config::{error, ComponentError};

pub mod basic;
pub mod bearer;
mod htpasswd;

/// `auth:` under a gRPC server or any exporter (the collector's
/// `configauth.Config`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The id of the authenticator extension (`bearertokenauth`,
    /// `basicauth/server`), which must be listed in `service::extensions`.
    #[serde(default)]
    pub authenticator: String,
}

/// `auth:` under an HTTP server (the collector's `confighttp.AuthConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuthConfig {
    /// The id of the authenticator extension.
    #[serde(default)]
    pub authenticator: String,
    /// Query parameters handed to the authenticator as if they were
    /// headers; a parameter present in both wins over the header.
    #[serde(default)]
    pub request_params: Vec<String>,
}

/// Checks an `authenticator` value; `path` is the `auth` section's.
pub(crate) fn validate_id(path: &str, id: &str) -> Result<(), ComponentError> {
    if id.trim().is_empty() {
        return Err(error(
            &format!("{path}.authenticator"),
            "authenticator must name an authenticator extension, such as bearertokenauth",
        ));
    }
    Ok(())
}

impl AuthConfig {
    pub(crate) fn validate(&self, path: &str) -> Result<(), ComponentError> {
        validate_id(path, &self.authenticator)
    }
}

impl HttpAuthConfig {
    pub(crate) fn validate(&self, path: &str) -> Result<(), ComponentError> {
        validate_id(path, &self.authenticator)
    }
}

/// What a server authenticator is shown of a request: its headers (gRPC
/// metadata are headers too) and, for HTTP servers with
/// `request_params`, those query parameters.
pub struct Credentials<'a> {
    headers: &'a HeaderMap,
    params: Vec<(String, String)>,
}

impl<'a> Credentials<'a> {
    /// A request's headers, and the query parameters of `uri` named in
    /// `request_params`.
    pub fn new(headers: &'a HeaderMap, uri: &Uri, request_params: &[String]) -> Self {
        let mut params = Vec::new();
        if !request_params.is_empty() {
            for (name, value) in parse_query(uri.query().unwrap_or_default()) {
                if request_params.contains(&name) && !params.iter().any(|(n, _)| *n == name) {
                    params.push((name, value));
                }
            }
        }
        Credentials { headers, params }
    }

    /// The first value of `name`: a request parameter of that name if
    /// there is one, else the header (names compared without case).
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        if let Some((_, value)) = self
            .params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Some(value.as_bytes());
        }
        self.headers.get(name).map(HeaderValue::as_bytes)
    }
}

/// `a=1&b=x+y%21` as Go's `url.ParseQuery` reads it; a pair that does
/// not decode is skipped.
fn parse_query(query: &str) -> Vec<(String, String)> {
    use crate::url::query_unescape;
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((query_unescape(name)?, query_unescape(value)?))
        })
        .collect()
}

/// Checks the credentials of requests a receiver takes.
#[async_trait::async_trait]
pub trait ServerAuthenticator: Send + Sync {
    /// `Err` says why the request is refused; it becomes the message of
    /// the UNAUTHENTICATED (gRPC) or 401 (HTTP) answer.
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<(), String>;
}

/// Adds credentials to requests an exporter sends.
pub trait ClientAuthenticator: Send + Sync {
    /// The header to send with the next request. Read for every request,
    /// so a token file replaced at run time is sent from then on.
    fn header(&self) -> (HeaderName, HeaderValue);
}

/// A started authenticator extension: what it can do as a server and as
/// a client (`basicauth` is one or the other, `bearertokenauth` both).
#[derive(Clone, Default)]
pub struct Authenticator {
    pub server: Option<Arc<dyn ServerAuthenticator>>,
    pub client: Option<Arc<dyn ClientAuthenticator>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("server", &self.server.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// The started authenticator extensions, by id: what receivers and
/// exporters find through
/// [`BuildContext::authenticators`](crate::context::BuildContext).
#[derive(Debug, Clone, Default)]
pub struct Authenticators(Arc<BTreeMap<String, Authenticator>>);

impl Authenticators {
    pub fn new(started: impl IntoIterator<Item = (String, Authenticator)>) -> Authenticators {
        Authenticators(Arc::new(started.into_iter().collect()))
    }

    fn find(&self, id: &str) -> Result<&Authenticator, String> {
        self.0.get(id).ok_or_else(|| {
            format!(
                "failed to resolve authenticator {id:?}: authenticator not found (define it \
                 under extensions and list it in service::extensions)"
            )
        })
    }

    /// The server side of authenticator `id`, as the collector resolves it.
    pub fn server(&self, id: &str) -> Result<Arc<dyn ServerAuthenticator>, String> {
        self.find(id)?
            .server
            .clone()
            .ok_or_else(|| format!("{id:?}: requested authenticator is not a server authenticator"))
    }

    /// The client side of authenticator `id`.
    pub fn client(&self, id: &str) -> Result<Arc<dyn ClientAuthenticator>, String> {
        self.find(id)?
            .client
            .clone()
            .ok_or_else(|| format!("{id:?}: requested authenticator is not a client authenticator"))
    }
}

/// An exporter's resolved `auth`: not a config key, but the started
/// authenticator an exporter's `auth.authenticator` names, put beside the
/// config when the exporter is built. Configs compare equal whatever it
/// holds.
#[derive(Clone)]
pub struct ClientAuth(pub Arc<dyn ClientAuthenticator>);

impl ClientAuth {
    /// Resolves `auth` (if any) among the started authenticators.
    pub fn resolve(
        authenticators: &Authenticators,
        auth: Option<&AuthConfig>,
    ) -> Result<Option<ClientAuth>, String> {
        auth.map(|a| {
            authenticators
                .client(&a.authenticator)
                .map(ClientAuth)
                .map_err(|e| format!("auth: {e}"))
        })
        .transpose()
    }
}

impl PartialEq for ClientAuth {
    fn eq(&self, _: &ClientAuth) -> bool {
        true
    }
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuth")
    }
}

/// A receiver protocol's authenticator with its `request_params`, as the
/// listener checks requests with it.
#[derive(Clone)]
pub(crate) struct ServerAuth {
    authenticator: Arc<dyn ServerAuthenticator>,
    request_params: Arc<[String]>,
}

impl ServerAuth {
    /// Resolves `auth` (gRPC: no request parameters) among the started
    /// authenticators; `None` when the protocol has no `auth`.
    pub fn resolve(
        authenticators: &Authenticators,
        authenticator: Option<&str>,
        request_params: &[String],
    ) -> Result<Option<ServerAuth>, String> {
        let Some(id) = authenticator else {
            return Ok(None);
        };
        Ok(Some(ServerAuth {
            authenticator: authenticators.server(id)?,
            request_params: request_params.into(),
        }))
    }

    /// Checks a request's credentials.
    pub async fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), String> {
        let credentials = Credentials::new(headers, uri, &self.request_params);
        self.authenticator.authenticate(&credentials).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_params_win_over_headers_and_are_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer header"));
        headers.insert("x-other", HeaderValue::from_static("h"));
        let uri: Uri = "/v1/traces?authorization=Bearer+from%20query&x-other=q"
            .parse()
            .unwrap();
        let only_auth = Credentials::new(&headers, &uri, &["authorization".to_string()]);
        assert_eq!(
            only_auth.first("Authorization"),
            Some(&b"Bearer from query"[..])
        );
        assert_eq!(only_auth.first("x-other"), Some(&b"h"[..]));
        let none = Credentials::new(&headers, &uri, &[]);
        assert_eq!(none.first("authorization"), Some(&b"Bearer header"[..]));
        assert_eq!(none.first("missing"), None);
    }

    #[test]
    fn resolving_names_what_is_missing_or_of_the_wrong_side() {
        let client_only = Authenticator {
            server: None,
            client: Some(Arc::new(Fixed)),
        };
        let started = Authenticators::new([("basicauth/client".to_string(), client_only)]);
        let e = started.server("basicauth/client").err().unwrap();
        assert!(e.contains("not a server authenticator"), "{e}");
        assert!(started.client("basicauth/client").is_ok());
        let e = started.client("bearertokenauth").err().unwrap();
        assert!(e.contains("authenticator not found"), "{e}");
    }

    struct Fixed;

    impl ClientAuthenticator for Fixed {
        fn header(&self) -> (HeaderName, HeaderValue) {
            (
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Basic x"),
            )
        }
    }
}
