//! The hand-over carrier: one unary gRPC method of tracegate's own, served
//! on the OTLP/gRPC port of every gateway whose `tail_sampling` has
//! `handover` set, next to OTLP's `TraceService/Export`.
//!
//! ```proto
//! package tracegate.handover.v1;
//!
//! service Handover {
//!   rpc Deliver(HandoverRequest) returns (HandoverResponse);
//! }
//!
//! message HandoverRequest {
//!   string sender = 1;        // the sender's advertised_endpoint
//!   string processor = 2;     // the tail_sampling component id, e.g. "tail_sampling"
//!   bytes spans = 3;          // an encoded OTLP ExportTraceServiceRequest
//!   repeated TraceClock traces = 4;
//!   repeated Decision decisions = 5;
//! }
//!
//! // One per trace whose spans are in `spans`.
//! message TraceClock {
//!   bytes trace_id = 1;
//!   uint64 age_micros = 2;    // time since the trace's first span, as the sender sends
//!   uint32 hops = 3;          // hand-overs in a row that did not reach its owner
//! }
//!
//! message Decision {
//!   bytes trace_id = 1;
//!   bool sampled = 2;
//!   optional uint32 policy = 3; // index of the policy that sampled it
//!   optional uint64 tail_threshold = 4; // OTEP 235 threshold an adaptive policy kept it with
//! }
//!
//! message HandoverResponse {}
//! ```
//!
//! The trace's clock travels as an age, not a timestamp, so the hosts'
//! clocks need not agree; the time the request spends on the wire is the
//! only error, and it makes the trace wait that much longer, never less.

use bytes::Bytes;

/// The method's path.
pub const HANDOVER_PATH: &str = "/tracegate.handover.v1.Handover/Deliver";

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HandoverRequest {
    #[prost(string, tag = "1")]
    pub sender: String,
    #[prost(string, tag = "2")]
    pub processor: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub spans: Bytes,
    #[prost(message, repeated, tag = "4")]
    pub traces: Vec<TraceClock>,
    #[prost(message, repeated, tag = "5")]
    pub decisions: Vec<Decision>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct TraceClock {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub age_micros: u64,
    #[prost(uint32, tag = "3")]
    pub hops: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Decision {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bool, tag = "2")]
    pub sampled: bool,
    #[prost(uint32, optional, tag = "3")]
    pub policy: Option<u32>,
    #[prost(uint64, optional, tag = "4")]
    pub tail_threshold: Option<u64>,
}

/// What one trace clock or decision costs in a request, at most (for
/// splitting large hand-overs).
pub(super) const TRACE_CLOCK_BYTES: usize = 2 + 18 + 11 + 6;
pub(super) const DECISION_BYTES: usize = 2 + 18 + 2 + 6 + 9;
