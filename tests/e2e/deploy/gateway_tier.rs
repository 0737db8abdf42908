//! The gateway tier as the manifests wire it, with the shipped configs:
//! one agent on `config/agent.yaml` and two gateways on
//! `config/gateway.yaml`, real processes on loopback. Agents and gateways
//! learn the members from the `k8s` resolver on the headless Service
//! `tracegate-gateway-headless`, here an in-test API server that speaks
//! the EndpointSlice list and watch protocol; each gateway has its own
//! 127.0.0.N and one shared port, as pods have their own IPs behind one
//! container port, and exports to its own backend. Only what a cluster
//! sets differently is overridden: the environment the manifests set
//! (POD_IP, K8S_NODE_NAME), the variables the configs offer, and the
//! agent's listeners (0.0.0.0 and fixed ports in the shipped file).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{status, Status};
use tokio::time::Instant;
use tracegate_pipeline::kube::fake::{Endpoint, FakeKubeApi};
use tracegate_pipeline::membership::hash::{trace_id_key, Rendezvous};
use tracegate_pipeline::membership::members;

use super::read;
use crate::support::gateway::Gateway;
use crate::support::kube;
use crate::support::raw::{grpc, http, TRACE_EXPORT};
use crate::support::sink::Sink;
use crate::support::traces::{make_trace, request, Trace};
use crate::support::Rng;

const TRACES: usize = 40;

/// A port free on 127.0.0.2, which each gateway then uses on its own
/// address.
fn shared_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is usable");
    probe.local_addr().unwrap().port()
}

