//! A receiver's self-telemetry, registered once per receiver and transport
//! and held as handles (docs/architecture.md, "Self-telemetry"), plus the
//! hand-over to the pipeline that the accepted/refused counters describe.
//! Shared by every receiver so that the same metric names, labels and
//! accounting apply to all of them.

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

const REASON_COUNT: usize = 7;

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
    /// Registers the span counters and one rejected-requests counter per
    /// reason in `reasons`.
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
    /// refused. An empty batch is accepted without bothering the pipeline,
    /// as the collector does.
    pub async fn export(&self, next: &NextConsumer, batch: SpanBatch) -> Result<(), ConsumeError> {
        let spans = batch.len() as u64;
        if spans == 0 {
            return Ok(());
        }
        match next.consume(batch).await {
            Ok(()) => {
                self.accepted_spans.increment(spans);
                Ok(())
            }
            Err(e) => {
                self.refused_spans.increment(spans);
                Err(e)
            }
        }
    }
}
