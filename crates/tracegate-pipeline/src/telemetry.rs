//! Self-telemetry: metric names in the collector's dialect
//! (docs/architecture.md, "Self-telemetry").
//! Names here carry no namespace; the Prometheus endpoint prefixes them with
//! the configured one (`otelcol` by default), so `receiver_accepted_spans`
//! is served as `otelcol_receiver_accepted_spans`. Counters are registered
//! once per component and held as handles on the hot path.

/// Metric names, without namespace. Labels: receivers use `receiver` (the
/// component id) and `transport` (`grpc`, `http`); exporters `exporter`;
/// processors `processor`.
pub mod names {
    pub const RECEIVER_ACCEPTED_SPANS: &str = "receiver_accepted_spans";
    pub const RECEIVER_REFUSED_SPANS: &str = "receiver_refused_spans";
    /// Spans a receiver decoded and then lost itself (served at zero; see
    /// `receiver/counters.rs`).
    pub const RECEIVER_FAILED_SPANS: &str = "receiver_failed_spans";
    /// Requests handed to the pipeline; label `outcome` (`success`,
    /// `refused`, `failure`).
    pub const RECEIVER_REQUESTS: &str = "receiver_requests";
    /// Requests rejected before any span could be counted (malformed, too
    /// large, wrong content type); label `reason`.
    pub const RECEIVER_REJECTED_REQUESTS: &str = "receiver_rejected_requests";

    pub const EXPORTER_SENT_SPANS: &str = "exporter_sent_spans";
    pub const EXPORTER_SEND_FAILED_SPANS: &str = "exporter_send_failed_spans";
    pub const EXPORTER_ENQUEUE_FAILED_SPANS: &str = "exporter_enqueue_failed_spans";
    pub const EXPORTER_QUEUE_SIZE: &str = "exporter_queue_size";
    pub const EXPORTER_QUEUE_CAPACITY: &str = "exporter_queue_capacity";

    pub const PROCESSOR_BATCH_BATCH_SEND_SIZE: &str = "processor_batch_batch_send_size";
    /// Encoded bytes (OTLP protobuf) of each batch sent on.
    pub const PROCESSOR_BATCH_BATCH_SEND_SIZE_BYTES: &str = "processor_batch_batch_send_size_bytes";
    pub const PROCESSOR_BATCH_BATCH_SIZE_TRIGGER_SEND: &str =
        "processor_batch_batch_size_trigger_send";
    pub const PROCESSOR_BATCH_TIMEOUT_TRIGGER_SEND: &str = "processor_batch_timeout_trigger_send";
    pub const PROCESSOR_BATCH_METADATA_CARDINALITY: &str = "processor_batch_metadata_cardinality";
    /// Every processor, labelled `processor` and `otel_signal`
    /// (`processor/instrumented.rs`): spans in, spans handed on, and the
    /// seconds each batch took in the processor itself.
    pub const PROCESSOR_INCOMING_ITEMS: &str = "processor_incoming_items";
    pub const PROCESSOR_OUTGOING_ITEMS: &str = "processor_outgoing_items";
    pub const PROCESSOR_INTERNAL_DURATION: &str = "processor_internal_duration";
    pub const PROCESSOR_MEMORY_LIMITER_REFUSED_SPANS: &str =
        "processor_memory_limiter_refused_spans";
    /// tracegate's own, per memory limiter (label `processor`): the memory
    /// it measured at its last check and its two limits, in bytes, so an
    /// alert can fire before it starts refusing.
    pub const MEMORY_LIMITER_USED_BYTES: &str = "tracegate_memory_limiter_used_bytes";
    pub const MEMORY_LIMITER_SOFT_LIMIT_BYTES: &str = "tracegate_memory_limiter_soft_limit_bytes";
    pub const MEMORY_LIMITER_HARD_LIMIT_BYTES: &str = "tracegate_memory_limiter_hard_limit_bytes";
    /// The collector's: the process's resident set in bytes, measured when
    /// `/metrics` is read.
    pub const PROCESS_MEMORY_RSS: &str = "process_memory_rss";

    /// The `loadbalancing` exporter and its resolvers, as the collector's:
    /// resolutions by `resolver` and `success`; backends in use and
    /// changes of the list, by `resolver`; per backend (`endpoint`), the
    /// time to hand it a batch (milliseconds) and the outcomes by `success`.
    pub const LOADBALANCER_NUM_RESOLUTIONS: &str = "loadbalancer_num_resolutions";
    pub const LOADBALANCER_NUM_BACKENDS: &str = "loadbalancer_num_backends";
    pub const LOADBALANCER_NUM_BACKEND_UPDATES: &str = "loadbalancer_num_backend_updates";
    pub const LOADBALANCER_BACKEND_LATENCY: &str = "loadbalancer_backend_latency";
    pub const LOADBALANCER_BACKEND_OUTCOME: &str = "loadbalancer_backend_outcome";