/// Starts `config` with `args` and `envs` on a thread of its own (startup
/// waits for the resolver's first list).
fn start(
    config: &'static str,
    args: Vec<String>,
    envs: Vec<(&'static str, String)>,
) -> std::thread::JoinHandle<Gateway> {
    std::thread::spawn(move || {
        let yaml = read(config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Gateway::start_with(&yaml, &args, &envs)
    })
}

async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let reply = http(
        gw.addr("telemetry", "metrics"),
        http::Method::GET,
        "/metrics",
        &[],
        "",
    )
    .await;
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Error traces (the gateways keep every one), each sent to the agent in
/// three requests.
fn traffic() -> Vec<Trace> {
    let mut rng = Rng(0x6a7e_3a11);
    (0..TRACES)
        .map(|n| {
            let mut t = make_trace(&mut rng, n, 6..=8);
            let last = t.spans.len() - 1;
            t.spans[last].status = Some(Status {
                code: status::StatusCode::Error as i32,
                message: String::new(),
            });
            t
        })
        .collect()
}

/// Every span of a trace that enters an agent reaches the one gateway
/// that owns its trace id, as agent and gateways compute it from the same
/// members, and is exported there, whole and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_routes_each_trace_whole_to_one_gateway_of_the_tier() {
    let api = FakeKubeApi::start().await;
    let sa_dir = tempfile::tempdir().unwrap();
    let k8s = kube::env(&api.url(), &kube::service_account_dir(&sa_dir));
    let port = shared_port();
    let ips = ["127.0.0.2", "127.0.0.3"];
    api.set_endpoints(
        "tracegate",
        "tracegate-gateway-headless",
        &ips.map(Endpoint::ready),
    );
    // What the agent's k8s_api detector reads: its node, and kube-system.
    api.put_object(
        "/api/v1/nodes/node-1",
        serde_json::json!({"kind": "Node", "metadata": {"name": "node-1", "uid": "node-1-uid"}}),
    );
    api.put_object(
        "/api/v1/namespaces/kube-system",
        serde_json::json!({"kind": "Namespace", "metadata": {"name": "kube-system", "uid": "cluster-uid"}}),
    );
    let sinks = [Sink::start().await, Sink::start().await];

    let starting: Vec<_> = (0..2)
        .map(|g| {
            let mut envs = k8s.to_vec();
            envs.extend([
                ("POD_IP", ips[g].to_string()),
                ("TRACEGATE_GATEWAY_PORT", port.to_string()),
                ("TRACEGATE_OTLP_GRPC_ENDPOINT", format!("{}:{port}", ips[g])),
                ("TRACEGATE_OTLP_HTTP_ENDPOINT", "127.0.0.1:0".into()),
                ("TRACEGATE_HEALTH_ENDPOINT", "127.0.0.1:0".into()),
                ("TRACEGATE_METRICS_ADDRESS", "127.0.0.1:0".into()),
                ("TRACEGATE_TEMPO_ENDPOINT", sinks[g].addr.to_string()),
                ("TRACEGATE_DECISION_WAIT", "1s".into()),
                ("TRACEGATE_LOG_ENCODING", "json".into()),
            ]);
            start("config/gateway.yaml", Vec::new(), envs)
        })
        .collect();
    let gateways: Vec<Gateway> = starting
        .into_iter()
        .map(|s| s.join().expect("a gateway started"))
        .collect();
    let mut envs = k8s.to_vec();
    envs.extend([
        ("K8S_NODE_NAME", "node-1".to_string()),
        ("TRACEGATE_GATEWAY_PORT", port.to_string()),
        // Every trace, so the test knows what must arrive.
        ("TRACEGATE_HEAD_SAMPLING_PERCENTAGE", "100".into()),
    ]);
    let args = [
        "--set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:0",
        "--set=receivers.otlp.protocols.http.endpoint=127.0.0.1:0",
        "--set=extensions.health_check.endpoint=127.0.0.1:0",
        "--set=service.telemetry.metrics.address=127.0.0.1:0",
        "--set=service.telemetry.logs.encoding=json",
    ]
    .map(String::from)
    .to_vec();
    let agent = start("config/agent.yaml", args, envs)
        .join()
        .expect("the agent started");

    // Both sides see the two gateways, and each gateway sees itself among
    // them (POD_IP as the advertised endpoint).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let backends = metric(
            &agent,
            "otelcol_loadbalancer_num_backends{resolver=\"k8s\"}",
        )
        .await;
        let mut fleet_seen = true;
        for gw in &gateways {
            let member =
                "otelcol_tracegate_tail_sampling_handover_is_member{processor=\"tail_sampling\"}";
            fleet_seen &= metric(gw, member).await == Some(1.0);
        }
        if backends == Some(2.0) && fleet_seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent sees {backends:?} backends; gateways members: {fleet_seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Each trace in three requests (its first spans, the rest, the root),
    // mixed with other traces' parts.
    let traces = traffic();
    let agent_addr = agent.addr("otlp", "grpc");
    for part in 0..3 {
        let spans: Vec<_> = traces
            .iter()
            .flat_map(|t| match part {
                0 => t.spans[1..3].to_vec(),
                1 => t.spans[3..].to_vec(),
                _ => t.spans[..1].to_vec(),
            })
            .collect();
        let reply = grpc(agent_addr, TRACE_EXPORT, &request("checkout", spans), None).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
    }

    let total: usize = traces.iter().map(|t| t.spans.len()).sum();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sinks.iter().map(Sink::span_count).sum::<usize>() < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} spans exported",
            sinks.iter().map(Sink::span_count).sum::<usize>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let endpoints = ips.map(|ip| format!("{ip}:{port}"));
    let fleet = Rendezvous::new(members(endpoints.iter().cloned()));
    let mut exported_by: HashMap<[u8; 16], usize> = HashMap::new();
    for (g, sink) in sinks.iter().enumerate() {
        let mut seen = HashSet::new();
        for s in sink.spans() {
            let id: [u8; 16] = s.span.trace_id.as_slice().try_into().unwrap();
            assert!(seen.insert(s.span.span_id.clone()), "a span exported twice");
            let at = *exported_by.entry(id).or_insert(g);
            assert_eq!(at, g, "trace {id:02x?} split between the gateways");
            // The agent's resource detection reached the gateway too.
            assert_eq!(
                s.resource_attr("k8s.node.uid"),
                Some(&Value::StringValue("node-1-uid".into())),
                "{:?}",
                s.resource
            );
        }
    }
    for t in &traces {
        let g = exported_by
            .get(&t.id)
            .unwrap_or_else(|| panic!("trace {:02x?} not exported", t.id));
        let owner = &fleet.members()[fleet.owner(trace_id_key(&t.id)).expect("members")];
        assert_eq!(
            &endpoints[*g], owner,
            "trace {:02x?} went to another gateway",
            t.id
        );
        let got = sinks[*g]
            .spans()
            .iter()
            .filter(|s| s.span.trace_id == t.id)
            .count();
        assert_eq!(got, t.spans.len(), "trace {:02x?} whole", t.id);
    }
    for (g, sink) in sinks.iter().enumerate() {
        assert!(sink.span_count() > 0, "gateway {g} got no trace");
    }
}
