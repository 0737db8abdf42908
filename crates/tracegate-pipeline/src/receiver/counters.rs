//! A receiver's self-telemetry, registered once per receiver and transport
//! and held as handles (docs/architecture.md, "Self-telemetry"), plus the
//! hand-over to the pipeline that the accepted/refused counters describe.
//! Shared by every receiver so that the same metric names, labels and
//! accounting apply to all of them.
//!
//! Failed and refused are told apart as the collector does with its
//! receiver and pipeline metrics on (`receiverhelper.newReceiverMetrics`,
//! `telemetry.newPipelineTelemetry`): an error the pipeline returns is a
//! downstream error, so its spans are *refused* and the request's outcome
//! is `refused`, whether the pipeline will take them later (overload) or
//! never (rejected downstream). *Failed* is for spans a receiver decoded
//! and then lost itself; tracegate's receivers hand every decoded batch to
//! the pipeline, so `receiver_failed_spans` and `outcome="failure"` are
//! served, as the collector serves them, and stay at zero. Requests turned
//! away before any span was decoded are not requests in the collector's
//! count either; tracegate counts them in `receiver_rejected_requests`.

use metrics::Counter;

use crate::consumer::{ConsumeError, NextConsumer};
use crate::telemetry::names;
use tracegate_model::SpanBatch;

/// Why a request was turned away before its spans could be counted
/// (label `reason` of `receiver_rejected_requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectReason {
    Malformed,
    TooLarge,
    UnsupportedMediaType,
    UnsupportedEncoding,
    MethodNotAllowed,
    NotFound,
    /// UDP only: the packet queue was full.
    QueueFull,
    /// The protocol's `auth` refused the request's credentials.
    Unauthenticated,
}

/// Reasons the OTLP servers (and the Jaeger gRPC server, which shares their
/// gRPC plumbing) can give: they route by path and method.
pub(crate) const OTLP_REASONS: &[RejectReason] = &[
    RejectReason::Malformed,
    RejectReason::TooLarge,
    RejectReason::UnsupportedMediaType,
    RejectReason::UnsupportedEncoding,
    RejectReason::MethodNotAllowed,
    RejectReason::NotFound,
];

/// Reasons the Zipkin and Jaeger thrift servers can give: they take any
/// path, and the UDP ones can drop packets on a full queue.
pub(crate) const INGEST_REASONS: &[RejectReason] = &[
    RejectReason::Malformed,
    RejectReason::TooLarge,
    RejectReason::UnsupportedMediaType,
    RejectReason::UnsupportedEncoding,
    RejectReason::QueueFull,
];

const REASON_COUNT: usize = 8;

impl RejectReason {
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::UnsupportedEncoding => "unsupported_encoding",
            RejectReason::MethodNotAllowed => "method_not_allowed",
            RejectReason::NotFound => "not_found",
            RejectReason::QueueFull => "queue_full",
            RejectReason::Unauthenticated => "unauthenticated",
        }
    }
}

/// The `outcome` of `receiver_requests`, as the collector labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Refused,
    Failure,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Success, Outcome::Refused, Outcome::Failure];

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Refused => "refused",
            Outcome::Failure => "failure",
        }
    }
}

/// Counters of one receiver on one transport.
#[derive(Clone)]
pub(crate) struct TransportCounters {
    receiver: String,
    transport: &'static str,
    accepted_spans: Counter,
    refused_spans: Counter,
    /// Registered so that the series exists, as in the collector; see the
    /// module docs for why nothing increments it.
    _failed_spans: Counter,
    /// Requests that reached the hand-over, indexed by `Outcome as usize`.
    requests: [Counter; 3],
    /// Indexed by `RejectReason as usize`; only the reasons the transport
    /// was registered with are present, so that the exported series (zeros
    /// included) are exactly those the transport can produce.
    rejected_requests: [Option<Counter>; REASON_COUNT],
}

fn rejected_counter(receiver: &str, transport: &'static str, reason: RejectReason) -> Counter {
    metrics::counter!(
        names::RECEIVER_REJECTED_REQUESTS,
        "receiver" => receiver.to_string(),
        "transport" => transport,
        "reason" => reason.label()
    )
}

impl TransportCounters {
    /// [`register`](Self::register), with `unauthenticated` among the
    /// reasons when the transport checks credentials (`auth`).
    pub fn register_with_auth(
        receiver: &str,
        transport: &'static str,
        reasons: &[RejectReason],
        auth: bool,
    ) -> Self {
        let mut all = reasons.to_vec();
        if auth {
            all.push(RejectReason::Unauthenticated);
        }
        Self::register(receiver, transport, &all)
    }

