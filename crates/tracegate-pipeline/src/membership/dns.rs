//! The `dns` resolver: the members are the addresses a name resolves to
//! (IPv4 and IPv6), each with the configured port, asked again every
//! `interval`. A resolution that fails, times out or finds nothing keeps
//! the last member list: a DNS outage must not empty the fleet.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::dns_client::StubResolver;
use super::{members, record_resolution, Members, DEFAULT_PORT};
use crate::config::{error, ComponentError};

/// `resolver: dns:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsResolverConfig {
    /// The name to resolve, typically a headless Service's. Required.
    #[serde(default)]
    pub hostname: String,
    /// The port of every member. A string, as the collector has it, or a
    /// number. Default `4317`.
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u16>,
    /// How often to resolve again. Default `5s` (also for `0`).
    #[serde(
        default = "default_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub interval: Duration,
    /// Time limit of one resolution. Default `1s` (also for `0`).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Tests only: ask these nameservers, without search domains or hosts
    /// file, instead of the system's configuration.
    #[serde(skip)]
    pub(crate) nameservers: Option<Vec<SocketAddr>>,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

/// A port as a number or a string of digits; `""` is no port.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u64),
        Text(String),
    }
    let invalid = |shown: String| {
        serde::de::Error::custom(format!(
            "invalid port {shown}; give a number from 1 to 65535"
        ))
    };
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Text(text)) if text.trim().is_empty() => Ok(None),
        Some(Port::Text(text)) => match text.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(invalid(format!("{text:?}"))),
        },
        Some(Port::Number(n)) => match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(invalid(n.to_string())),
        },
    }
}

impl DnsResolverConfig {
    /// Errors at paths inside the resolver (`hostname`).
    pub fn validate(&self) -> Result<(), ComponentError> {
        let hostname = self.hostname.trim();
        if hostname.is_empty() {
            return Err(error(
                "hostname",
                "no hostname given to resolve the backends from",
            ));
        }
        if hostname.contains(':') && hostname.parse::<IpAddr>().is_err() {
            return Err(error(
                "hostname",
                format!("{hostname:?} is a name, without a port; the port goes in `port`"),
            ));
        }
        Ok(())
    }

    fn interval(&self) -> Duration {
        if self.interval.is_zero() {
            default_interval()
        } else {
            self.interval
        }
    }

    fn timeout(&self) -> Duration {
        if self.timeout.is_zero() {
            default_timeout()
        } else {
            self.timeout
        }
    }

    /// Resolves once (within `timeout`) before returning, so the receiver
    /// starts with the first answer, or empty when that failed; then again
    /// every `interval` until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> watch::Receiver<Members> {
        let client = match &self.nameservers {
            Some(servers) => StubResolver::with_nameservers(servers.clone()),
            None => StubResolver::system(),
        };
        let resolver = Resolver {
            hostname: self.hostname.trim().to_string(),
            port: self.port.unwrap_or(DEFAULT_PORT),
            timeout: self.timeout(),
            client,
        };
        let first = resolver.resolve().await.unwrap_or_else(|| members([]));
        let (tx, rx) = watch::channel(first);
        tracing::debug!(
            hostname = %resolver.hostname, port = resolver.port,
            interval = %crate::duration::format(self.interval()),
            timeout = %crate::duration::format(resolver.timeout),
            "DNS resolver started"
        );
        let interval = self.interval();
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let resolved = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    resolved = resolver.resolve() => resolved,
                };
                if let Some(list) = resolved {
                    tx.send_if_modified(|current| {
                        let changed = *current != list;
                        if changed {
                            tracing::info!(
                                hostname = %resolver.hostname, members = ?&list[..],
                                "the DNS resolver found a new member list"
                            );
                            *current = list;
                        }
                        changed
                    });
                }
            }
        });
        rx
    }
}

struct Resolver {
    hostname: String,
    port: u16,
    timeout: Duration,
    client: StubResolver,
}

