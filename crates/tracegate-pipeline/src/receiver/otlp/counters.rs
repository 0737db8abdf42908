//! The receiver's self-telemetry, registered once per receiver and
//! transport and held as handles (DESIGN.md §7), plus the hand-over to the
//! pipeline that the accepted/refused counters describe.

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
}

impl RejectReason {
    const ALL: [RejectReason; 6] = [
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::UnsupportedMediaType,
        RejectReason::UnsupportedEncoding,
        RejectReason::MethodNotAllowed,
        RejectReason::NotFound,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::UnsupportedEncoding => "unsupported_encoding",
            RejectReason::MethodNotAllowed => "method_not_allowed",
            RejectReason::NotFound => "not_found",
        }
    }
}

/// Counters of one receiver on one transport.
#[derive(Clone)]
pub(crate) struct TransportCounters {
    accepted_spans: Counter,
    refused_spans: Counter,
    rejected_requests: [Counter; 6],
}

impl TransportCounters {
    pub fn register(receiver: &str, transport: &'static str) -> Self {
        TransportCounters {
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
            rejected_requests: RejectReason::ALL.map(|reason| {
                metrics::counter!(
                    names::RECEIVER_REJECTED_REQUESTS,
                    "receiver" => receiver.to_string(),
                    "transport" => transport,
                    "reason" => reason.label()
                )
            }),
        }
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected_requests[reason as usize].increment(1);
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
