//! The collector's `confighttp` server keys that shape connections rather
//! than requests, as every HTTP receiver takes them: `read_header_timeout`,
//! `idle_timeout`, `keep_alives_enabled` and `response_headers`. They are
//! declared once, in [`http_server_config!`], which each HTTP receiver's
//! config is written with; this module turns them into
//! [`ConnectionSettings`].

use std::sync::Arc;
use std::time::Duration;

use crate::tls::ServerTls;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::counters::TransportCounters;
use super::http_ingest::AuthGate;
use super::listener::{self, ConnectionSettings};
use super::StartError;
use crate::auth::{Authenticators, HttpAuthConfig, ServerAuth};
use crate::config::{error, ComponentError, HeaderPairs};

/// `response_headers`: added to every answer of the receiver, unless the
/// answer sets the header itself (the collector sets them before its
/// handler runs, so the handler's own value wins). Written as a mapping
/// (`X-Name: value`) or, as the collector also takes it, a list of
/// `{name, value}` ([`crate::config::HeaderPairs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "HeaderPairs")]
pub struct ResponseHeaders(pub Vec<(String, String)>);

impl From<HeaderPairs> for ResponseHeaders {
    fn from(pairs: HeaderPairs) -> Self {
        ResponseHeaders(pairs.0)
    }
}

impl ResponseHeaders {
    /// Each header as HTTP takes it; `Err` names the bad or repeated one.
    fn parse(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let mut parsed: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of {name:?} is not a valid HTTP header value"))?;
            if parsed.iter().any(|(n, _)| *n == header) {
                return Err(format!("header {name:?} is listed twice"));
            }
            parsed.push((header, value));
        }
        Ok(parsed)
    }
}

/// The connection keys of one HTTP receiver's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpServerKeys<'a> {
    /// `read_header_timeout`: unset keeps hyper's 30 s; `0` means none.
    pub read_header_timeout: Option<Duration>,
    /// `idle_timeout`: unset or `0` means none.
    pub idle_timeout: Option<Duration>,
    pub keep_alives_enabled: bool,
    pub response_headers: &'a ResponseHeaders,
    pub auth: Option<&'a HttpAuthConfig>,
}

impl HttpServerKeys<'_> {
    /// Pure checks; `path` is the config section (`protocols.http`, or
    /// empty for a receiver's top level). Warns where the collector's
    /// server would behave differently.
    pub fn validate(&self, path: &str) -> Result<Vec<String>, ComponentError> {
        let key = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        self.response_headers
            .parse()
            .map_err(|e| error(&key("response_headers"), e))?;
        if let Some(auth) = self.auth {
            auth.validate(&key("auth"))?;
        }
        let mut warnings = Vec::new();
        if !self.keep_alives_enabled {
            warnings.push(format!(
                "{} is false: tracegate closes each HTTP/1 connection after its answer but keeps \
                 HTTP/2 connections open; the collector's Go server stops reusing HTTP/2 \
                 connections too",
                key("keep_alives_enabled")
            ));
        }
        Ok(warnings)
    }

    /// The protocol's `auth`, resolved among the started authenticators,
    /// with the counters its refusals go to; `None` without `auth`.
    pub fn auth_gate(
        &self,
        authenticators: &Authenticators,
        counters: &TransportCounters,
        receiver: &str,
        protocol: &'static str,
    ) -> Result<Option<AuthGate>, StartError> {
        let Some(auth) = self.auth else {
            return Ok(None);
        };
        let resolved = ServerAuth::resolve(
            authenticators,
            Some(&auth.authenticator),
            &auth.request_params,
        )
        .map_err(|message| StartError::Auth {
            receiver: receiver.to_string(),
            protocol,
            message,
        })?;
        Ok(resolved.map(|auth| AuthGate {
            auth,
            counters: counters.clone(),
        }))
    }

    /// hyper's HTTP/1 and HTTP/2 server with these keys, and `tls`.
    /// `read_header_timeout` and `keep_alives_enabled` are HTTP/1 settings
    /// (HTTP/2 has neither, in Go's server as in hyper's);
    /// `idle_timeout` closes idle connections of both.
    pub fn connection_settings(&self, tls: Option<Arc<ServerTls>>) -> ConnectionSettings {
        let mut builder = listener::hyper_builder();
        if let Some(timeout) = self.read_header_timeout {
            builder
                .http1()
                .header_read_timeout((!timeout.is_zero()).then_some(timeout));
        }
        builder.http1().keep_alive(self.keep_alives_enabled);
        let mut settings = ConnectionSettings::new(builder, tls);
        settings.max_connection_idle = self.idle_timeout.filter(|d| !d.is_zero());
        // Checked by validate before any receiver starts.
        settings.response_headers = self.response_headers.parse().unwrap_or_default().into();
        settings
    }
}

/// `keep_alives_enabled`'s default, as the collector's.
pub(crate) fn default_true() -> bool {
    true
}