impl Resolver {
    /// One resolution, counted and, when it fails, logged: `None` then.
    async fn resolve(&self) -> Option<Members> {
        let outcome =
            match tokio::time::timeout(self.timeout, self.client.lookup_ip(&self.hostname)).await {
                Ok(Ok(addresses)) => Ok(addresses),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "{}: no answer within {}",
                    self.hostname,
                    crate::duration::format(self.timeout)
                )),
            };
        record_resolution("dns", outcome.is_ok());
        match outcome {
            Ok(addresses) => Some(members(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.port).to_string()),
            )),
            Err(e) => {
                tracing::warn!(
                    hostname = %self.hostname, error = %e,
                    "failed to resolve the backends; keeping the last member list"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use crate::exporter::test_support::{eventually, TestRecorder};
    use crate::membership::test_dns::TestDns;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn settings_as_the_collector_takes_them() {
        let c: DnsResolverConfig =
            from_value(serde_json::json!({"hostname": "gw.observability"})).unwrap();
        assert_eq!(
            (c.port, c.interval, c.timeout),
            (None, Duration::from_secs(5), Duration::from_secs(1))
        );
        c.validate().unwrap();
        for (port, want) in [
            (serde_json::json!("4318"), Some(4318)),
            (serde_json::json!(4319), Some(4319)),
            (serde_json::json!(""), None),
        ] {
            let c: DnsResolverConfig =
                from_value(serde_json::json!({"hostname": "gw", "port": port})).unwrap();
            assert_eq!(c.port, want);
        }
        for port in [
            serde_json::json!("x"),
            serde_json::json!(0),
            serde_json::json!(70000),
        ] {
            let err = from_value::<DnsResolverConfig>(
                serde_json::json!({"hostname": "gw", "port": port}),
            )
            .unwrap_err();
            assert_eq!(err.path, "port", "{err}");
        }
        let c: DnsResolverConfig =
            from_value(serde_json::json!({"hostname": "gw", "interval": "0s", "timeout": "0"}))
                .unwrap();
        assert_eq!(
            (c.interval(), c.timeout()),
            (Duration::from_secs(5), Duration::from_secs(1))
        );
        for hostname in ["", "gw:4317"] {
            let c: DnsResolverConfig =
                from_value(serde_json::json!({"hostname": hostname})).unwrap();
            assert_eq!(c.validate().unwrap_err().path, "hostname");
        }
        assert!(from_value::<DnsResolverConfig>(
            serde_json::json!({"hostname": "gw", "nameservers": ["1.1.1.1"]})
        )
        .is_err());
    }

    fn config(dns: &TestDns, interval_ms: u64) -> DnsResolverConfig {
        DnsResolverConfig {
            nameservers: Some(vec![dns.addr]),
            ..from_value(serde_json::json!({
                "hostname": "gateways.test",
                "port": "4317",
                "interval": format!("{interval_ms}ms"),
                "timeout": "500ms",
            }))
            .unwrap()
        }
    }

    /// The member list follows the name's A and AAAA records as they change,
    /// and a failing or silent server keeps the last list.
    #[tokio::test]
    async fn follows_a_changing_address_set() {
        let recorder = std::sync::Arc::new(TestRecorder::default());
        let _guard = metrics::set_default_local_recorder(recorder.as_ref());
        let dns = TestDns::start().await;
        dns.set("gateways.test", &ips(&["10.0.0.2", "fd00::1"]));
        let stop = CancellationToken::new();
        let mut rx = config(&dns, 50).start(stop.clone()).await;
        assert_eq!(
            &rx.borrow_and_update()[..],
            ["10.0.0.2:4317", "[fd00::1]:4317"].map(String::from),
            "the first answer is there when start returns"
        );

        let next = |rx: &mut watch::Receiver<Members>| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), rx.changed())
                    .await
                    .expect("a change within 5 s")
                    .unwrap();
                rx.borrow_and_update().to_vec()
            }
        };
        dns.set(
            "gateways.test",
            &ips(&["10.0.0.2", "10.0.0.1", "fd00::1", "fd00::2"]),
        );
        assert_eq!(
            next(&mut rx).await,
            [
                "10.0.0.1:4317",
                "10.0.0.2:4317",
                "[fd00::1]:4317",
                "[fd00::2]:4317"
            ]
        );
        rx.borrow_and_update();
        dns.set("gateways.test", &ips(&["10.0.0.1", "fd00::2"]));
        assert_eq!(next(&mut rx).await, ["10.0.0.1:4317", "[fd00::2]:4317"]);
        rx.borrow_and_update();

        // Failures keep the list: SERVFAIL, silence, then the name gone.
        let failed = || {
            recorder.counter(
                "loadbalancer_num_resolutions",
                &[("resolver", "dns"), ("success", "false")],
            )
        };
        for outage in 0..3 {
            let before = failed();
            match outage {
                0 => dns.fail(true),
                1 => dns.silent(true),
                _ => dns.set("gateways.test", &[]),
            }
            eventually("two failed resolutions", || failed() >= before + 2).await;
            assert!(
                !rx.has_changed().unwrap(),
                "outage {outage} changed the list"
            );
            assert_eq!(
                &rx.borrow()[..],
                ["10.0.0.1:4317", "[fd00::2]:4317"].map(String::from)
            );
            dns.fail(false);
            dns.silent(false);
        }
        dns.set("gateways.test", &ips(&["10.0.0.3"]));
        assert_eq!(next(&mut rx).await, ["10.0.0.3:4317"]);
        assert!(
            recorder.counter(
                "loadbalancer_num_resolutions",
                &[("resolver", "dns"), ("success", "true")]
            ) >= 4
        );

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while rx.changed().await.is_ok() {}
        })
        .await
        .expect("the resolver stops at shutdown and drops its sender");
    }

    #[tokio::test]
    async fn a_first_resolution_that_fails_starts_empty_and_fills_later() {
        let dns = TestDns::start().await;
        let stop = CancellationToken::new();
        let mut rx = config(&dns, 50).start(stop.clone()).await;
        assert!(rx.borrow_and_update().is_empty());
        dns.set("gateways.test", &ips(&["10.0.0.9"]));
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&rx.borrow()[..], ["10.0.0.9:4317".to_string()]);
        stop.cancel();
    }
}