    /// Registers the span and request counters and one rejected-requests
    /// counter per reason in `reasons`.
    pub fn register(receiver: &str, transport: &'static str, reasons: &[RejectReason]) -> Self {
        let mut rejected_requests: [Option<Counter>; REASON_COUNT] = Default::default();
        for &reason in reasons {
            rejected_requests[reason as usize] =
                Some(rejected_counter(receiver, transport, reason));
        }
        TransportCounters {
            receiver: receiver.to_string(),
            transport,
            accepted_spans: metrics::counter!(
                names::RECEIVER_ACCEPTED_SPANS,
                "receiver" => receiver.to_string(),
                "transport" => transport
            ),
            refused_spans: metrics::counter!(
                names::RECEIVER_REFUSED_SPANS,
                "receiver" => receiver.to_string(),
                "transport" => transport
            ),
            _failed_spans: metrics::counter!(
                names::RECEIVER_FAILED_SPANS,
                "receiver" => receiver.to_string(),
                "transport" => transport
            ),
            requests: Outcome::ALL.map(|outcome| {
                metrics::counter!(
                    names::RECEIVER_REQUESTS,
                    "receiver" => receiver.to_string(),
                    "transport" => transport,
                    "outcome" => outcome.label()
                )
            }),
            rejected_requests,
        }
    }

    pub fn rejected(&self, reason: RejectReason) {
        match &self.rejected_requests[reason as usize] {
            Some(counter) => counter.increment(1),
            // A reason the transport was not registered with is still
            // counted rather than lost.
            None => rejected_counter(&self.receiver, self.transport, reason).increment(1),
        }
    }

    /// Hands `batch` to the pipeline and counts its spans as accepted or
    /// refused, and the request by its outcome. An empty batch is accepted
    /// without bothering the pipeline or counting a request, as the
    /// collector's OTLP receiver does.
    pub async fn export(&self, next: &NextConsumer, batch: SpanBatch) -> Result<(), ConsumeError> {
        let spans = batch.len() as u64;
        if spans == 0 {
            return Ok(());
        }
        match next.consume(batch).await {
            Ok(()) => {
                self.accepted_spans.increment(spans);
                self.requests[Outcome::Success as usize].increment(1);
                Ok(())
            }
            // Every error the pipeline returns is downstream of the
            // receiver: refused, not failed (module docs).
            Err(e) => {
                self.refused_spans.increment(spans);
                self.requests[Outcome::Refused as usize].increment(1);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tracegate_model::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::consumer::Consumer;

    /// Answers every batch with `answer`.
    struct Answer(Result<(), ConsumeError>);

    #[async_trait]
    impl Consumer for Answer {
        async fn consume(&self, _: SpanBatch) -> Result<(), ConsumeError> {
            self.0.clone()
        }
    }

    fn spans(n: usize) -> SpanBatch {
        SpanBatch::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    /// The collector's receiver metrics: accepted and refused spans, failed
    /// spans served at zero, and one request per hand-over labelled with
    /// its outcome; a pipeline error of either kind is `refused`.
    #[tokio::test]
    async fn requests_are_counted_by_outcome_and_pipeline_errors_are_refusals() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counters = metrics::with_local_recorder(&recorder, || {
            TransportCounters::register("zipkin/in", "http", INGEST_REASONS)
        });
        let ok: NextConsumer = Arc::new(Answer(Ok(())));
        let overloaded: NextConsumer = Arc::new(Answer(Err(ConsumeError::refused("full"))));
        let rejected: NextConsumer = Arc::new(Answer(Err(ConsumeError::rejected("bad"))));
        counters.export(&ok, spans(3)).await.unwrap();
        counters.export(&ok, spans(2)).await.unwrap();
        counters.export(&ok, spans(0)).await.unwrap();
        counters.export(&overloaded, spans(4)).await.unwrap_err();
        counters.export(&rejected, spans(5)).await.unwrap_err();

        let text = handle.render();
        let value = |name: &str, extra: &str| -> Option<u64> {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("{name}{{"))
                        && l.contains("receiver=\"zipkin/in\"")
                        && l.contains("transport=\"http\"")
                        && l.contains(extra)
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        assert_eq!(value(names::RECEIVER_ACCEPTED_SPANS, ""), Some(5), "{text}");
        assert_eq!(value(names::RECEIVER_REFUSED_SPANS, ""), Some(9));
        assert_eq!(value(names::RECEIVER_FAILED_SPANS, ""), Some(0));
        let requests =
            |outcome: &str| value(names::RECEIVER_REQUESTS, &format!("outcome=\"{outcome}\""));
        assert_eq!(requests("success"), Some(2));
        assert_eq!(requests("refused"), Some(2));
        assert_eq!(requests("failure"), Some(0));
    }
}