/// Declares an HTTP receiver's config: the fields written in the
/// invocation, each with its default after `=`, then the keys every HTTP
/// receiver takes (`tls`, `max_request_body_size` and the connection keys),
/// declared here once; and the config's `Default`, `server_keys()` and
/// `max_request_body_size()`. The config refuses unknown keys, which
/// rules out `#[serde(flatten)]` of a shared struct, so the macro writes
/// the shared fields into each config instead.
macro_rules! http_server_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )*
            /// Server TLS (`cert_file`, `key_file`, optional
            /// `client_ca_file` for mTLS). Default: plaintext.
            #[serde(default)]
            pub tls: Option<$crate::tls::TlsServerConfig>,
            /// Largest request body accepted, in bytes, both as sent and
            /// after decompression; larger bodies get the receiver's answer
            /// for them (docs/configuration.md). Default 20 MiB (20971520);
            /// 0 means the default.
            #[serde(default)]
            pub max_request_body_size: u64,
            /// Longest time a client may take to send a request's headers
            /// (HTTP/1; HTTP/2 has no such limit). Default: 30 s (the
            /// collector's `otlp` receiver has none); `0` means none.
            #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
            pub read_header_timeout: Option<std::time::Duration>,
            /// Close a connection with no request in flight for this long.
            /// Default: never (as the collector's `otlp` receiver); `0`
            /// means never.
            #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
            pub idle_timeout: Option<std::time::Duration>,
            /// `false` closes each HTTP/1 connection after one request.
            /// Default true.
            #[serde(default = "crate::receiver::server_keys::default_true")]
            pub keep_alives_enabled: bool,
            /// Headers added to every answer that does not set them
            /// itself. Default: none.
            #[serde(default)]
            pub response_headers: $crate::receiver::server_keys::ResponseHeaders,
            /// Require credentials of every request, checked by this
            /// authenticator extension (`authenticator`, optional
            /// `request_params`). Default: none required.
            #[serde(default)]
            pub auth: Option<$crate::auth::HttpAuthConfig>,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)*
                    tls: None,
                    max_request_body_size: 0,
                    read_header_timeout: None,
                    idle_timeout: None,
                    keep_alives_enabled: true,
                    response_headers: Default::default(),
                    auth: None,
                }
            }
        }

        impl $name {
            /// `max_request_body_size` in bytes, the default applied.
            pub fn max_request_body_size(&self) -> usize {
                $crate::receiver::http_ingest::body_size_limit(self.max_request_body_size)
            }

            /// The connection keys, for the listener.
            pub(crate) fn server_keys(&self) -> $crate::receiver::server_keys::HttpServerKeys<'_> {
                $crate::receiver::server_keys::HttpServerKeys {
                    read_header_timeout: self.read_header_timeout,
                    idle_timeout: self.idle_timeout,
                    keep_alives_enabled: self.keep_alives_enabled,
                    response_headers: &self.response_headers,
                    auth: self.auth.as_ref(),
                }
            }
        }
    };
}
pub(crate) use http_server_config;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keep_alives_enabled: bool, headers: &ResponseHeaders) -> HttpServerKeys<'_> {
        HttpServerKeys {
            read_header_timeout: None,
            idle_timeout: None,
            keep_alives_enabled,
            response_headers: headers,
            auth: None,
        }
    }

    /// Every HTTP receiver takes the connection keys declared once in
    /// `http_server_config!`, with the same defaults, and names a typo.
    #[test]
    fn every_http_receiver_takes_the_connection_keys() {
        use crate::receiver::ReceiverConfig;
        let keys = serde_json::json!({
            "read_header_timeout": "5s", "idle_timeout": "1m",
            "keep_alives_enabled": false, "response_headers": {"x-a": "1"},
        });
        let parse = |kind: &str, value: serde_json::Value| {
            ReceiverConfig::from_value(kind, value).expect("a receiver type")
        };
        let otlp = parse("otlp", serde_json::json!({"protocols": {"http": keys}}));
        let zipkin = parse("zipkin", keys.clone());
        let jaeger = parse(
            "jaeger",
            serde_json::json!({"protocols": {"thrift_http": keys}}),
        );
        let seen: Vec<(Option<Duration>, Option<Duration>, bool, ResponseHeaders)> =
            match (otlp.unwrap(), zipkin.unwrap(), jaeger.unwrap()) {
                (ReceiverConfig::Otlp(o), ReceiverConfig::Zipkin(z), ReceiverConfig::Jaeger(j)) => {
                    let o = o.protocols.http.unwrap();
                    let j = j.protocols.thrift_http.unwrap();
                    [o.server_keys(), z.server_keys(), j.server_keys()]
                        .iter()
                        .map(|k| {
                            (
                                k.read_header_timeout,
                                k.idle_timeout,
                                k.keep_alives_enabled,
                                k.response_headers.clone(),
                            )
                        })
                        .collect()
                }
                other => panic!("{other:?}"),
            };
        for keys in &seen {
            assert_eq!(
                keys,
                &(
                    Some(Duration::from_secs(5)),
                    Some(Duration::from_secs(60)),
                    false,
                    ResponseHeaders(vec![("x-a".into(), "1".into())])
                )
            );
        }
        let typo = parse("zipkin", serde_json::json!({"keep_alive_enabled": false})).unwrap_err();
        assert!(
            typo.message
                .contains("did you mean \"keep_alives_enabled\""),
            "{typo}"
        );
        let zipkin: crate::receiver::zipkin::Config =
            crate::config::from_value(serde_json::Value::Null).unwrap();
        assert_eq!(zipkin, crate::receiver::zipkin::Config::default());
        assert!(zipkin.keep_alives_enabled && zipkin.read_header_timeout.is_none());
    }

    /// Turning keep-alives off differs from the collector for HTTP/2
    /// clients: validate names the key where it sits.
    #[test]
    fn keep_alives_off_warns_naming_the_key() {
        let none = ResponseHeaders::default();
        assert!(keys(true, &none)
            .validate("protocols.http")
            .unwrap()
            .is_empty());
        let nested = keys(false, &none).validate("protocols.http").unwrap();
        assert_eq!(nested.len(), 1, "{nested:?}");
        assert!(
            nested[0].starts_with("protocols.http.keep_alives_enabled is false:")
                && nested[0].contains("HTTP/2"),
            "{nested:?}"
        );
        let top = keys(false, &none).validate("").unwrap();
        assert!(
            top[0].starts_with("keep_alives_enabled is false:"),
            "{top:?}"
        );
    }
}
