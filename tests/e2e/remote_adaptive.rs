//! The remote sampling extension's `adaptive` source through the real
//! binary: simulated SDKs poll `/sampling` over HTTP, sample their offered
//! root spans at the probability served, and send what they sampled to
//! the gateway's OTLP receiver; the served probabilities move toward
//! `target_samples_per_second` as the offered traffic changes, per
//! operation, and two gateways of a fleet serve one set of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::time::Instant;

use crate::support::gateway::{Gateway, OTLP_GRPC_RECEIVER, TELEMETRY};
use crate::support::raw::{self, TRACE_EXPORT};
use crate::support::traces::request;

const SERVICE: &str = "shop";
/// Sampled root spans per second wanted per operation.
const TARGET: f64 = 200.0;
const TOLERANCE: f64 = 0.3;

/// A gateway whose `remote_sampling` extension computes adaptively, every
/// 250 ms, with `fleet` (its settings under `adaptive:`, indented by six
/// spaces) if given, and its HTTP endpoint on `http`.
fn gateway(http: &str, fleet: &str) -> Gateway {
    Gateway::start(&format!(
        "{OTLP_GRPC_RECEIVER}exporters:\n  debug:\nextensions:\n  remote_sampling:\n    adaptive:\n      target_samples_per_second: {TARGET}\n      calculation_interval: 250ms\n      initial_sampling_probability: 0.05\n      delta_tolerance: {TOLERANCE}\n{fleet}    http:\n      endpoint: {http}\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n  extensions: [remote_sampling]\n{TELEMETRY}"
    ))
}

