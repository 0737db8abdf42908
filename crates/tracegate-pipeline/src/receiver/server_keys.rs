//! The collector's `confighttp` server keys that shape connections rather
//! than requests, as every HTTP receiver takes them: `read_header_timeout`,
//! `idle_timeout`, `keep_alives_enabled` and `response_headers`. Each
//! receiver's config has the fields (serde cannot flatten them into a
//! config that refuses unknown keys); this module reads the one that is
//! not a plain value and turns them all into [`ConnectionSettings`].

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

use super::listener::{self, ConnectionSettings};
use crate::config::{error, ComponentError};

/// `response_headers`: added to every answer of the receiver, unless the
/// answer sets the header itself (the collector sets them before its
/// handler runs, so the handler's own value wins). Written as a mapping
/// (`X-Name: value`) or, as the collector also takes it, a list of
/// `{name, value}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHeaders(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for ResponseHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Headers;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Pair {
            name: String,
            value: String,
        }

        impl<'de> Visitor<'de> for Headers {
            type Value = ResponseHeaders;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header names to values, or a list of {name, value}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    pairs.push((name, value));
                }
                Ok(ResponseHeaders(pairs))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(Pair { name, value }) = seq.next_element()? {
                    pairs.push((name, value));
                }
                Ok(ResponseHeaders(pairs))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ResponseHeaders::default())
            }
        }

        d.deserialize_any(Headers)
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

    /// hyper's HTTP/1 and HTTP/2 server with these keys, and `tls`.
    /// `read_header_timeout` and `keep_alives_enabled` are HTTP/1 settings
    /// (HTTP/2 has neither, in Go's server as in hyper's);
    /// `idle_timeout` closes idle connections of both.
    pub fn connection_settings(&self, tls: Option<TlsAcceptor>) -> ConnectionSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(keep_alives_enabled: bool, headers: &ResponseHeaders) -> HttpServerKeys<'_> {
        HttpServerKeys {
            read_header_timeout: None,
            idle_timeout: None,
            keep_alives_enabled,
            response_headers: headers,
        }
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
