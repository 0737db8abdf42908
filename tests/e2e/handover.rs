//! A fleet whose members change under load, all real processes on
//! loopback: gateways (tail sampling with the card's policy and
//! `handover`) and agents (the `loadbalancing` exporter) learn the members
//! from the `k8s` resolver, watching an in-test API server that speaks the
//! EndpointSlice list and watch protocol. Each gateway has its own
//! 127.0.0.N and one shared port, as pods have their own IPs behind one
//! container port, and exports to its own sink, so the test sees which
//! gateway decided each kept trace.
//!
//! Scaled down for a debug build: 3600 traces sent in waves of 20 every
//! 25 ms (or as fast as the agents take them), decision_wait 2 s (the
//! issue's card: 30 k traces, 10 s).

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use support::gateway::{agent_config, pipeline_to, Gateway};
use support::raw::{counter_sum, grpc, http, TRACE_EXPORT};
use support::sink::Sink;
use support::traces::{expected_kept, make_trace, request, Kind, Trace, CARD_POLICIES};
use support::Rng;
use tokio::time::Instant;
use tracegate_pipeline::kube::fake::{Endpoint, FakeKubeApi};
use tracegate_pipeline::membership::hash::{trace_id_key, Rendezvous};
use tracegate_pipeline::membership::members;

const NAMESPACE: &str = "observability";
const SERVICE: &str = "tracegate-gateway";
const DECISION_WAIT: Duration = Duration::from_secs(2);
const TRACES: usize = 3600;
/// New traces per wave, one wave every [`WAVE`].
const PER_WAVE: usize = 20;
const WAVE: Duration = Duration::from_millis(25);
/// A trace's three parts go out this many waves apart (150 ms).
const PART_GAP: usize = 6;

/// A port free on 127.0.0.2, which every gateway then uses on its own
/// address.
fn shared_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is usable");
    probe.local_addr().unwrap().port()
}

