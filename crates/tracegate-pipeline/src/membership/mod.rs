//! Membership: which backends ("members") traces can be routed to, as a
//! resolver finds them, and the consistent hash that gives every routing
//! key one owner among them ([`hash`]).
//!
//! Every resolver has the same shape: started with a stop signal (the
//! build context's `shutdown`), it yields a
//! `watch::Receiver<Members>` whose value is the current member list,
//! `host:port` strings sorted and without duplicates, replaced whole when
//! the membership changes. The `loadbalancing` exporter follows it; so can
//! anything else that must agree with the agents on who owns a trace.
//!
//! - `static` (`static_hosts.rs`): a fixed list;
//! - `dns` (`dns.rs`, with its own small DNS client in `dns_client.rs`): the
//!   addresses a name resolves to, asked again every `interval`;
//! - `k8s` (`k8s.rs`): the ready endpoints of a Kubernetes Service, by
//!   list and watch of its EndpointSlices.

pub mod dns;
mod dns_client;
pub mod hash;
pub mod k8s;
mod static_hosts;
#[cfg(test)]
pub(crate) mod test_dns;

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{error, ComponentError};
use crate::telemetry::names;

pub use dns::DnsResolverConfig;
pub use k8s::K8sResolverConfig;
pub use static_hosts::StaticResolverConfig;

/// The current members: `host:port`, sorted, no duplicates.
pub type Members = Arc<[String]>;

/// The port of a member given without one, as the collector's
/// `loadbalancing` exporter adds it (OTLP/gRPC's).
pub const DEFAULT_PORT: u16 = 4317;

/// `resolver:` — where the members come from. Exactly one of `static`,
/// `dns` and `k8s` (the collector's keys); its `aws_cloud_map` is refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ResolverKeys")]
pub enum ResolverConfig {
    Static(StaticResolverConfig),
    Dns(DnsResolverConfig),
    K8s(K8sResolverConfig),
}

/// `resolver:` as written, before exactly one resolver is picked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolverKeys {
    #[serde(default, rename = "static")]
    static_hosts: Option<StaticResolverConfig>,
    #[serde(default)]
    dns: Option<DnsResolverConfig>,
    #[serde(default)]
    k8s: Option<K8sResolverConfig>,
    #[serde(default, deserialize_with = "present")]
    aws_cloud_map: bool,
}

/// True whatever the key holds, even nothing: the key was written.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

impl TryFrom<ResolverKeys> for ResolverConfig {
    type Error = String;

    fn try_from(keys: ResolverKeys) -> Result<ResolverConfig, String> {
        if keys.aws_cloud_map {
            return Err("the aws_cloud_map resolver is not supported by tracegate; \
                        use static, dns or k8s"
                .into());
        }
        let mut given = Vec::new();
        if let Some(c) = keys.static_hosts {
            given.push(ResolverConfig::Static(c));
        }
        if let Some(c) = keys.dns {
            given.push(ResolverConfig::Dns(c));
        }
        if let Some(c) = keys.k8s {
            given.push(ResolverConfig::K8s(c));
        }
        match given.len() {
            0 => Err("no resolver given; set one of static, dns or k8s".into()),
            1 => Ok(given.pop().expect("one")),
            _ => Err(format!(
                "only one resolver may be given, found {}",
                given
                    .iter()
                    .map(ResolverConfig::name)
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
        }
    }
}

impl ResolverConfig {
    /// `static`, `dns` or `k8s`: the `resolver` label of the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ResolverConfig::Static(_) => "static",
            ResolverConfig::Dns(_) => "dns",
            ResolverConfig::K8s(_) => "k8s",
        }
    }

    /// Pure checks of the settings, errors at `resolver.<name>.<key>`.
    pub fn validate(&self) -> Result<(), ComponentError> {
        let in_resolver =
            |e: ComponentError| error(&format!("resolver.{}.{}", self.name(), e.path), e.message);
        match self {
            ResolverConfig::Static(c) => c.validate().map_err(in_resolver),
            ResolverConfig::Dns(c) => c.validate().map_err(in_resolver),
            // Its messages start with the key: `service: required: ...`.
            ResolverConfig::K8s(c) => c.validate().map_err(|message| {
                let (key, message) = message.split_once(": ").unwrap_or(("", &message));
                in_resolver(error(key, message))
            }),
        }
    }