    /// tracegate's own: spans that left the pipeline other than by export,
    /// labelled by `component` and `reason` (docs/architecture.md,
    /// "Delivery and drop accounting").
    pub const DROPPED_SPANS: &str = "tracegate_dropped_spans";
    /// tracegate's own, per exporter (label `exporter`): spans a pipeline
    /// refused (retryably) because the exporter's memory queue held half of
    /// its byte limit or more (`exporter/backpressure.rs`).
    pub const BACKPRESSURE_REFUSED_SPANS: &str = "tracegate_backpressure_refused_spans";
    /// tracegate's own: records a storage found damaged and skipped, by
    /// `storage`, `client` and `reason` (`corrupt`).
    pub const STORAGE_LOST_RECORDS: &str = "tracegate_storage_lost_records";
    /// tracegate's own: bytes a storage client's files take on disk, by
    /// `storage` and `client`.
    pub const STORAGE_BYTES: &str = "tracegate_storage_bytes";
    /// tracegate's own: bytes a storage client appended (framing included).
    pub const STORAGE_WRITTEN_BYTES: &str = "tracegate_storage_written_bytes";
    /// tracegate's own: fsync/fdatasync calls a storage client made.
    pub const STORAGE_SYNCS: &str = "tracegate_storage_syncs";
}

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Bucket bounds for the size histograms (`processor_batch_batch_send_size`),
/// the collector's defaults.
const SIZE_BUCKETS: &[f64] = &[
    10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
    6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0,
];

/// Bucket bounds, in bytes, for `processor_batch_batch_send_size_bytes`,
/// the collector's: powers of two from 128 B to 16 MiB.
const BYTES_BUCKETS: &[f64] = &[
    128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0, 131072.0,
    262144.0, 524288.0, 1048576.0, 2097152.0, 4194304.0, 8388608.0, 16777216.0,
];

/// Bucket bounds, in seconds, for `processor_internal_duration`: a
/// processor's own time per batch is microseconds to milliseconds, so the
/// size buckets above would put every batch in the first.
const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds, in milliseconds, for `loadbalancer_backend_latency`:
/// OpenTelemetry's default histogram bounds, which the collector's
/// loadbalancing exporter records with.
const LATENCY_MS_BUCKETS: &[f64] = &[
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Installs the process-wide Prometheus recorder. Counters are rendered with
/// the `_total` suffix, as the collector's Prometheus endpoint does.
/// Installing twice (tests) returns a handle to a fresh, unused recorder
/// rather than failing.
pub fn install_recorder() -> PrometheusHandle {
    let builder = || {
        PrometheusBuilder::new()
            .with_recommended_naming(true)
            .set_buckets(SIZE_BUCKETS)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Full(names::PROCESSOR_INTERNAL_DURATION.into()),
                DURATION_BUCKETS,
            )
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Full(names::PROCESSOR_BATCH_BATCH_SEND_SIZE_BYTES.into()),
                BYTES_BUCKETS,
            )
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Full(names::LOADBALANCER_BACKEND_LATENCY.into()),
                LATENCY_MS_BUCKETS,
            )
            .expect("bucket list is not empty")
    };
    match builder().install_recorder() {
        Ok(handle) => handle,
        Err(_) => builder().build_recorder().handle(),
    }
}

/// Prefixes every metric in a Prometheus text exposition with `namespace_`.
pub fn with_namespace(exposition: &str, namespace: &str) -> String {
    let mut out = String::with_capacity(exposition.len() + exposition.len() / 8);
    for line in exposition.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)))
        {
            out.push_str(rest.0);
            push_prefixed(&mut out, rest.1, namespace);
        } else if line.is_empty() || line.starts_with('#') {
            out.push_str(line);
        } else {
            push_prefixed(&mut out, line, namespace);
        }
        out.push('\n');
    }
    out
}

fn push_prefixed(out: &mut String, name_and_rest: &str, namespace: &str) {
    if !namespace.is_empty() {
        out.push_str(namespace);
        out.push('_');
    }
    out.push_str(name_and_rest);
}

/// The `/metrics` endpoint.
pub struct MetricsServer {
    pub address: SocketAddr,
}

impl MetricsServer {
    /// Binds `address` now (so a port in use is a startup error) and serves
    /// `GET /metrics` until `shutdown` is cancelled.
    pub async fn start(
        address: &str,
        namespace: String,
        handle: PrometheusHandle,
        shutdown: CancellationToken,
    ) -> std::io::Result<MetricsServer> {
        // As Go's net.Listen: `localhost:8888` binds 127.0.0.1, not [::1].
        let listener = crate::receiver::bind(address).await?;
        let bound = listener.local_addr()?;
        let state = Arc::new((namespace, handle));
        crate::http_server::serve_plain(listener, shutdown, move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(metrics_response(&req, &state.0, &state.1)) }
        });
        Ok(MetricsServer { address: bound })
    }
}

fn metrics_response<B>(
    req: &Request<B>,
    namespace: &str,
    handle: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header(
                http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    if let Some(rss) = crate::memory::resident_bytes() {
        metrics::gauge!(names::PROCESS_MEMORY_RSS).set(rss as f64);
    }
    reply(StatusCode::OK, with_namespace(&handle.render(), namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_every_metric_line() {
        let text = "# HELP receiver_accepted_spans_total spans\n# TYPE receiver_accepted_spans_total counter\nreceiver_accepted_spans_total{receiver=\"otlp\"} 3\n\n";
        let out = with_namespace(text, "otelcol");
        assert_eq!(
            out,
            "# HELP otelcol_receiver_accepted_spans_total spans\n# TYPE otelcol_receiver_accepted_spans_total counter\notelcol_receiver_accepted_spans_total{receiver=\"otlp\"} 3\n\n"
        );
    }
    /// The collector's default `localhost:8888` is IPv4 loopback, as Go's
    /// net.Listen picks it, so a scrape of 127.0.0.1 finds it.
    #[tokio::test]
    async fn localhost_binds_ipv4_loopback() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let stop = CancellationToken::new();
        let server = MetricsServer::start("localhost:0", "otelcol".into(), handle, stop.clone())
            .await
            .unwrap();
        assert_eq!(
            server.address.ip(),
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        );
        stop.cancel();
    }
}
