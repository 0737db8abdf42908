//! CORS for the OTLP/HTTP receiver, answering as the collector's
//! `confighttp` does through `rs/cors`: credentials allowed, methods GET,
//! POST and HEAD, preflights answered 204 (with the allow headers only
//! when origin, method and headers pass).

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;

use super::config::CorsConfig;

/// Request headers CORS-safelisted by the Fetch spec, always allowed.
const ALWAYS_ALLOWED_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "content-language",
    "origin",
];

const ALLOWED_METHODS: &[Method] = &[Method::GET, Method::POST, Method::HEAD];

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub(crate) struct CorsPolicy {
    any_origin: bool,
    /// Lowercased exact origins.
    origins: Vec<String>,
    /// Lowercased `prefix*suffix` origins.
    wildcard_origins: Vec<(String, String)>,
    any_header: bool,
    /// Lowercased header names allowed besides the safelisted ones.
    headers: Vec<String>,
    max_age: i64,
}

impl CorsPolicy {
    /// `None` when the config allows no origin (CORS off, as the collector).
    pub fn new(config: &CorsConfig) -> Option<CorsPolicy> {
        if config.allowed_origins.is_empty() {
            return None;
        }
        let mut policy = CorsPolicy {
            any_origin: false,
            origins: Vec::new(),
            wildcard_origins: Vec::new(),
            any_header: false,
            headers: Vec::new(),
            max_age: config.max_age,
        };
        for origin in &config.allowed_origins {
            let origin = origin.to_ascii_lowercase();
            if origin == "*" {
                policy.any_origin = true;
            } else if let Some((prefix, suffix)) = origin.split_once('*') {
                policy
                    .wildcard_origins
                    .push((prefix.to_string(), suffix.to_string()));
            } else {
                policy.origins.push(origin);
            }
        }
        if config.allowed_headers.is_empty() {
            policy.headers.push("x-requested-with".into());
        }
        for h in &config.allowed_headers {
            if h == "*" {
                policy.any_header = true;
            }
            policy.headers.push(h.to_ascii_lowercase());
        }
        Some(policy)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.origins.contains(&origin)
            || self.wildcard_origins.iter().any(|(prefix, suffix)| {
                origin.len() >= prefix.len() + suffix.len()
                    && origin.starts_with(prefix.as_str())
                    && origin.ends_with(suffix.as_str())
            })
    }

    fn headers_allowed(&self, requested: &str) -> bool {
        self.any_header
            || requested
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .all(|h| ALWAYS_ALLOWED_HEADERS.contains(&h.as_str()) || self.headers.contains(&h))
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Whether `request` is a preflight this policy answers.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The headers of the 204 answer to a preflight.
    pub fn preflight(&self, request: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let Some(origin) = request.get(header::ORIGIN) else {
            return out;
        };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return out;
        }
        let Some(method) = request
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| m.to_str().ok())
            .and_then(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok())
        else {
            return out;
        };
        if !ALLOWED_METHODS.contains(&method) {
            return out;
        }
        let requested_headers = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(requested) = requested_headers {
            if !requested.to_str().is_ok_and(|r| self.headers_allowed(r)) {
                return out;
            }
        }
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if let Ok(value) = HeaderValue::from_str(method.as_str()) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
        }
        if let Some(requested) = requested_headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        out.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if self.max_age != 0 {
            out.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(self.max_age.max(0)),
            );
        }
        out
    }

    /// Adds the CORS headers to the answer of an actual (non-preflight)
    /// request.
    pub fn decorate(
        &self,
        method: &Method,
        origin: Option<&HeaderValue>,
        response: &mut HeaderMap,
    ) {
        if method == Method::OPTIONS {
            return;
        }
        response.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else { return };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o))
            || !ALLOWED_METHODS.contains(method)
        {
            return;
        }
        response.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        response.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], headers: &[&str], max_age: i64) -> CorsPolicy {
        CorsPolicy::new(&CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            max_age,
        })
        .unwrap()
    }

    fn preflight_request(origin: &str, headers: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            "POST".parse().unwrap(),
        );
        if let Some(headers) = headers {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                headers.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn no_origins_means_no_cors() {
        assert!(CorsPolicy::new(&CorsConfig::default()).is_none());
        assert!(CorsPolicy::new(&CorsConfig {
            allowed_headers: vec!["X-A".into()],
            ..Default::default()
        })
        .is_none());
    }

    #[test]
    fn wildcard_origins_match_as_rs_cors() {
        let p = policy(&["allowed-*.com", "https://exact.org"], &[], 0);
        let out = p.preflight(&preflight_request("allowed-origin.com", None));
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "allowed-origin.com"
        );
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(out.get(header::ACCESS_CONTROL_MAX_AGE).is_none());
        assert!(p
            .preflight(&preflight_request("https://EXACT.org", None))
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        for denied in [
            "disallowed-origin.com",
            "allowed-.co",
            "https://exact.org.evil",
        ] {
            let out = p.preflight(&preflight_request(denied, None));
            assert!(
                out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{denied}"
            );
            assert!(out.contains_key(header::VARY));
        }
    }

    #[test]
    fn headers_must_be_allowed() {
        let p = policy(&["allowed-*.com"], &[], 360);
        assert!(p
            .preflight(&preflight_request(
                "allowed-origin.com",
                Some("extraheader")
            ))
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
        let ok = p.preflight(&preflight_request(
            "allowed-origin.com",
            Some("content-type, x-requested-with"),
        ));
        assert_eq!(
            ok[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-requested-with"
        );
        assert_eq!(ok[header::ACCESS_CONTROL_MAX_AGE], "360");

        let p = policy(&["allowed-*.com"], &["ExtraHeader"], 0);
        assert!(p
            .preflight(&preflight_request(
                "allowed-origin.com",
                Some("extraheader")
            ))
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        // Naming headers drops the implicit X-Requested-With, as rs/cors.
        assert!(!p
            .preflight(&preflight_request(
                "allowed-origin.com",
                Some("x-requested-with")
            ))
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn any_origin_answers_star_and_actual_requests_are_decorated() {
        let p = policy(&["*"], &["*"], 0);
        let out = p.preflight(&preflight_request("http://localhost", Some("x-anything")));
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

        let p = policy(&["https://app.example"], &[], 0);
        let mut response = HeaderMap::new();
        let origin = HeaderValue::from_static("https://app.example");
        p.decorate(&Method::POST, Some(&origin), &mut response);
        assert_eq!(
            response[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(response[header::VARY], "Origin");

        let mut response = HeaderMap::new();
        p.decorate(
            &Method::POST,
            Some(&HeaderValue::from_static("https://other.example")),
            &mut response,
        );
        assert!(response.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(response[header::VARY], "Origin");
    }

    #[test]
    fn disallowed_methods_get_no_allow_headers() {
        let p = policy(&["*"], &[], 0);
        let mut request = preflight_request("http://x", None);
        request.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            "DELETE".parse().unwrap(),
        );
        assert!(p
            .preflight(&request)
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
    }
}
