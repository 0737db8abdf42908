//! Tail sampling end to end through the real binary on `config/gateway.yaml`
//! (its decision_wait shortened by environment variable): synthetic traces
//! whose spans are spread over several requests and connections go in over
//! OTLP/gRPC; what the in-test backend receives is checked trace by trace.

use crate::support;

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use support::gateway::{pipeline_to, Gateway};
use support::raw::{grpc, wait_for_metrics, TRACE_EXPORT};
use support::sink::Sink;
use support::traces::{
    assert_kept_whole_once, assert_share, make_trace, request, start_gateway, wait_for_kept, Kind,
    Trace,
};
use support::Rng;

/// The value of metric `name` with exactly these labels (in any order).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metric_opt(text, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in metrics:\n{text}"))
}

fn metric_opt(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric_name != name {
            return None;
        }
        let mut have: Vec<String> = label_text
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        have.sort();
        want.sort();
        (have == want).then(|| value.parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// Polls `/metrics` until `done` holds for its text; panics on timeout.
pub(crate) async fn metrics_until(
    addr: std::net::SocketAddr,
    mut done: impl FnMut(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply = support::raw::http(addr, http::Method::GET, "/metrics", &[], "").await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        if done(&text) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("metrics never settled:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keeps_error_traces_and_its_shares_whole() {
    let sink = Sink::start().await;
    let gw = start_gateway(&sink);
    let addr = gw.addr("otlp", "grpc");

    let mut rng = Rng(0x7a11);
    let traces: Vec<Trace> = (0..20_000)
        .map(|n| make_trace(&mut rng, n, 5..=20))
        .collect();
    let total_spans: usize = traces.iter().map(|t| t.spans.len()).sum();

    // Waves of 1000 traces; each trace's spans are split in three parts
    // sent in three requests, each over its own connection, concurrently.
    for wave in traces.chunks(1000) {
        let mut parts: [Vec<Span>; 3] = Default::default();
        for t in wave {
            let cut1 = t.spans.len() / 3;
            let cut2 = 2 * t.spans.len() / 3;
            // The root goes last, so it is not always first to arrive.
            parts[2].extend_from_slice(&t.spans[..cut1.max(1)]);
            parts[0].extend_from_slice(&t.spans[cut1.max(1)..cut2.max(1)]);
            parts[1].extend_from_slice(&t.spans[cut2.max(1)..]);
        }
        let sends = parts.into_iter().enumerate().map(|(i, spans)| {
            let body = request(&format!("svc-{i}"), spans);
            async move { grpc(addr, TRACE_EXPORT, &body, None).await }
        });
        for reply in futures::future::join_all(sends).await {
            assert_eq!(reply.code, 0, "{}", reply.message);
        }
    }

    let expected = wait_for_kept(&sink, &traces, Duration::from_secs(60)).await;
    // Once the gateway has exported or dropped every span it took in,
    // nothing more can arrive.
    support::raw::wait_until_accounted(
        gw.addr("telemetry", "metrics"),
        total_spans,
        Duration::from_secs(30),
    )
    .await;

    // Exactly the promised traces, each complete; nothing of the others;
    // the shares the policies imply, within 4 sigma.
    let got = assert_kept_whole_once(&sink, &traces);
    assert!(traces
        .iter()
        .filter(|t| t.kind == Kind::Error)
        .all(|t| got.contains(&t.id)));
    assert_share(&traces, &got, Kind::Normal, 0.05, 4.0);
    assert_share(&traces, &got, Kind::Slow, 0.25, 4.0);

    // The counters agree with what the backend saw.
    let kept_spans = sink.span_count();
    let dropped = total_spans - kept_spans;
    let text = wait_for_metrics(
        gw.addr("telemetry", "metrics"),
        &[&format!(
            "otelcol_exporter_sent_spans_total{{exporter=\"otlp/tempo\"}} {kept_spans}"
        )],
        Duration::from_secs(10),
    )
    .await;
    let global = "otelcol_processor_tail_sampling_global_count_traces_sampled_total";
    assert_eq!(
        metric(
            &text,
            global,
            &[("decision", "sampled"), ("sampled", "true")]
        ),
        expected as u64
    );
    assert_eq!(
        metric(
            &text,
            global,
            &[("decision", "not_sampled"), ("sampled", "false")]
        ),
        (traces.len() - expected) as u64
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_processor_tail_sampling_new_trace_id_received_total",
            &[]
        ),
        traces.len() as u64
    );
    assert_eq!(
        metric(
            &text,
            "otelcol_tracegate_dropped_spans_total",
            &[("component", "tail_sampling"), ("reason", "not_sampled")]
        ),
        dropped as u64
    );
    // Every policy votes on every trace; the errors policy samples exactly
    // the error traces.
    assert_eq!(
        metric(
            &text,
            "otelcol_processor_tail_sampling_count_traces_sampled_total",
            &[
                ("decision", "sampled"),
                ("policy", "errors"),
                ("sampled", "true")
            ]
        ),
        traces.iter().filter(|t| t.kind == Kind::Error).count() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_traces_stays_within_the_bounds() {
    let sink = Sink::start().await;
    let yaml = pipeline_to(
        sink.addr,
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  tail_sampling:
    decision_wait: 30s
    num_traces: 200
    max_buffered_bytes: 262144
    policies:
      - name: errors
        type: status_code
        status_code:
          status_codes: [ERROR]
"#,
        "otlp",
        "tail_sampling",
    );
    let gw = Gateway::start(&yaml);
    let addr = gw.addr("otlp", "grpc");
    let mut rng = Rng(0xf100d);
    let mut rss_after_warmup = 0;
    let rounds = 60;
    for round in 0..rounds {
        let spans: Vec<Span> = (0..2000)
            .flat_map(|n| {
                make_trace(&mut rng, round * 2000 + n, 5..=20)
                    .spans
                    .into_iter()
                    .take(2)
            })
            .collect();
        let reply = grpc(addr, TRACE_EXPORT, &request("flood", spans), None).await;
        assert_eq!(reply.code, 0, "{}", reply.message);
        if round == 10 {
            rss_after_warmup = gw.memory_kib("VmRSS");
        }
    }
    let rss = gw.memory_kib("VmRSS");
    // 120 000 traces went in; at most 200 (and 256 KiB of spans) are held.
    assert!(
        rss < rss_after_warmup + 32 * 1024,
        "RSS grew from {rss_after_warmup} KiB to {rss} KiB"
    );
    let early = "otelcol_tracegate_tail_sampling_early_decisions_total";
    let counted = |text: &str| {
        let by = |reason| {
            metric_opt(
                text,
                early,
                &[("processor", "tail_sampling"), ("reason", reason)],
            )
            .unwrap_or(0)
        };
        let pending = metric_opt(
            text,
            "otelcol_tracegate_tail_sampling_pending_traces",
            &[("processor", "tail_sampling")],
        )
        .unwrap_or(0);
        (by("num_traces"), by("max_buffered_bytes"), pending)
    };
    let text = metrics_until(gw.addr("telemetry", "metrics"), |text| {
        let (a, b, pending) = counted(text);
        a + b + pending == 120_000
    })
    .await;
    let (by_count, by_bytes, pending) = counted(&text);
    assert!(pending <= 200, "{pending} traces pending");
    assert!(
        by_count > 0,
        "num_traces made room: {by_count} + {by_bytes}"
    );
}
