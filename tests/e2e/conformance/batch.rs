//! Conformance with the collector's `batch` processor: the examples and
//! rules of its README (and the split rules of its tests), each a case of
//! this table, run through the real binary. A case is one `batch` block, the
//! requests sent to it in order (their span counts) and the batches the
//! collector sends on (their span counts). Each case has its own pipeline
//! and backend in one gateway.

use std::time::Duration;

use super::{config_per_case, indent, CasePipeline};
use crate::support;
use support::gateway::{pipeline_to, validate, Gateway};
use support::raw::{grpc, TRACE_EXPORT};
use support::sink::Sink;
use support::spans_request;

struct Case {
    /// Also the pipeline's name: `[a-z0-9_]` only.
    name: &'static str,
    /// The processor's settings, one `key: value` a line.
    settings: &'static str,
    /// The span count of each request, sent one after the other.
    requests: &'static [u64],
    /// The span counts of the batches the collector sends, in any order.
    sent: &'static [usize],
}

/// The table. Each entry says where in the collector the fact comes from.
fn cases() -> Vec<Case> {
    vec![
        // README: "`send_batch_size` acts as a trigger and does not affect
        // the size of the batch" (its `batch/2` example, scaled): once 5
        // spans are pending everything pending goes, 7 at once.
        Case {
            name: "size_is_a_trigger",
            settings: "send_batch_size: 5\ntimeout: 10s",
            requests: &[3, 4],
            sent: &[7],
        },
        // README: "`send_batch_max_size` ... ensures that larger batches are
        // split into smaller units", with `timeout: 0s` "without introducing
        // any artificial delays" (its second example, 10000 over the default
        // send_batch_size of 8192, scaled: it must be at least
        // send_batch_size).
        Case {
            name: "max_size_splits",
            settings: "send_batch_size: 3\nsend_batch_max_size: 4\ntimeout: 0s",
            requests: &[10],
            sent: &[4, 4, 2],
        },
        // README: with `timeout` zero "send_batch_size is ignored as data
        // will be sent immediately": requests pass on as they are.
        Case {
            name: "zero_timeout_passes_on",
            settings: "send_batch_size: 2\ntimeout: 0s",
            requests: &[3, 5],
            sent: &[3, 5],
        },
        // The collector's shard loop: at the trigger it sends full
        // `send_batch_max_size` batches while at least `send_batch_size`
        // spans are pending; the remainder (1 span) waits for more or for
        // the timer.
        Case {
            name: "remainder_waits",
            settings: "send_batch_size: 4\nsend_batch_max_size: 6\ntimeout: 1h",
            requests: &[13],
            sent: &[6, 6],
        },
        // README: "`timeout` ... after which a batch will be sent regardless
        // of size": two requests far below send_batch_size leave as one.
        Case {
            name: "timeout_sends",
            settings: "send_batch_size: 1000\ntimeout: 300ms",
            requests: &[3, 3],
            sent: &[6],
        },
    ]
}

fn config(cases: &[Case], sinks: &[Sink]) -> String {
    let mut exporters = String::from("exporters:\n");
    let mut pipelines = Vec::new();
    for (case, sink) in cases.iter().zip(sinks) {
        let name = case.name;
        exporters.push_str(&format!(
            "  otlp/{name}:\n    endpoint: {}\n    tls:\n      insecure: true\n",
            sink.addr
        ));
        pipelines.push(CasePipeline {
            name,
            settings: indent(case.settings, "    "),
            exporter: format!("otlp/{name}"),
        });
    }
    config_per_case(&pipelines, "batch", &exporters)
}

/// The span count of each request `sink` got, sorted.
fn batches(sink: &Sink) -> Vec<usize> {
    let mut sizes: Vec<usize> = sink
        .requests()
        .iter()
        .map(|r| {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum()
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sends_the_batches_the_collector_sends() {
    let cases = cases();
    let mut sinks = Vec::new();
    for _ in &cases {
        sinks.push(Sink::start().await);
    }
    let gw = Gateway::start(&config(&cases, &sinks));

    let sends = cases.iter().map(|case| {
        let addr = gw.addr(&format!("otlp/{}", case.name), "grpc");
        async move {
            for &n in case.requests {
                let reply = grpc(addr, TRACE_EXPORT, &spans_request(case.name, n), None).await;
                assert_eq!(reply.code, 0, "{}: {}", case.name, reply.message);
            }
        }
    });
    futures::future::join_all(sends).await;
    for (case, sink) in cases.iter().zip(&sinks) {
        let spans: usize = case.sent.iter().sum();
        assert!(
            sink.wait_for_spans(spans, Duration::from_secs(10)).await,
            "{}: {} of {spans} spans arrived",
            case.name,
            sink.span_count()
        );
    }
    // The longest timer (300 ms) has fired by now: nothing more is due, and
    // a remainder that must wait has not left.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut wrong = Vec::new();
    for (case, sink) in cases.iter().zip(&sinks) {
        let mut want = case.sent.to_vec();
        want.sort_unstable();
        let got = batches(sink);
        if got != want {
            wrong.push(format!(
                "{}: sent {got:?}, the collector sends {want:?}",
                case.name
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "batches differing from the collector's:\n{}",
        wrong.join("\n")
    );
}

/// README "Batching and client metadata": `metadata_keys` batches per
/// client metadata, which does not reach tracegate's processors; its
/// example is refused, naming the key, rather than batched otherwise.
#[test]
fn the_readmes_metadata_batching_is_refused_naming_the_key() {
    // Validation connects to nothing; any address will do.
    let nowhere = "127.0.0.1:9".parse().unwrap();
    let yaml = pipeline_to(
        nowhere,
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  batch:
    # batch data by tenant-id
    metadata_keys:
    - tenant_id

    # limit to 10 batcher processes before raising errors
    metadata_cardinality_limit: 10
"#,
        "otlp",
        "batch",
    );
    let (valid, stdout, stderr) = validate(&yaml);
    assert!(!valid, "{stdout}");
    assert!(
        stderr.contains("processors::batch::metadata_keys")
            && stderr.contains("does not batch per metadata"),
        "{stderr}"
    );
}