    /// Starts the resolver: the receiver holds the first member list (empty
    /// when the first resolution failed; later ones may fill it) and every
    /// list after it, until `shutdown` is cancelled. `Err` when the
    /// resolver cannot run at all.
    pub async fn start(
        &self,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Members>, String> {
        match self {
            ResolverConfig::Static(c) => Ok(c.start(shutdown)),
            ResolverConfig::Dns(c) => Ok(c.start(shutdown).await),
            ResolverConfig::K8s(c) => {
                let started = k8s::start(c, shutdown).await;
                record_resolution("k8s", started.is_ok());
                let members = started?;
                // Every list the API's watch brings is a resolution.
                let mut changes = members.clone();
                tokio::spawn(async move {
                    while changes.changed().await.is_ok() {
                        record_resolution("k8s", true);
                    }
                });
                Ok(members)
            }
        }
    }
}

/// `endpoint` with [`DEFAULT_PORT`] when it names none, as the collector
/// adds it: `backend-1` and `10.0.0.1` get `:4317`, `[::1]` and a bare
/// IPv6 address `[...]:4317`; anything with a port is kept as it is.
pub fn with_default_port(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if let Ok(v6) = endpoint.parse::<std::net::Ipv6Addr>() {
        return format!("[{v6}]:{DEFAULT_PORT}");
    }
    if endpoint.starts_with('[') && endpoint.ends_with(']') {
        return format!("{endpoint}:{DEFAULT_PORT}");
    }
    if endpoint.contains(':') {
        return endpoint.to_string();
    }
    format!("{endpoint}:{DEFAULT_PORT}")
}

/// Whether two member names are the same member: the same text, or the
/// same socket address written differently.
pub fn same_member(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    match (
        a.parse::<std::net::SocketAddr>(),
        b.parse::<std::net::SocketAddr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `endpoints` sorted, without duplicates: the shape every resolver yields.
pub fn members(endpoints: impl IntoIterator<Item = String>) -> Members {
    let mut endpoints: Vec<String> = endpoints.into_iter().collect();
    endpoints.sort();
    endpoints.dedup();
    endpoints.into()
}

/// Counts one resolution of `resolver` (`static`, `dns`, `k8s`) in
/// `loadbalancer_num_resolutions`, by outcome, as the collector does.
pub fn record_resolution(resolver: &'static str, success: bool) {
    metrics::counter!(
        names::LOADBALANCER_NUM_RESOLUTIONS,
        "resolver" => resolver,
        "success" => if success { "true" } else { "false" }
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;

    #[test]
    fn exactly_one_resolver() {
        let c: ResolverConfig =
            from_value(serde_json::json!({"static": {"hostnames": ["a:1"]}})).unwrap();
        assert_eq!(c.name(), "static");
        let c: ResolverConfig =
            from_value(serde_json::json!({"dns": {"hostname": "gw.local"}})).unwrap();
        assert_eq!(c.name(), "dns");
        let c: ResolverConfig =
            from_value(serde_json::json!({"k8s": {"service": "gw.observability"}})).unwrap();
        assert_eq!(c.name(), "k8s");

        let none = from_value::<ResolverConfig>(serde_json::json!({})).unwrap_err();
        assert!(none.message.contains("no resolver given"), "{none}");
        let two = from_value::<ResolverConfig>(serde_json::json!({
            "static": {"hostnames": ["a:1"]}, "dns": {"hostname": "gw"}
        }))
        .unwrap_err();
        assert!(two.message.contains("static and dns"), "{two}");
        for aws in [
            serde_json::json!({"aws_cloud_map": {"namespace": "n", "service_name": "s"}}),
            serde_json::json!({"aws_cloud_map": null}),
        ] {
            let err = from_value::<ResolverConfig>(aws).unwrap_err();
            assert!(err.message.contains("aws_cloud_map"), "{err}");
            assert!(err.message.contains("not supported"), "{err}");
        }
        let unknown = from_value::<ResolverConfig>(serde_json::json!({"dnss": {"hostname": "gw"}}))
            .unwrap_err();
        assert!(unknown.message.contains("dnss"), "{unknown}");
    }

    #[test]
    fn validation_errors_name_the_resolver_key() {
        let c: ResolverConfig =
            from_value(serde_json::json!({"static": {"hostnames": []}})).unwrap();
        assert_eq!(c.validate().unwrap_err().path, "resolver.static.hostnames");
        let c: ResolverConfig = from_value(serde_json::json!({"dns": {"hostname": ""}})).unwrap();
        assert_eq!(c.validate().unwrap_err().path, "resolver.dns.hostname");
        for (k8s, path) in [
            (serde_json::json!({"service": ""}), "resolver.k8s.service"),
            (
                serde_json::json!({"service": "gw.ns", "ports": [4317, 4317]}),
                "resolver.k8s.ports",
            ),
        ] {
            let c: ResolverConfig = from_value(serde_json::json!({ "k8s": k8s })).unwrap();
            let err = c.validate().unwrap_err();
            assert_eq!(err.path, path, "{err}");
            assert!(!err.message.starts_with(':'), "{err}");
        }
        let c: ResolverConfig =
            from_value(serde_json::json!({"k8s": {"service": "gw.observability"}})).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn default_port_as_the_collector_adds_it() {
        for (given, want) in [
            ("backend-1", "backend-1:4317"),
            ("10.0.0.1", "10.0.0.1:4317"),
            ("10.0.0.1:55690", "10.0.0.1:55690"),
            ("backend-1:4317", "backend-1:4317"),
            ("::1", "[::1]:4317"),
            ("[::1]", "[::1]:4317"),
            ("[fd00::2]:4319", "[fd00::2]:4319"),
            (" gw:1 ", "gw:1"),
        ] {
            assert_eq!(with_default_port(given), want, "{given}");
        }
    }

    #[test]
    fn members_are_sorted_and_unique() {
        let m = members(["b:1", "a:1", "b:1"].map(String::from));
        assert_eq!(&m[..], ["a:1".to_string(), "b:1".to_string()]);
    }
}
