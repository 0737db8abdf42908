//! How the gateways of a fleet serve one set of probabilities
//! (`adaptive.fleet`; docs/architecture.md, "Jaeger remote sampling").
//!
//! The resolver lists the gateways' remote sampling HTTP endpoints. The
//! first member of the sorted list is the leader: it calculates, from its
//! own tallies multiplied by the number of members (the agents route
//! traces by trace id, so each gateway sees an even share of every
//! operation's roots), and publishes the result at
//! [`PROBABILITIES_PATH`]. Every other member fetches that each
//! `calculation_interval` and serves it as it is. A follower that cannot
//! reach the leader calculates from its own share the same way until it
//! can again, so the probabilities keep adapting, close to the leader's.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::sync::watch;

use super::adaptive::Probabilities;
use crate::http_client;
use crate::membership::{same_member, with_default_port, Members};
use crate::receiver::split_host_port;

/// Where a gateway publishes the probabilities it serves, on its remote
/// sampling HTTP endpoint.
pub const PROBABILITIES_PATH: &str = "/tracegate/probabilities";

/// The largest answer taken from a leader.
const MAX_ANSWER: usize = 16 << 20;

/// What this gateway does in the next calculation.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Calculate, rates multiplied by `scale` (the members, at least 1).
    Leader { scale: f64 },
    /// Fetch from `leader`; if that fails, calculate as a leader would.
    Follower { leader: String, scale: f64 },
}

/// The members as the resolver finds them, and which one this gateway is.
pub struct Fleet {
    pub members: watch::Receiver<Members>,
    pub me: String,
    pub timeout: Duration,
}

impl Fleet {
    pub fn new(members: watch::Receiver<Members>, advertised: &str, timeout: Duration) -> Fleet {
        Fleet {
            members,
            me: with_default_port(advertised),
            timeout,
        }
    }

    /// This gateway's role with the members known now.
    pub fn role(&self) -> Role {
        role(&self.members.borrow(), &self.me)
    }
}

/// The role of `me` among `members` (sorted): the first is the leader; no
/// members, every gateway on its own.
pub fn role(members: &[String], me: &str) -> Role {
    let Some(leader) = members.first() else {
        return Role::Leader { scale: 1.0 };
    };
    let scale = members.len() as f64;
    if same_member(leader, me) {
        Role::Leader { scale }
    } else {
        Role::Follower {
            leader: leader.clone(),
            scale,
        }
    }
}

/// The published form: `{"probabilities": {service: {operation: p}}}`.
pub fn to_json(table: &Probabilities) -> String {
    serde_json::json!({ "probabilities": table }).to_string()
}

/// Reads what a leader published; every probability must be in [0, 1].
pub fn from_json(body: &[u8]) -> Result<Probabilities, String> {
    #[derive(serde::Deserialize)]
    struct Published {
        probabilities: BTreeMap<String, BTreeMap<String, f64>>,
    }
    let published: Published =
        serde_json::from_slice(body).map_err(|e| format!("not the probabilities: {e}"))?;
    for (service, ops) in &published.probabilities {
        for (operation, p) in ops {
            if !(0.0..=1.0).contains(p) {
                return Err(format!("{service}/{operation}: {p} is not a probability"));
            }
        }
    }
    Ok(published.probabilities)
}

/// The probabilities `leader` publishes, within `timeout`.
pub async fn fetch(leader: &str, timeout: Duration) -> Result<Probabilities, String> {
    let url = format!("http://{leader}{PROBABILITIES_PATH}");
    let (host, port) = split_host_port(leader).map_err(|e| format!("{url}: {e}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let read = async {
        let response =
            http_client::open(host, port, None, Method::GET, PROBABILITIES_PATH, &[]).await?;
        if response.status != StatusCode::OK {
            return Err(format!("{url}: HTTP {}", response.status));
        }
        let body = response
            .collect(MAX_ANSWER)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        from_json(&body).map_err(|e| format!("{url}: {e}"))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_member_leads_and_the_members_scale() {
        let members = vec!["10.0.0.1:5778".to_string(), "10.0.0.2:5778".to_string()];
        assert_eq!(role(&members, "10.0.0.1:5778"), Role::Leader { scale: 2.0 });
        assert_eq!(
            role(&members, "10.0.0.2:5778"),
            Role::Follower {
                leader: "10.0.0.1:5778".into(),
                scale: 2.0
            }
        );
        // Not (yet) listed: follows the leader all the same.
        assert!(matches!(
            role(&members, "10.0.0.9:5778"),
            Role::Follower { .. }
        ));
        assert_eq!(role(&[], "10.0.0.1:5778"), Role::Leader { scale: 1.0 });
    }

    #[test]
    fn the_published_form_reads_back_and_bad_values_are_refused() {
        let table = Probabilities::from([(
            "svc".to_string(),
            BTreeMap::from([("op".to_string(), 0.125)]),
        )]);
        assert_eq!(from_json(to_json(&table).as_bytes()).unwrap(), table);
        assert!(from_json(br#"{"probabilities":{"s":{"o":1.5}}}"#)
            .unwrap_err()
            .contains("not a probability"));
        assert!(from_json(b"<html>").is_err());
    }
}
