//! The gateway tier end to end: agents (tracegate with the `loadbalancing`
//! exporter) route every span of a trace to one of several gateways
//! (tracegate running `config/gateway.yaml`'s tail sampling), all real
//! processes on loopback. What reaches the backend is checked trace by
//! trace, and each gateway's own count of traces against the share the
//! consistent hash gives it.

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use support::gateway::{agent_config, Gateway, TELEMETRY};
use support::raw::{counter_sum, grpc, http, wait_until_accounted, TRACE_EXPORT};
use support::sink::Sink;
use support::traces::{
    assert_kept_whole_once, assert_share, make_trace, request, start_gateway, wait_for_kept, Kind,
    Trace,
};
use support::Rng;
use tracegate_pipeline::membership::hash::{trace_id_key, Rendezvous};
use tracegate_pipeline::membership::members;

/// An agent: OTLP/gRPC in, the `loadbalancing` exporter (static resolver)
/// out to `gateways`, retrying every 100 to 500 ms for as long as it takes.
fn start_agent(gateways: &[SocketAddr]) -> Gateway {
    let hostnames: Vec<String> = gateways.iter().map(SocketAddr::to_string).collect();
    Gateway::start(&agent_config(&format!(
        "{{static: {{hostnames: [{}]}}}}",
        hostnames.join(", ")
    )))
}

async fn metrics_text(addr: SocketAddr) -> String {
    let reply = http(addr, http::Method::GET, "/metrics", &[], "").await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The owner of each trace among `gateways`, as the agents compute it.
fn owners(gateways: &[SocketAddr], traces: &[Trace]) -> Vec<usize> {
    let endpoints: Vec<String> = gateways.iter().map(|g| g.to_string()).collect();
    let ring = Rendezvous::new(members(endpoints.iter().cloned()));
    traces
        .iter()
        .map(|t| {
            let owner = &ring.members()[ring.owner(trace_id_key(&t.id)).expect("members")];
            endpoints
                .iter()
                .position(|e| e == owner)
                .expect("a gateway")
        })
        .collect()
}

/// The fleet: 30 000 traces of 8 to 10 spans, each trace's spans
/// split over both agents (as two nodes' agents see parts of one trace),
/// three gateways sampling with the card's policy. Every kept trace must
/// arrive whole, exactly once; each class's share within 3 sigma of the
/// policy; each gateway a third of the traces (±10 %), and exactly the
/// traces the hash gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_and_two_agents_keep_whole_traces_once() {
    const TRACES: usize = 30_000;
    let sink = Sink::start().await;
    let gateways: Vec<Gateway> = (0..3).map(|_| start_gateway(&sink)).collect();
    let gateway_addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr("otlp", "grpc")).collect();
    let agents = [start_agent(&gateway_addrs), start_agent(&gateway_addrs)];
    let agent_addrs = [
        agents[0].addr("otlp", "grpc"),
        agents[1].addr("otlp", "grpc"),
    ];

    let mut rng = Rng(0x10ad);
    let traces: Vec<Trace> = (0..TRACES)
        .map(|n| make_trace(&mut rng, n, 8..=10))
        .collect();
    // Waves of 1000 traces; of each trace, some spans go to one agent and
    // the rest to the other, in two requests per agent, all concurrently.
    let mut sent_to_agent = [0usize; 2];
    for wave in traces.chunks(1000) {
        let mut parts: [Vec<Span>; 4] = Default::default();
        for t in wave {
            let cut = 1 + rng.below(t.spans.len() as u64 - 1) as usize;
            let first = rng.below(2) as usize;
            parts[first * 2].extend_from_slice(&t.spans[..cut]);
            parts[(1 - first) * 2 + 1].extend_from_slice(&t.spans[cut..]);
        }
        let sends = parts.into_iter().enumerate().map(|(i, spans)| {
            let agent = i / 2;
            sent_to_agent[agent] += spans.len();
            let body = request(&format!("svc-{i}"), spans);
            let addr = agent_addrs[agent];
            async move { grpc(addr, TRACE_EXPORT, &body, None).await }
        });
        for reply in futures::future::join_all(sends).await {
            assert_eq!(reply.code, 0, "{}", reply.message);
        }
    }

    // Every gateway takes in exactly the spans of the traces it owns, and
    // decides them.
    let owner = owners(&gateway_addrs, &traces);
    for (g, gateway) in gateways.iter().enumerate() {
        let spans: usize = traces
            .iter()
            .zip(&owner)
            .filter(|(_, o)| **o == g)
            .map(|(t, _)| t.spans.len())
            .sum();
        wait_until_accounted(
            gateway.addr("telemetry", "metrics"),
            spans,
            Duration::from_secs(60),
        )
        .await;
    }
    for (a, agent) in agents.iter().enumerate() {
        let text = metrics_text(agent.addr("telemetry", "metrics")).await;
        assert_eq!(
            counter_sum(&text, "otelcol_receiver_accepted_spans_total"),
            sent_to_agent[a] as u64
        );
        assert_eq!(
            counter_sum(&text, "otelcol_tracegate_dropped_spans_total"),
            0,
            "agent {a} dropped spans:\n{text}"
        );
    }

    // Each gateway saw exactly the traces it owns, about a third of all.
    let mut seen = 0;
    for (g, gateway) in gateways.iter().enumerate() {
        let text = metrics_text(gateway.addr("telemetry", "metrics")).await;
        let traces_seen = counter_sum(
            &text,
            "otelcol_processor_tail_sampling_new_trace_id_received_total",
        ) as usize;
        let owned = owner.iter().filter(|o| **o == g).count();
        assert_eq!(
            traces_seen, owned,
            "gateway {g} saw other traces than it owns"
        );
        let share = owned as f64 / TRACES as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.1 / 3.0,
            "gateway {g} got {:.1} % of the traces",
            share * 100.0
        );
        seen += traces_seen;
    }
    assert_eq!(seen, TRACES, "no trace was seen by two gateways");

    // Every kept trace whole, exactly once; nothing of the others.
    wait_for_kept(&sink, &traces, Duration::from_secs(30)).await;
    let kept = assert_kept_whole_once(&sink, &traces);

    // Each class's share within 3 sigma of the policy.
    for (kind, p) in [(Kind::Error, 1.0), (Kind::Slow, 0.25), (Kind::Normal, 0.05)] {
        assert_share(&traces, &kept, kind, p, 3.0);
    }
}