/// The probability served for `operation` in a `/sampling` answer: its
/// own, or the service's default.
fn probability_of(answer: &serde_json::Value, operation: &str) -> f64 {
    let ops = &answer["operationSampling"];
    ops["perOperationStrategies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["operation"] == operation)
        .map(|o| &o["probabilisticSampling"]["samplingRate"])
        .unwrap_or(&ops["defaultSamplingProbability"])
        .as_f64()
        .unwrap_or_else(|| panic!("no probability in {answer}"))
}

async fn strategy(sampling: SocketAddr) -> (String, serde_json::Value) {
    let reply = raw::http(
        sampling,
        Method::GET,
        &format!("/sampling?service={SERVICE}"),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    (body, json)
}

/// Whether `offered` root spans a second sampled at `p` are within the
/// tolerance of the target.
fn on_target(offered: f64, p: f64) -> bool {
    (offered * p - TARGET).abs() / TARGET < TOLERANCE
}

/// SDKs of [`SERVICE`]: every operation's roots offered at a rate, each
/// sampled at the probability the sampling server last served.
struct Sdks {
    /// Where the strategy is polled.
    sampling: SocketAddr,
    /// Where sampled spans go: by trace id, as agents route them.
    gateways: Vec<SocketAddr>,
    /// Sampled roots owed per operation (the fractions carried over).
    owed: HashMap<&'static str, f64>,
    next_trace: u64,
}

impl Sdks {
    fn new(sampling: SocketAddr, gateways: Vec<SocketAddr>) -> Sdks {
        Sdks {
            sampling,
            gateways,
            owed: HashMap::new(),
            next_trace: 1,
        }
    }

    /// Offers `offered` (operation, roots per second) until `done` holds
    /// for the probabilities served (by operation), within `within`.
    /// Returns them.
    async fn offer(
        &mut self,
        offered: &[(&'static str, f64)],
        within: Duration,
        done: impl Fn(&HashMap<&'static str, f64>) -> bool,
    ) -> HashMap<&'static str, f64> {
        let deadline = Instant::now() + within;
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        let mut last = Instant::now();
        loop {
            ticks.tick().await;
            let (_, answer) = strategy(self.sampling).await;
            let served: HashMap<&'static str, f64> = offered
                .iter()
                .map(|(op, _)| (*op, probability_of(&answer, op)))
                .collect();
            if done(&served) {
                return served;
            }
            assert!(
                Instant::now() < deadline,
                "the served probabilities never settled for {offered:?}: {served:?}"
            );
            let now = Instant::now();
            let seconds = (now - last).as_secs_f64();
            last = now;
            let mut per_gateway: Vec<Vec<Span>> = vec![Vec::new(); self.gateways.len()];
            for (op, rate) in offered {
                let owed = self.owed.entry(op).or_default();
                *owed += rate * seconds * served[op];
                while *owed >= 1.0 {
                    *owed -= 1.0;
                    let n = self.next_trace;
                    self.next_trace += 1;
                    let trace_id = [
                        n.to_be_bytes(),
                        n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes(),
                    ]
                    .concat();
                    let span = Span {
                        trace_id,
                        span_id: n.to_be_bytes().to_vec(),
                        name: op.to_string(),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_001_000_000,
                        ..Default::default()
                    };
                    per_gateway[n as usize % self.gateways.len()].push(span);
                }
            }
            for (gateway, spans) in self.gateways.iter().zip(per_gateway) {
                if spans.is_empty() {
                    continue;
                }
                let reply = raw::grpc(*gateway, TRACE_EXPORT, &request(SERVICE, spans), None).await;
                assert_eq!(reply.code, 0, "{}", reply.message);
            }
        }
    }
}

/// The gauge that says whether a gateway leads the adaptive fleet.
const LEADER: &str = "otelcol_tracegate_remote_sampling_adaptive_leader{";

/// One metrics line holding every one of `needles`, its value.
fn metric(text: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A chatty operation and a rare one: each gets the probability that
/// samples about the target of it; when the chatty one's traffic drops
/// tenfold, its probability rises toward the target again, and when it
/// comes back, drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probability_follows_the_offered_traffic_per_operation() {
    let gw = gateway("127.0.0.1:0", "");
    let sampling = gw.addr("remote_sampling", "http");
    let otlp = gw.addr("otlp", "grpc");
    let mut sdks = Sdks::new(sampling, vec![otlp]);

    // Before any traffic: the initial probability, for every operation.
    let (_, answer) = strategy(sampling).await;
    assert_eq!(probability_of(&answer, "chatty"), 0.05, "{answer}");

    let within = Duration::from_secs(5);
    let served = sdks
        .offer(&[("chatty", 40_000.0), ("rare", 400.0)], within, |p| {
            on_target(40_000.0, p["chatty"]) && on_target(400.0, p["rare"])
        })
        .await;
    // Far apart: the rare operation keeps a hundred times more of its
    // traffic.
    assert!(served["rare"] > 50.0 * served["chatty"], "{served:?}");

    sdks.offer(&[("chatty", 4_000.0), ("rare", 400.0)], within, |p| {
        on_target(4_000.0, p["chatty"])
    })
    .await;
    sdks.offer(&[("chatty", 40_000.0), ("rare", 400.0)], within, |p| {
        on_target(40_000.0, p["chatty"])
    })
    .await;
    // A few intervals more at that probability, then the target, what was
    // measured against it, and what is served, read while the traffic
    // goes on: each rate is the last calculation interval's, and one
    // that ended after the traffic did would measure less than was
    // offered.
    let read = std::sync::atomic::AtomicBool::new(false);
    let (_, text) = tokio::join!(
        sdks.offer(
            &[("chatty", 40_000.0), ("rare", 400.0)],
            within + Duration::from_secs(6),
            |_| read.load(std::sync::atomic::Ordering::Relaxed),
        ),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let text = raw::wait_for_metrics(
                gw.addr("telemetry", "metrics"),
                &["otelcol_tracegate_remote_sampling_sampled_root_spans_per_second"],
                Duration::from_secs(5),
            )
            .await;
            read.store(true, std::sync::atomic::Ordering::Relaxed);
            text
        },
    );
    assert_eq!(
        metric(
            &text,
            &["otelcol_tracegate_remote_sampling_target_samples_per_second{"]
        ),
        Some(TARGET),
        "{text}"
    );
    let chatty =
        |family: &str| metric(&text, &[family, "service=\"shop\"", "operation=\"chatty\""]);
    let measured = chatty("otelcol_tracegate_remote_sampling_sampled_root_spans_per_second{")
        .expect("the sampled rate of chatty");
    assert!((measured - TARGET).abs() < 0.5 * TARGET, "{text}");
    let offered = chatty("otelcol_tracegate_remote_sampling_offered_root_spans_per_second{")
        .expect("the offered rate of chatty");
    assert!((offered - 40_000.0).abs() < 0.5 * 40_000.0, "{text}");
    let probability = chatty("otelcol_tracegate_remote_sampling_probability{")
        .expect("the probability of chatty");
    assert!(on_target(40_000.0, probability), "{text}");
    assert_eq!(metric(&text, &[LEADER]), Some(1.0));
}

/// A port free on 127.0.0.2, which both gateways then use on their own
/// loopback address, so that each is listed the same way in the other's
/// resolver.
fn shared_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is usable");
    probe.local_addr().unwrap().port()
}

/// Two gateways, each taking half the roots (by trace id, as agents route
/// them): the first member calculates from its half scaled by two, the
/// other serves what it calculated, so both serve the same probabilities,
/// and they are right for the whole traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_serves_one_set_of_probabilities_from_the_whole_traffic() {
    let port = shared_port();
    let members = format!("[127.0.0.2:{port}, 127.0.0.3:{port}]");
    let fleet = |me: &str| {
        format!("      fleet:\n        resolver:\n          static:\n            hostnames: {members}\n        advertised_endpoint: {me}:{port}\n        timeout: 1s\n")
    };
    let leader = gateway(&format!("127.0.0.2:{port}"), &fleet("127.0.0.2"));
    let follower = gateway(&format!("127.0.0.3:{port}"), &fleet("127.0.0.3"));
    let leader_http = leader.addr("remote_sampling", "http");
    let follower_http = follower.addr("remote_sampling", "http");
    // The SDKs poll the follower; their spans reach both.
    let mut sdks = Sdks::new(
        follower_http,
        vec![leader.addr("otlp", "grpc"), follower.addr("otlp", "grpc")],
    );
    let offered = 40_000.0;
    sdks.offer(&[("chatty", offered)], Duration::from_secs(6), |p| {
        on_target(offered, p["chatty"])
    })
    .await;

    // Both serve the same strategy, byte for byte, once the follower has
    // fetched the leader's latest.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (a, answer) = strategy(leader_http).await;
        let (b, _) = strategy(follower_http).await;
        if a == b {
            assert!(on_target(offered, probability_of(&answer, "chatty")), "{a}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateways disagree: {a} / {b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let text = raw::wait_for_metrics(
        follower.addr("telemetry", "metrics"),
        &["otelcol_tracegate_remote_sampling_adaptive_fetches_total{"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&text, &[LEADER]), Some(0.0), "{text}");
    assert!(
        metric(
            &text,
            &[
                "otelcol_tracegate_remote_sampling_adaptive_fetches_total{",
                "outcome=\"success\""
            ]
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
    let text = raw::wait_for_metrics(
        leader.addr("telemetry", "metrics"),
        &[LEADER],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&text, &[LEADER]), Some(1.0), "{text}");
}

/// `@opentelemetry/sampler-jaeger-remote`, under Node, polls the adaptive
/// source and samples as it is told; the roots it samples are sent to the
/// gateway (standing in for its exporter). As its offered traffic drops
/// tenfold, the probability it applies rises toward the target, and what
/// it samples matches what is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_follows_the_adaptive_probability() {
    use crate::remote_sampling::{within_three_sigma, NodeClient};

    let gw = gateway("127.0.0.1:0", "");
    let sampling = gw.addr("remote_sampling", "http");
    let otlp = gw.addr("otlp", "grpc");
    let mut client = NodeClient::start(&format!("http://{sampling}"), SERVICE);

    let mut next_trace = 1u64;
    let mut owed = 0.0;
    let mut phase = |offered: f64, client: &mut NodeClient| {
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        let mut last = std::time::Instant::now();
        let runtime = tokio::runtime::Handle::current();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let (body, answer) = runtime.block_on(strategy(sampling));
            let p = probability_of(&answer, "work");
            if on_target(offered, p) {
                return (body, p);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never on target at {offered}/s: {body}"
            );
            let now = std::time::Instant::now();
            owed += offered * (now - last).as_secs_f64();
            last = now;
            let n = owed.floor();
            owed -= n;
            // The client samples its offered roots; the ones it keeps go
            // to the gateway.
            let answer = client.ask(serde_json::json!({"expect": "", "spans": {"work": n as u64}}));
            let sampled = answer["sampled"]["work"].as_u64().unwrap();
            let spans: Vec<Span> = (0..sampled)
                .map(|_| {
                    let n = next_trace;
                    next_trace += 1;
                    Span {
                        trace_id: [n.to_be_bytes(), n.to_le_bytes()].concat(),
                        span_id: n.to_be_bytes().to_vec(),
                        name: "work".into(),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_001_000_000,
                        ..Default::default()
                    }
                })
                .collect();
            if !spans.is_empty() {
                let reply = runtime.block_on(raw::grpc(
                    otlp,
                    TRACE_EXPORT,
                    &request(SERVICE, spans),
                    None,
                ));
                assert_eq!(reply.code, 0, "{}", reply.message);
            }
        }
    };
    // The client applies what is served: within 3σ of it.
    let check = |p: f64, client: &mut NodeClient| {
        let n = 40_000;
        let answer = client.ask(serde_json::json!({
            "expect": format!("TraceIdRatioBased{{{p}}}"),
            "spans": {"work": n},
        }));
        let sampled = answer["sampled"]["work"].as_u64().unwrap();
        assert!(
            within_three_sigma(sampled, n, p),
            "{sampled} of {n} sampled at {p}: {answer}"
        );
    };

    tokio::task::block_in_place(|| {
        let (_, busy) = phase(8_000.0, &mut client);
        check(busy, &mut client);
        let (_, quiet) = phase(800.0, &mut client);
        check(quiet, &mut client);
        assert!(quiet > 5.0 * busy, "busy {busy}, quiet {quiet}");
    });
    client.finish();
}
