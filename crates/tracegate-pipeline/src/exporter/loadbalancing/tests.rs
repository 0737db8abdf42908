//! The `loadbalancing` exporter against in-test OTLP sinks: where each
//! trace goes, what happens when a backend is slow, gone or leaves, and how
//! it follows a DNS name whose addresses change.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracegate_model::otlp::{
    string_kv, ExportTraceServiceRequest, Resource, ResourceSpans, ScopeSpans, Span,
};
use tracegate_model::SpanBatch;

use super::super::test_support::{TestRng as Rng, *};
use super::super::{ExporterConfig, ExporterHandle, Refusal};
use super::*;
use crate::context::BuildContext;
use crate::membership::hash::{trace_id_key, Rendezvous};
use crate::membership::test_dns::TestDns;
use crate::membership::{members, DnsResolverConfig};
use crate::telemetry::names;

const GRACE: Duration = Duration::from_secs(5);

/// Per-backend settings: plaintext, retries in milliseconds.
fn otlp(extra: serde_json::Value) -> serde_json::Value {
    let mut otlp = serde_json::json!({
        "tls": {"insecure": true},
        "timeout": "2s",
        "retry_on_failure": {
            "initial_interval": "5ms", "max_interval": "20ms", "max_elapsed_time": "0",
            "randomization_factor": 0.0
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        otlp[k] = v.clone();
    }
    otlp
}

fn static_config(endpoints: &[String], otlp_extra: serde_json::Value) -> ExporterConfig {
    ExporterConfig::from_value(
        "loadbalancing",
        serde_json::json!({
            "protocol": {"otlp": otlp(otlp_extra)},
            "resolver": {"static": {"hostnames": endpoints}},
        }),
    )
    .expect("known kind")
    .expect("valid config")
}

fn start(config: &ExporterConfig) -> ExporterHandle {
    config
        .start("loadbalancing", &BuildContext::default())
        .expect("starts")
}

/// A batch of `traces` (each of `spans` spans), their spans spread over
/// two services as an agent's batch would hold them.
fn batch_of(traces: &[[u8; 16]], spans: u64) -> SpanBatch {
    let resource_spans = (0..2u64)
        .map(|svc| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", &format!("svc-{svc}"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: traces
                    .iter()
                    .flat_map(|id| {
                        (0..spans).filter(move |s| s % 2 == svc).map(move |s| Span {
                            trace_id: id.to_vec(),
                            span_id: (s + 1).to_be_bytes().to_vec(),
                            name: format!("op-{s}"),
                            start_time_unix_nano: 1,
                            end_time_unix_nano: 2,
                            ..Default::default()
                        })
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    SpanBatch::from_request(&ExportTraceServiceRequest { resource_spans })
}

/// Each received span as (trace id, span id), per sink.
fn received(sink: &GrpcSink) -> Vec<([u8; 16], Vec<u8>)> {
    sink.state
        .received()
        .iter()
        .flat_map(|r| &r.request.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.as_slice().try_into().unwrap(), s.span_id.clone()))
        .collect()
}

/// Checks that every span of `traces` arrived exactly once, every trace
/// whole at the sink its owner in `ring` names; returns the traces per sink.
fn assert_whole_at_owners(
    sinks: &[&GrpcSink],
    endpoints: &[String],
    traces: &[[u8; 16]],
    spans: u64,
) -> Vec<usize> {
    let ring = Rendezvous::new(members(endpoints.iter().cloned()));
    let mut seen: HashSet<([u8; 16], Vec<u8>)> = HashSet::new();
    let mut at: HashMap<[u8; 16], usize> = HashMap::new();
    let mut per_sink = vec![0usize; sinks.len()];
    for (i, sink) in sinks.iter().enumerate() {
        for (trace, span) in received(sink) {
            assert!(seen.insert((trace, span)), "a span arrived twice");
            let first = *at.entry(trace).or_insert(i);
            assert_eq!(first, i, "a trace went to two backends");
        }
    }
    assert_eq!(
        seen.len(),
        traces.len() * spans as usize,
        "every span arrived"
    );
    for trace in traces {
        let owner = &ring.members()[ring.owner(trace_id_key(trace)).unwrap()];
        let sink = at[trace];
        assert_eq!(
            &endpoints[sink], owner,
            "a trace at a backend that does not own it"
        );
        per_sink[sink] += 1;
    }
    per_sink
}

async fn wait_for_total(sinks: &[&GrpcSink], spans: usize) {
    eventually("every span at the sinks", || {
        sinks
            .iter()
            .map(|s| s.state.span_names().len())
            .sum::<usize>()
            >= spans
    })
    .await;
}

#[tokio::test]
async fn each_trace_goes_whole_to_its_owner_and_each_backend_gets_a_share() {
    let recorder = Arc::new(TestRecorder::default());
    let _guard = metrics::set_default_local_recorder(recorder.as_ref());
    let sinks = [
        GrpcSink::start().await,
        GrpcSink::start().await,
        GrpcSink::start().await,
    ];
    let sinks: Vec<&GrpcSink> = sinks.iter().collect();
    let endpoints: Vec<String> = sinks.iter().map(|s| s.addr.to_string()).collect();
    let handle = start(&static_config(&endpoints, serde_json::json!({})));
    assert!(
        !handle.is_queued(),
        "no queue in front of the routing unless asked"
    );
    handle
        .ready()
        .await
        .expect("the static list is there at once");

    let mut rng = Rng(1);
    let traces: Vec<[u8; 16]> = (0..3000).map(|_| rng.trace_id()).collect();
    for chunk in traces.chunks(100) {
        handle.send(Arc::new(batch_of(chunk, 4))).await.unwrap();
    }
    wait_for_total(&sinks, traces.len() * 4).await;
    let per_sink = assert_whole_at_owners(&sinks, &endpoints, &traces, 4);
    for (i, n) in per_sink.iter().enumerate() {
        let share = *n as f64 / traces.len() as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.1 / 3.0,
            "backend {i} got {share}"
        );
    }

    assert_eq!(
        recorder.gauge(names::LOADBALANCER_NUM_BACKENDS, &[("resolver", "static")]),
        3.0
    );
    assert_eq!(
        recorder.counter(
            names::LOADBALANCER_NUM_RESOLUTIONS,
            &[("resolver", "static"), ("success", "true")]
        ),
        1
    );
    assert_eq!(
        recorder.counter(
            names::LOADBALANCER_NUM_BACKEND_UPDATES,
            &[("resolver", "static")]
        ),
        1
    );
    for endpoint in &endpoints {
        let ok = recorder.counter(
            names::LOADBALANCER_BACKEND_OUTCOME,
            &[("endpoint", endpoint), ("success", "true")],
        );
        assert!(ok > 0 && ok <= 30, "{endpoint}: {ok} parts");
        // Each backend's own exporter counts what it sent.
        eventually("the backend counted its spans", || {
            recorder.exporter_counter(
                names::EXPORTER_SENT_SPANS,
                &format!("loadbalancing/{endpoint}"),
            ) == per_sink[endpoints.iter().position(|e| e == endpoint).unwrap()] as u64 * 4
        })
        .await;
    }
    handle.shutdown(GRACE).await;
}

/// A backend that is down keeps its part queued and retried; nothing of its
/// traces goes elsewhere; when it comes back, its spans arrive.
#[tokio::test]
async fn a_backend_that_is_down_gets_its_part_when_it_comes_back() {
    let live = [GrpcSink::start().await, GrpcSink::start().await];
    // A port nothing listens on, for now.
    let down: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let endpoints = vec![
        live[0].addr.to_string(),
        live[1].addr.to_string(),
        down.to_string(),
    ];
    let handle = start(&static_config(&endpoints, serde_json::json!({})));

    let mut rng = Rng(2);
    let traces: Vec<[u8; 16]> = (0..600).map(|_| rng.trace_id()).collect();
    for chunk in traces.chunks(50) {
        handle.send(Arc::new(batch_of(chunk, 3))).await.unwrap();
    }
    let ring = Rendezvous::new(members(endpoints.iter().cloned()));
    let owned_by = |i: usize| {
        traces
            .iter()
            .filter(|t| ring.members()[ring.owner(trace_id_key(t)).unwrap()] == endpoints[i])
            .count()
    };
    let live_spans = (owned_by(0) + owned_by(1)) * 3;
    let live_refs: Vec<&GrpcSink> = live.iter().collect();
    wait_for_total(&live_refs, live_spans).await;
    assert!(owned_by(2) > 100);

    let back = GrpcSink::start_on(down).await;
    back.state.wait_for_spans(owned_by(2) * 3).await;
    let all = [&live[0], &live[1], &back];
    assert_whole_at_owners(&all, &endpoints, &traces, 3);
    handle.shutdown(GRACE).await;
}

/// Traces whose owner is `endpoint` among `endpoints`.
fn owned_traces(rng: &mut Rng, endpoints: &[String], endpoint: &str, n: usize) -> Vec<[u8; 16]> {
    let ring = Rendezvous::new(members(endpoints.iter().cloned()));
    std::iter::repeat_with(|| rng.trace_id())
        .filter(|t| ring.members()[ring.owner(trace_id_key(t)).unwrap()] == endpoint)
        .take(n)
        .collect()
}

/// A full backend queue refuses only its own part: beside parts others
/// took, it is counted as dropped for that backend; alone, the batch is
/// refused so the client can retry it.
#[tokio::test]
async fn a_full_backend_queue_drops_its_part_or_refuses_the_batch() {
    let recorder = Arc::new(TestRecorder::default());
    let _guard = metrics::set_default_local_recorder(recorder.as_ref());
    let stalled = GrpcSink::start().await;
    stalled.state.otherwise(GrpcReply::Stall);
    let healthy = GrpcSink::start().await;
    let endpoints = vec![stalled.addr.to_string(), healthy.addr.to_string()];
    let handle = start(&static_config(
        &endpoints,
        serde_json::json!({"timeout": "60s", "sending_queue": {"num_consumers": 1, "queue_size": 1}}),
    ));
    let mut rng = Rng(3);
    let stalled_id = format!("loadbalancing/{}", endpoints[0]);

    // One part in flight, one queued.
    for _ in 0..2 {
        let traces = owned_traces(&mut rng, &endpoints, &endpoints[0], 2);
        handle.send(Arc::new(batch_of(&traces, 2))).await.unwrap();
        if stalled.state.attempts() == 0 {
            stalled.state.wait_for_attempts(1).await;
        }
    }
    // Only the stalled backend's traces: nothing takes them.
    let traces = owned_traces(&mut rng, &endpoints, &endpoints[0], 3);
    let refused = handle
        .send(Arc::new(batch_of(&traces, 2)))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Refusal::Failed { message, .. } if message.contains("sending queue is full")),
        "{refused:?}"
    );
    assert_eq!(
        recorder.dropped(&stalled_id, "queue_full"),
        0,
        "the client holds them"
    );

    // Mixed: the healthy part goes out, the stalled part is dropped.
    let mut mixed = owned_traces(&mut rng, &endpoints, &endpoints[0], 2);
    mixed.extend(owned_traces(&mut rng, &endpoints, &endpoints[1], 5));
    handle.send(Arc::new(batch_of(&mixed, 2))).await.unwrap();
    healthy.state.wait_for_spans(10).await;
    assert_eq!(recorder.dropped(&stalled_id, "queue_full"), 4);
    assert_eq!(
        recorder.counter(
            names::LOADBALANCER_BACKEND_OUTCOME,
            &[("endpoint", &endpoints[0]), ("success", "false")]
        ),
        2
    );

    // Shutdown cannot drain the stalled backend: its 2 batches are counted.
    handle.shutdown(Duration::from_millis(200)).await;
    assert_eq!(recorder.dropped(&stalled_id, "shutdown"), 8);
}

/// With `retry_on_failure` on, a part a backend refused beside parts the
/// others took is retried alone (routed afresh), and nothing is sent twice.
#[tokio::test]
async fn with_retry_on_failure_only_the_refused_part_is_retried() {
    let flaky = GrpcSink::start().await;
    flaky
        .state
        .script([GrpcReply::Fail(tonic::Status::unavailable("restarting"))]);
    let steady = GrpcSink::start().await;
    let endpoints = vec![flaky.addr.to_string(), steady.addr.to_string()];
    let config = ExporterConfig::from_value(
        "loadbalancing",
        serde_json::json!({
            "protocol": {"otlp": otlp(serde_json::json!({
                "sending_queue": {"enabled": false},
                "retry_on_failure": {"enabled": false},
            }))},
            "resolver": {"static": {"hostnames": endpoints}},
            "retry_on_failure": {
                "enabled": true, "initial_interval": "5ms", "max_interval": "20ms",
                "randomization_factor": 0.0, "max_elapsed_time": "2s",
            },
        }),
    )
    .unwrap()
    .unwrap();
    let handle = start(&config);
    let mut rng = Rng(6);
    let mut traces = owned_traces(&mut rng, &endpoints, &endpoints[0], 10);
    traces.extend(owned_traces(&mut rng, &endpoints, &endpoints[1], 10));
    handle.send(Arc::new(batch_of(&traces, 3))).await.unwrap();
    assert_eq!(flaky.state.attempts(), 2, "refused once, then taken");
    assert_whole_at_owners(&[&flaky, &steady], &endpoints, &traces, 3);
    assert_eq!(
        steady.state.attempts(),
        1,
        "the part taken is not sent again"
    );
    handle.shutdown(GRACE).await;
}

#[tokio::test]
async fn shutdown_drains_every_backend_queue() {
    let sinks = [GrpcSink::start().await, GrpcSink::start().await];
    let endpoints: Vec<String> = sinks.iter().map(|s| s.addr.to_string()).collect();
    let handle = start(&static_config(
        &endpoints,
        serde_json::json!({"sending_queue": {"num_consumers": 1}}),
    ));
    let mut rng = Rng(4);
    let traces: Vec<[u8; 16]> = (0..400).map(|_| rng.trace_id()).collect();
    for chunk in traces.chunks(10) {
        handle.send(Arc::new(batch_of(chunk, 2))).await.unwrap();
    }
    handle.shutdown(GRACE).await;
    let total: usize = sinks.iter().map(|s| s.state.span_names().len()).sum();
    assert_eq!(total, 800, "drained before shutdown returned");
    assert!(matches!(
        handle.send(Arc::new(batch_of(&traces[..1], 1))).await,
        Err(Refusal::ShuttingDown)
    ));
}

/// A resolver that cannot start, or finds nobody: batches are refused,
/// with the reason.
#[tokio::test]
async fn without_backends_batches_are_refused_with_the_reason() {
    // A resolver that cannot start: here one whose settings its own start
    // refuses (validation would have caught them before a real start).
    let config: Config = crate::config::from_value(serde_json::json!({
        "resolver": {"k8s": {"service": ""}},
    }))
    .unwrap();
    let built =
        super::super::BuildExporter::build(&config, "loadbalancing", &BuildContext::default())
            .expect("builds");
    let not_ready = built.exporter.ready().await.unwrap_err();
    assert!(
        not_ready.contains("k8s resolver could not start"),
        "{not_ready}"
    );
    let refused = built
        .exporter
        .export(&batch_of(&[[1; 16]], 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ExportError::Retryable { message, .. }
            if message.contains("k8s resolver could not start") && message.contains("service")),
        "{refused:?}"
    );
    built.exporter.shutdown_within(GRACE).await;

    let dns = TestDns::start().await;
    let handle = start(&dns_config(&dns, 4317));
    let refused = handle
        .send(Arc::new(batch_of(&[[1; 16]], 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Refusal::Failed { message, .. } if message.contains("found none")),
        "{refused:?}"
    );
    handle.shutdown(GRACE).await;
}

fn dns_config(dns: &TestDns, port: u16) -> ExporterConfig {
    let mut config: Config = crate::config::from_value(serde_json::json!({
        "protocol": {"otlp": otlp(serde_json::json!({}))},
        "resolver": {"dns": {"hostname": "gateways.test", "port": port, "interval": "50ms"}},
    }))
    .unwrap();
    let Some(ResolverConfig::Dns(resolver)) = &mut config.resolver else {
        unreachable!()
    };
    *resolver = DnsResolverConfig {
        nameservers: Some(vec![dns.addr]),
        ..resolver.clone()
    };
    ExporterConfig::LoadBalancing(config)
}

/// Two sinks on one port of two loopback addresses, as the pods behind a
/// headless Service listen.
async fn sinks_on_one_port() -> (GrpcSink, GrpcSink) {
    loop {
        let first = GrpcSink::start().await;
        let second = SocketAddr::from(([127, 0, 0, 2], first.addr.port()));
        if std::net::TcpListener::bind(second).is_ok() {
            return (first, GrpcSink::start_on(second).await);
        }
    }
}

/// The exporter follows a DNS name as its addresses change: new backends
/// get new traces' shares, a backend that left gets nothing more.
#[tokio::test]
async fn follows_a_dns_name_whose_addresses_change() {
    let recorder = Arc::new(TestRecorder::default());
    let _guard = metrics::set_default_local_recorder(recorder.as_ref());
    let dns = TestDns::start().await;
    let (a, b) = sinks_on_one_port().await;
    let port = a.addr.port();
    dns.set("gateways.test", &["127.0.0.1".parse().unwrap()]);
    let handle = start(&dns_config(&dns, port));
    let backends = || recorder.gauge(names::LOADBALANCER_NUM_BACKENDS, &[("resolver", "dns")]);
    let mut rng = Rng(5);

    let first: Vec<[u8; 16]> = (0..200).map(|_| rng.trace_id()).collect();
    handle.send(Arc::new(batch_of(&first, 2))).await.unwrap();
    a.state.wait_for_spans(400).await;

    dns.set(
        "gateways.test",
        &["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
    );
    eventually("a second backend", || backends() == 2.0).await;
    let second: Vec<[u8; 16]> = (0..600).map(|_| rng.trace_id()).collect();
    handle.send(Arc::new(batch_of(&second, 2))).await.unwrap();
    let both = [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")];
    wait_for_total(&[&a, &b], 400 + 1200).await;
    let ring = Rendezvous::new(members(both.iter().cloned()));
    let to_b = second
        .iter()
        .filter(|t| ring.owner(trace_id_key(t)) == Some(1))
        .count();
    assert!(to_b > 200 && to_b < 400, "{to_b} of 600 to the new backend");
    assert_eq!(received(&b).len(), to_b * 2);
    let b_traces: HashSet<[u8; 16]> = received(&b).into_iter().map(|(t, _)| t).collect();
    assert!(
        b_traces.iter().all(|t| second.contains(t)),
        "nothing sent before it joined"
    );

    dns.set("gateways.test", &["127.0.0.2".parse().unwrap()]);
    eventually("the first backend gone", || backends() == 1.0).await;
    let third: Vec<[u8; 16]> = (0..100).map(|_| rng.trace_id()).collect();
    let a_before = received(&a).len();
    handle.send(Arc::new(batch_of(&third, 2))).await.unwrap();
    b.state.wait_for_spans(to_b * 2 + 200).await;
    assert_eq!(
        received(&a).len(),
        a_before,
        "nothing for a backend that left"
    );
    assert!(
        recorder.counter(
            names::LOADBALANCER_NUM_BACKEND_UPDATES,
            &[("resolver", "dns")]
        ) >= 3
    );
    handle.shutdown(GRACE).await;
}

#[test]
fn settings_as_the_collector_writes_them() {
    let parse = |value: serde_json::Value| {
        ExporterConfig::from_value("loadbalancing", value)
            .unwrap()
            .map(|c| match c {
                ExporterConfig::LoadBalancing(c) => c,
                other => panic!("{other:?}"),
            })
    };
    let c = parse(serde_json::json!({
        "routing_key": "service",
        "protocol": {"otlp": {"timeout": "1s", "tls": {"insecure": true}}},
        "resolver": {"static": {"hostnames": ["backend-1:4317", "backend-2"]}},
    }))
    .unwrap();
    assert_eq!(c.routing_key, RoutingKey::Service);
    assert_eq!(c.protocol.otlp.timeout, Duration::from_secs(1));
    assert!(!c.sending_queue.enabled && !c.retry_on_failure.enabled);
    assert_eq!(c.timeout, Duration::ZERO);
    assert!(c.validate().unwrap().is_empty());
    for name in ["traceID", ""] {
        let c = parse(
            serde_json::json!({"routing_key": name, "resolver": {"dns": {"hostname": "gw"}}}),
        )
        .unwrap();
        assert_eq!(c.routing_key, RoutingKey::TraceId);
    }
    assert!(ExporterConfig::from_value(
        "load_balancing",
        serde_json::json!({"resolver": {"dns": {"hostname": "gw"}}})
    )
    .unwrap()
    .is_ok());

    // The outer queue and retry stay off unless enabled, their other keys
    // defaulting as elsewhere.
    let c = parse(serde_json::json!({
        "resolver": {"dns": {"hostname": "gw"}},
        "sending_queue": {"num_consumers": 2},
        "retry_on_failure": {"max_elapsed_time": "60s"},
        "timeout": "3s",
    }))
    .unwrap();
    assert!(!c.sending_queue.enabled && c.sending_queue.num_consumers == 2);
    assert!(!c.retry_on_failure.enabled);
    assert_eq!(c.retry_on_failure.initial_interval, Duration::from_secs(5));
    let c = parse(serde_json::json!({
        "resolver": {"dns": {"hostname": "gw"}},
        "sending_queue": {"enabled": true}, "retry_on_failure": {"enabled": true},
    }))
    .unwrap();
    assert!(c.sending_queue.enabled && c.retry_on_failure.enabled);

    let invalid = |value: serde_json::Value| match parse(value.clone()) {
        Err(e) => e,
        Ok(c) => c.validate().expect_err(&value.to_string()),
    };
    for (value, path, says) in [
        (serde_json::json!({}), "resolver", "no resolver"),
        (
            serde_json::json!({"resolver": {"static": {"hostnames": ["a:1"]}, "dns": {"hostname": "b"}}}),
            "resolver",
            "only one",
        ),
        (
            serde_json::json!({"resolver": {"aws_cloud_map": {"namespace": "x"}}}),
            "resolver",
            "not supported",
        ),
        (
            serde_json::json!({"routing_key": "attributes", "resolver": {"dns": {"hostname": "gw"}}}),
            "routing_attributes",
            "at least one",
        ),
        (
            serde_json::json!({"routing_key": "metric", "resolver": {"dns": {"hostname": "gw"}}}),
            "routing_key",
            "metric",
        ),
        (
            serde_json::json!({"resolver": {"dns": {"hostname": "gw"}}, "protocol": {"otlp": {"compression": "lz77"}}}),
            "protocol.otlp.compression",
            "lz77",
        ),
        (
            serde_json::json!({"resolver": {"dns": {"hostname": "gw"}}, "protocol": {"otlp": {"tls": {"cert_file": "/c"}}}}),
            "protocol.otlp.tls",
            "",
        ),
        (
            serde_json::json!({"resolver": {"dns": {"hostname": "gw"}}, "protocol": {"otlp": {"sending_queue": {"queue_size": 0}}}}),
            "protocol.otlp.sending_queue.queue_size",
            "",
        ),
        (
            serde_json::json!({"resolver": {"dns": {"hostname": "gw"}}, "protocol": {"zipkin": {}}}),
            "protocol",
            "zipkin",
        ),
        (
            serde_json::json!({"resolver": {"dns": {"hostname": "gw"}}, "sending_queue": {"enabled": true, "queue_size": 0}}),
            "sending_queue.queue_size",
            "",
        ),
    ] {
        let e = invalid(value.clone());
        assert_eq!(e.path, path, "{value}: {e}");
        assert!(e.message.contains(says), "{value}: {e}");
    }

    let c = parse(serde_json::json!({
        "routing_key": "service",
        "routing_attributes": ["x"],
        "protocol": {"otlp": {"endpoint": "ignored:4317", "tls": {"insecure": true}}},
        "resolver": {"dns": {"hostname": "gw"}},
    }))
    .unwrap();
    let warnings = c.validate().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.contains("protocol.otlp.endpoint is ignored")));
    assert!(warnings
        .iter()
        .any(|w| w.contains("routing_attributes is ignored")));

    // Where the collector's outcome differs: it refuses `resource` for
    // traces, and turns an exporter-level queue on once it is written.
    let c = parse(serde_json::json!({
        "routing_key": "resource",
        "sending_queue": {"queue_size": 100},
        "protocol": {"otlp": {"tls": {"insecure": true}}},
        "resolver": {"dns": {"hostname": "gw"}},
    }))
    .unwrap();
    assert!(!c.sending_queue.enabled);
    let warnings = c.validate().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings
        .iter()
        .any(|w| w.starts_with("routing_key resource")));
    assert!(warnings
        .iter()
        .any(|w| w.starts_with("sending_queue has settings but not enabled: true")));
    let c = parse(serde_json::json!({
        "sending_queue": {"enabled": true, "queue_size": 100},
        "protocol": {"otlp": {"tls": {"insecure": true}}},
        "resolver": {"dns": {"hostname": "gw"}},
    }))
    .unwrap();
    assert!(c.validate().unwrap().is_empty());
}