fn k8s_env(k8s: &str, sa_dir: &str) -> [(&'static str, String); 2] {
    [
        ("TRACEGATE_K8S_API_URL", k8s.to_string()),
        // No token there: requests carry none, as through `kubectl proxy`.
        ("TRACEGATE_K8S_SERVICE_ACCOUNT_DIR", sa_dir.to_string()),
    ]
}

fn start(yaml: String, envs: [(&'static str, String); 2]) -> std::thread::JoinHandle<Gateway> {
    std::thread::spawn(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Gateway::start_with(&yaml, &[], &envs)
    })
}

/// A gateway on `address` (its advertised endpoint, as the resolver
/// lists it), with the card's policy and hand-over, exporting to `sink`.
fn gateway_yaml(address: &str, port: u16, sink: SocketAddr) -> String {
    let sections = format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {address}
processors:
  tail_sampling:
    decision_wait: {wait}s
    decision_cache:
      sampled_cache_size: 100000
      non_sampled_cache_size: 100000
    policies:
{CARD_POLICIES}    handover:
      resolver: {resolver}
      advertised_endpoint: {address}
      protocol:
        otlp:
          tls:
            insecure: true
"#,
        wait = DECISION_WAIT.as_secs(),
        resolver = k8s_resolver(port),
    );
    pipeline_to(sink, &sections, "otlp", "tail_sampling")
}

/// The `k8s` resolver of the gateways' Service, as agents and gateways
/// both write it.
fn k8s_resolver(port: u16) -> String {
    format!("{{k8s: {{service: {SERVICE}.{NAMESPACE}, ports: [{port}]}}}}")
}

async fn metrics_text(addr: SocketAddr) -> String {
    let reply = http(addr, http::Method::GET, "/metrics", &[], "").await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The sum of the series of `name` whose labels include `label`.
fn labelled(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Polls a process's metrics until `done` holds; panics after 20 s.
async fn until(addr: SocketAddr, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics_text(addr).await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const HANDOVER_TRACES: &str = "otelcol_tracegate_tail_sampling_handover_traces_total";
const HANDOVER_SPANS: &str = "otelcol_tracegate_tail_sampling_handover_spans_total";
const HANDOVER_FAILED: &str = "otelcol_tracegate_tail_sampling_handover_failed_spans_total";
const HANDOVER_RECEIVED: &str = "otelcol_tracegate_tail_sampling_handover_received_spans_total";
const HANDOVER_DECISIONS: &str = "otelcol_tracegate_tail_sampling_handover_decisions_total";
const MEMBERSHIP: &str = "reason=\"membership_change\"";

/// The owner of `id` among `fleet`.
fn owner(fleet: &Rendezvous, id: &[u8; 16]) -> String {
    fleet.members()[fleet.owner(trace_id_key(id)).expect("members")].clone()
}

fn fleet(endpoints: &[&String]) -> Rendezvous {
    Rendezvous::new(members(endpoints.iter().map(|e| e.to_string())))
}

/// Of `ids`, the share whose owner differs between the two fleets.
fn moved_share<'a>(
    ids: impl Iterator<Item = &'a [u8; 16]>,
    a: &Rendezvous,
    b: &Rendezvous,
) -> (usize, usize) {
    let (mut moved, mut all) = (0, 0);
    for id in ids {
        all += 1;
        if owner(a, id) != owner(b, id) {
            moved += 1;
        }
    }
    (moved, all)
}

/// The traffic: a third of the traces made error traces (every error trace
/// is kept, so more traces show which gateway decided them), the rest as
/// the card's mix.
fn traffic() -> Vec<Trace> {
    let mut rng = Rng(0x4a4d_0fe2);
    (0..TRACES)
        .map(|n| {
            let mut t = make_trace(&mut rng, n, 8..=10);
            if n % 3 == 0 && t.kind != Kind::Error {
                let last = t.spans.len() - 1;
                t.spans[last].status = Some(Status {
                    code: status::StatusCode::Error as i32,
                    message: String::new(),
                });
                t.kind = Kind::Error;
            }
            t
        })
        .collect()
}

/// Sends the traces in waves: each trace in three parts (spans 2-4, the
/// rest, then the root) [`PART_GAP`] waves apart, the parts alternating
/// between the agents. Returns when each trace's first part went out.
async fn send(traces: &[Trace], agents: [SocketAddr; 2]) -> Vec<Instant> {
    let mut born = vec![Instant::now(); traces.len()];
    let waves = traces.len().div_ceil(PER_WAVE);
    let mut tick = tokio::time::interval(WAVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for wave in 0..waves + 2 * PART_GAP + 1 {
        tick.tick().await;
        let mut by_agent: [Vec<Span>; 2] = Default::default();
        for part in 0..3 {
            let Some(of) = wave.checked_sub(part * PART_GAP) else {
                continue;
            };
            let range = of * PER_WAVE..((of + 1) * PER_WAVE).min(traces.len());
            for n in range {
                let spans = &traces[n].spans;
                let slice = match part {
                    0 => &spans[1..4],
                    1 => &spans[4..],
                    _ => &spans[..1],
                };
                if part == 0 {
                    born[n] = Instant::now();
                }
                by_agent[(n + part) % 2].extend_from_slice(slice);
            }
        }
        let sends = by_agent
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(a, spans)| {
                let body = request(&format!("svc-{a}"), spans);
                async move { grpc(agents[a], TRACE_EXPORT, &body, None).await }
            });
        for reply in futures::future::join_all(sends).await {
            assert_eq!(reply.code, 0, "{}", reply.message);
        }
    }
    born
}

/// The issue's "membership change under load": three gateways and two
/// agents, traffic running; a fourth gateway joins, then the first leaves
/// (out of the EndpointSlice, then stopped after a preStop-like delay).
/// The fleet moves exactly the traces the hash moves (at most 1.1/N of
/// them), pending traces are handed over, every kept trace arrives whole
/// and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_under_load_hands_pending_traces_over() {
    let api = FakeKubeApi::start().await;
    let sa_dir = tempfile::tempdir().unwrap();
    let sa = sa_dir.path().to_str().unwrap().to_string();
    let port = shared_port();
    let ips: Vec<String> = (2..=5).map(|n| format!("127.0.0.{n}")).collect();
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let sinks = [
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    ];
    // All four start now; the fourth is not in the Service yet, so nothing
    // is routed to it.
    let starting: Vec<_> = (0..4)
        .map(|g| {
            start(
                gateway_yaml(&endpoints[g], port, sinks[g].addr),
                k8s_env(&api.url(), &sa),
            )
        })
        .collect();
    let mut gateways: Vec<Option<Gateway>> = starting
        .into_iter()
        .map(|s| Some(s.join().expect("a gateway started")))
        .collect();
    let metrics: Vec<SocketAddr> = gateways
        .iter()
        .map(|g| g.as_ref().unwrap().addr("telemetry", "metrics"))
        .collect();
    let members_are = |n: usize| {
        format!(
            "otelcol_tracegate_tail_sampling_handover_members{{processor=\"tail_sampling\"}} {n}"
        )
    };
    // The Service's endpoints: gateways `ready`, and `leaving` ones
    // terminating (which the resolvers leave out).
    let set_endpoints = |ready: &[usize], leaving: &[usize]| {
        let endpoints: Vec<Endpoint> = leaving
            .iter()
            .map(|g| Endpoint::terminating(&ips[*g]))
            .chain(ready.iter().map(|g| Endpoint::ready(&ips[*g])))
            .collect();
        api.set_endpoints(NAMESPACE, SERVICE, &endpoints);
    };
    set_endpoints(&[0, 1, 2], &[]);
    for m in &metrics {
        until(*m, "three members", |t| t.contains(&members_are(3))).await;
    }
    let agents: Vec<Gateway> = (0..2)
        .map(|_| start(agent_config(&k8s_resolver(port)), k8s_env(&api.url(), &sa)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|s| s.join().expect("an agent started"))
        .collect();
    let agent_addrs = [
        agents[0].addr("otlp", "grpc"),
        agents[1].addr("otlp", "grpc"),
    ];
    for agent in &agents {
        until(agent.addr("telemetry", "metrics"), "three backends", |t| {
            t.contains("otelcol_loadbalancer_num_backends{resolver=\"k8s\"} 3")
        })
        .await;
    }

    let traces: std::sync::Arc<[Trace]> = traffic().into();
    let traffic_start = Instant::now();
    let sending = {
        let traces = traces.clone();
        tokio::spawn(async move { send(&traces, agent_addrs).await })
    };

    // t = 1 s: the fourth gateway is ready and joins.
    tokio::time::sleep_until(traffic_start + Duration::from_secs(1)).await;
    let added = Instant::now();
    set_endpoints(&[0, 1, 2, 3], &[]);
    // t = 3 s: the first is being deleted: terminating, so out of the
    // members; it still runs (its preStop).
    tokio::time::sleep_until(traffic_start + Duration::from_secs(3)).await;
    let mut handed_at_add = 0;
    for m in &metrics[..3] {
        handed_at_add += labelled(&metrics_text(*m).await, HANDOVER_TRACES, MEMBERSHIP);
    }
    let first_before = labelled(&metrics_text(metrics[0]).await, HANDOVER_TRACES, MEMBERSHIP);
    let removed = Instant::now();
    set_endpoints(&[1, 2, 3], &[0]);
    // t = 4 s: after the preStop delay it is stopped.
    tokio::time::sleep_until(traffic_start + Duration::from_secs(4)).await;
    let leaving = metrics_text(metrics[0]).await;
    let mut first = gateways[0].take().unwrap();
    let status = tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "the leaving gateway exited with {status}");
    let born = sending.await.expect("traffic ran");

    // Every promised trace's spans arrive, and the remaining gateways
    // hold nothing more and have exported all they decided.
    let expected: Vec<&Trace> = traces.iter().filter(|t| expected_kept(t)).collect();
    let expected_spans: usize = expected.iter().map(|t| t.spans.len()).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sinks.iter().map(Sink::span_count).sum::<usize>() < expected_spans
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut texts = vec![leaving.clone()];
    for g in 1..4 {
        let sink = &sinks[g];
        texts.push(
            until(metrics[g], "settled", |t| {
                labelled(t, "otelcol_tracegate_tail_sampling_pending_traces", "") == 0
                    && counter_sum(t, "otelcol_exporter_sent_spans_total") as usize
                        == sink.span_count()
            })
            .await,
        );
    }
    for agent in &agents {
        let text = metrics_text(agent.addr("telemetry", "metrics")).await;
        assert_eq!(
            counter_sum(&text, "otelcol_tracegate_dropped_spans_total"),
            0,
            "an agent dropped spans:\n{text}"
        );
    }

    // What arrived, by trace: spans and the gateway that exported them.
    let mut arrived: HashMap<[u8; 16], Vec<(usize, Vec<u8>)>> = HashMap::new();
    for (g, sink) in sinks.iter().enumerate() {
        for s in sink.spans() {
            let id: [u8; 16] = s.span.trace_id.as_slice().try_into().unwrap();
            arrived
                .entry(id)
                .or_default()
                .push((g, s.span.span_id.clone()));
        }
    }
    let mut twice = 0;
    for spans in arrived.values() {
        let mut ids: Vec<&Vec<u8>> = spans.iter().map(|(_, s)| s).collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        twice += all - ids.len();
    }
    // Whole: every span, from one gateway. Anything else of a promised
    // trace (missing, split, decided twice) counts as incomplete; a trace
    // that should have been dropped arriving means one was judged on part
    // of its spans.
    let mut incomplete = 0;
    let mut decider: HashMap<[u8; 16], usize> = HashMap::new();
    for t in &expected {
        let got = arrived.get(&t.id).map(Vec::as_slice).unwrap_or_default();
        let from: Vec<usize> = got.iter().map(|(g, _)| *g).collect();
        let whole = got.len() == t.spans.len()
            && from.iter().all(|g| *g == from[0])
            && t.spans
                .iter()
                .all(|s| got.iter().any(|(_, id)| *id == s.span_id));
        if whole {
            decider.insert(t.id, from[0]);
        } else {
            incomplete += 1;
        }
    }
    let unexpected = arrived.len()
        - expected
            .iter()
            .filter(|t| arrived.contains_key(&t.id))
            .count();

    // Who owns what before, between and after the changes.
    let e: Vec<&String> = endpoints.iter().collect();
    let m1 = fleet(&e[..3]);
    let m2 = fleet(&e[..4]);
    let m3 = fleet(&e[1..4]);
    let index = |endpoint: String| endpoints.iter().position(|e| *e == endpoint).unwrap();
    // A trace is decided DECISION_WAIT after its first span reached its
    // gateway (a little after it was sent): which members were in force
    // then, away from a change by more than the lag of a view or a span.
    let margin = Duration::from_millis(500);
    // Before the join, between, after the leave: (from, to, the members
    // then, the members before).
    let phases = [
        (None, Some(added), &m1, &m1),
        (Some(added), Some(removed), &m2, &m1),
        (Some(removed), None, &m3, &m2),
    ];
    // Per phase: kept traces decided in it; of those, the ones decided by
    // another gateway than their owner before, and the ones whose owner
    // the hash changed.
    let mut counts = [(0usize, 0usize, 0usize); 3];
    let mut wrong_owner = 0;
    for (n, t) in traces.iter().enumerate() {
        let Some(&g) = decider.get(&t.id) else {
            continue;
        };
        let decided = born[n] + DECISION_WAIT;
        let Some(p) = phases.iter().position(|(from, to, _, _)| {
            from.is_none_or(|f| decided > f + margin) && to.is_none_or(|t| decided + margin < t)
        }) else {
            continue;
        };
        let (_, _, now, before) = phases[p];
        counts[p].0 += 1;
        if g != index(owner(before, &t.id)) {
            counts[p].1 += 1;
        }
        if owner(before, &t.id) != owner(now, &t.id) {
            counts[p].2 += 1;
        }
        if g != index(owner(now, &t.id)) {
            wrong_owner += 1;
        }
    }
    let [_, (in_add, moved_at_add, hashed_at_add), (in_remove, moved_at_remove, hashed_at_remove)] =
        counts;
    // The same, as the hash computes it over every trace of the run.
    let (hash_add, all) = moved_share(traces.iter().map(|t| &t.id), &m1, &m2);
    let (hash_remove, _) = moved_share(traces.iter().map(|t| &t.id), &m2, &m3);

    let sum =
        |name: &str, label: &str| -> u64 { texts.iter().map(|t| labelled(t, name, label)).sum() };
    // What the leaving gateway handed over when it left.
    let handed_at_remove = labelled(&leaving, HANDOVER_TRACES, MEMBERSHIP) - first_before;
    eprintln!(
        "hand-over under load: {TRACES} traces ({} spans) over {:.1} s, {} kept ({} spans); \
         4th gateway joined at {:.2} s, 1st left at {:.2} s and stopped at 4 s",
        traces.iter().map(|t| t.spans.len()).sum::<usize>(),
        (born[TRACES - 1] - born[0]).as_secs_f64(),
        expected.len(),
        expected_spans,
        (added - traffic_start).as_secs_f64(),
        (removed - traffic_start).as_secs_f64(),
    );
    eprintln!(
        "  moved share, join (N = 4): the hash moves {hash_add} of all {all} traces ({:.3}; \
         bound 1.1/N = {:.3}); of the {in_add} kept traces decided after it, {moved_at_add} \
         were decided by a new owner, and the hash moved {hashed_at_add} of them",
        hash_add as f64 / all as f64,
        1.1 / 4.0
    );
    eprintln!(
        "  moved share, leave (N = 4): the hash moves {hash_remove} of {all} ({:.3}); of the \
         {in_remove} kept traces decided after it, {moved_at_remove} were decided by a new owner, \
         and the hash moved {hashed_at_remove} of them",
        hash_remove as f64 / all as f64,
    );
    eprintln!(
        "  handed over on membership changes: {handed_at_add} traces by the first three at the \
         join, {handed_at_remove} by the first as it left; spans {} (membership), {} \
         (not owner), {} (recheck), {} (shutdown); decisions {}; received {} spans; failed {} spans",
        sum(HANDOVER_SPANS, MEMBERSHIP),
        sum(HANDOVER_SPANS, "reason=\"not_owner\""),
        sum(HANDOVER_SPANS, "reason=\"recheck\""),
        sum(HANDOVER_SPANS, "reason=\"shutdown\""),
        sum(HANDOVER_DECISIONS, ""),
        sum(HANDOVER_RECEIVED, ""),
        sum(HANDOVER_FAILED, ""),
    );
    eprintln!(
        "  kept traces incomplete: {incomplete} of {} ({:.3} %); arrived though not promised: \
         {unexpected}; spans twice: {twice}; decided by a gateway that did not own the trace: \
         {wrong_owner}",
        expected.len(),
        incomplete as f64 * 100.0 / expected.len() as f64
    );

    assert_eq!(twice, 0, "no span arrives twice");
    assert!(
        incomplete as f64 <= 0.001 * expected.len() as f64,
        "{incomplete} of {} kept traces incomplete",
        expected.len()
    );
    assert_eq!(unexpected, 0, "no trace judged on part of its spans");
    assert_eq!(
        wrong_owner, 0,
        "every trace decided by its owner at the time"
    );
    assert!(in_add > 20 && in_remove > 20, "both windows hold traces");
    // The hash moves at most 1.1/N of the traces at each change ...
    for (moved, of) in [(hash_add, all), (hash_remove, all)] {
        assert!(
            moved as f64 / of as f64 <= 1.1 / 4.0,
            "{moved} of {of} traces moved"
        );
    }
    // ... and the fleet moved exactly the traces the hash moved.
    assert_eq!(moved_at_add, hashed_at_add);
    assert_eq!(moved_at_remove, hashed_at_remove);
    assert!(moved_at_add > 0 && moved_at_remove > 0);
    // Pending traces were handed over at both changes: to the joining one
    // by the three before it, and by the leaving one.
    assert!(
        handed_at_add > 0,
        "pending traces handed to the new gateway"
    );
    assert!(
        handed_at_remove > 0,
        "the leaving gateway handed its pending traces over"
    );
    assert!(sum(HANDOVER_RECEIVED, "") > 0);
    assert_eq!(sum(HANDOVER_FAILED, ""), 0, "every hand-over was taken");
}
