//! The `static` resolver: a fixed list of members.

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{members, record_resolution, with_default_port, Members};
use crate::config::{error, ComponentError};

/// `resolver: static:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResolverConfig {
    /// The members, `host:port` (`:4317` when no port is given). Required.
    #[serde(default)]
    pub hostnames: Vec<String>,
}

impl StaticResolverConfig {
    /// Errors at paths inside the resolver (`hostnames`).
    pub fn validate(&self) -> Result<(), ComponentError> {
        if self.hostnames.is_empty() {
            return Err(error(
                "hostnames",
                "no endpoints given for the static resolver",
            ));
        }
        for (i, hostname) in self.hostnames.iter().enumerate() {
            let endpoint = with_default_port(hostname);
            let valid = endpoint
                .parse::<http::uri::Authority>()
                .is_ok_and(|a| a.port_u16().is_some_and(|p| p > 0) && !a.host().is_empty())
                && !endpoint.contains('@');
            if !valid {
                return Err(error(
                    &format!("hostnames[{i}]"),
                    format!("{hostname:?} is not a host or host:port"),
                ));
            }
        }
        Ok(())
    }

    /// The list, sorted and with default ports, in a channel that never
    /// changes; the sender lives until `shutdown`, so followers wait for
    /// changes like any other resolver's.
    pub fn start(&self, shutdown: CancellationToken) -> watch::Receiver<Members> {
        let list = members(self.hostnames.iter().map(|h| with_default_port(h)));
        let (tx, rx) = watch::channel(list);
        record_resolution("static", true);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            drop(tx);
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;

    #[tokio::test]
    async fn yields_the_list_sorted_with_ports() {
        let c: StaticResolverConfig = from_value(serde_json::json!({
            "hostnames": ["gw-2:4317", "gw-1", "gw-2:4317", "[::1]:4319"]
        }))
        .unwrap();
        c.validate().unwrap();
        let stop = CancellationToken::new();
        let mut rx = c.start(stop.clone());
        assert_eq!(
            &rx.borrow_and_update()[..],
            ["[::1]:4319", "gw-1:4317", "gw-2:4317"].map(String::from)
        );
        stop.cancel();
        assert!(rx.changed().await.is_err(), "no change; closed at shutdown");
    }

    #[test]
    fn refuses_an_empty_list_and_bad_entries() {
        for (hostnames, path) in [
            (serde_json::json!([]), "hostnames"),
            (serde_json::json!(["gw-1:4317", "gw 2"]), "hostnames[1]"),
            (serde_json::json!(["gw-1:0"]), "hostnames[0]"),
            (serde_json::json!(["user@gw:4317"]), "hostnames[0]"),
            (serde_json::json!([":4317"]), "hostnames[0]"),
        ] {
            let c: StaticResolverConfig =
                from_value(serde_json::json!({ "hostnames": hostnames })).unwrap();
            assert_eq!(c.validate().unwrap_err().path, path, "{hostnames}");
        }
        assert!(from_value::<StaticResolverConfig>(serde_json::json!({"hosts": ["a"]})).is_err());
    }
}