/// Gateways that pass everything on, each to its own sink, so the test
/// sees which gateway got which span.
fn start_relay(sink: &Sink, grpc: &str) -> Gateway {
    Gateway::start(&format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: {grpc}\n\
         {}service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp]\n{TELEMETRY}",
        support::gateway::otlp_exporter_to(sink.addr)
    ))
}

/// A gateway killed in the middle of a run: the agent keeps that gateway's
/// share in its queue and retries it, sends none of it to the others, and
/// delivers it when the gateway is back on its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_run_gets_its_spans_when_it_comes_back() {
    let sinks = [
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    ];
    let mut relays: Vec<Gateway> = sinks
        .iter()
        .map(|s| start_relay(s, "127.0.0.1:0"))
        .collect();
    let addrs: Vec<SocketAddr> = relays.iter().map(|g| g.addr("otlp", "grpc")).collect();
    let agent = start_agent(&addrs);
    let agent_addr = agent.addr("otlp", "grpc");
    let mut rng = Rng(0xdead);
    let traces: Vec<Trace> = (0..3000).map(|n| make_trace(&mut rng, n, 8..=10)).collect();
    let owner = owners(&addrs, &traces);
    let spans_of = |g: usize, range: std::ops::Range<usize>| -> usize {
        traces[range.clone()]
            .iter()
            .zip(&owner[range])
            .filter(|(_, o)| **o == g)
            .map(|(t, _)| t.spans.len())
            .sum()
    };
    let send = |range: std::ops::Range<usize>| {
        let traces = &traces;
        async move {
            for chunk in traces[range].chunks(100) {
                let spans = chunk.iter().flat_map(|t| t.spans.clone()).collect();
                let reply = grpc(agent_addr, TRACE_EXPORT, &request("svc", spans), None).await;
                assert_eq!(reply.code, 0, "{}", reply.message);
            }
        }
    };

    send(0..1000).await;
    for (g, sink) in sinks.iter().enumerate() {
        assert!(
            sink.wait_for_spans(spans_of(g, 0..1000), Duration::from_secs(10))
                .await
        );
    }
    // Gateway 2 is killed once the agent has its acknowledgements (not
    // only once its sink has the spans: a kill before an acknowledgement
    // reaches the agent loses it, and the agent rightly sends the batch
    // again, at least once); traffic goes on.
    let sent_to = |text: &str, g: usize| {
        counter_sum(
            text,
            &format!(
                "otelcol_exporter_sent_spans_total{{exporter=\"load_balancing/{}\"}}",
                addrs[g]
            ),
        ) as usize
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(agent.addr("telemetry", "metrics")).await;
        if sent_to(&text, 2) == spans_of(2, 0..1000) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never had gateway 2's acknowledgements: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(relays.pop());
    send(1000..3000).await;
    for (g, sink) in sinks.iter().enumerate().take(2) {
        assert!(
            sink.wait_for_spans(spans_of(g, 0..3000), Duration::from_secs(10))
                .await,
            "gateway {g} got its traces while the other was down"
        );
    }
    assert_eq!(
        sinks[2].span_count(),
        spans_of(2, 0..1000),
        "nothing reached the dead one"
    );
    // Its share waits at the agent, retried: its backend has sent nothing
    // more, and the agent dropped nothing.
    let text = metrics_text(agent.addr("telemetry", "metrics")).await;
    assert_eq!(sent_to(&text, 2), spans_of(2, 0..1000), "{text}");
    assert_eq!(
        counter_sum(&text, "otelcol_tracegate_dropped_spans_total"),
        0,
        "{text}"
    );

    // Back on its address: its spans arrive, once, and only there.
    let _back = start_relay(&sinks[2], &addrs[2].to_string());
    assert!(
        sinks[2]
            .wait_for_spans(spans_of(2, 0..3000), Duration::from_secs(10))
            .await,
        "sink 2 has {} of {} spans",
        sinks[2].span_count(),
        spans_of(2, 0..3000)
    );
    let mut seen = HashSet::new();
    for (g, sink) in sinks.iter().enumerate() {
        for s in sink.spans() {
            let id: [u8; 16] = s.span.trace_id.as_slice().try_into().unwrap();
            let t = traces
                .iter()
                .position(|t| t.id == id)
                .expect("a sent trace");
            assert_eq!(owner[t], g, "a trace at a gateway that does not own it");
            assert!(
                seen.insert((id, s.span.span_id.clone())),
                "a span arrived twice"
            );
        }
    }
    assert_eq!(
        seen.len(),
        traces.iter().map(|t| t.spans.len()).sum::<usize>()
    );
}

/// A resolver that cannot start stops startup with the reason, before any
/// receiver listens: here the `k8s` resolver outside a pod.
#[test]
fn a_resolver_that_cannot_start_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n\
         exporters:\n  loadbalancing:\n    resolver:\n      k8s:\n        service: gateway.observability\n\
         service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [loadbalancing]\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("TRACEGATE_K8S_API_URL")
        .env("KUBERNETES_SERVICE_HOST", "")
        .env("KUBERNETES_SERVICE_PORT", "")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tracegate");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tracegate kept running without its resolver");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exporters::loadbalancing") && stderr.contains("k8s resolver"),
        "{stderr}"
    );
    assert!(!stderr.contains("tracegate is ready"), "{stderr}");
}
