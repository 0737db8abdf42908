//! `SpanBatch`: an encoded `ExportTraceServiceRequest` plus a per-span index.
//! Subsets are re-encoded by concatenating the original byte slices.

use std::ops::Range;

use bytes::Bytes;

use crate::scan::ScanError;

/// OTLP `Status.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// What the scanner indexes for every span. Byte ranges are offsets into
/// [`SpanBatch::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanInfo {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status: StatusCode,
    /// OTLP `Span.kind` (0 unspecified .. 5 consumer).
    pub kind: u8,
    /// The `Span` message body (without its tag and length).
    pub span: Range<u32>,
    /// Index into the batch's scope table.
    pub scope: u32,
}

impl SpanInfo {
    pub fn is_root(&self) -> bool {
        self.parent_span_id == [0; 8]
    }
}

/// One `ScopeSpans` of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    /// Index into the batch's resource table.
    pub resource: u32,
    /// The `ScopeSpans` message body.
    pub body: Range<u32>,
}

/// One `ResourceSpans` of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The `ResourceSpans` message body.
    pub body: Range<u32>,
    /// The `Resource` message body inside it, if present.
    pub resource: Option<Range<u32>>,
}

/// A lazily read OTLP `AnyValue`, borrowing from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValueRef<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// Encoded `ArrayValue` body.
    Array(&'a [u8]),
    /// Encoded `KeyValueList` body.
    KvList(&'a [u8]),
}

/// An encoded `ExportTraceServiceRequest` and its span index.
#[derive(Debug, Clone, Default)]
pub struct SpanBatch {
    pub(crate) bytes: Bytes,
    pub(crate) resources: Vec<ResourceInfo>,
    pub(crate) scopes: Vec<ScopeInfo>,
    pub(crate) spans: Vec<SpanInfo>,
}

impl SpanBatch {
    /// Validates and indexes an encoded `ExportTraceServiceRequest`.
    pub fn scan(bytes: Bytes) -> Result<SpanBatch, ScanError> {
        crate::scan::scan(bytes)
    }

    /// The encoded request; always a valid `ExportTraceServiceRequest`.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn spans(&self) -> &[SpanInfo] {
        &self.spans
    }

    pub fn scopes(&self) -> &[ScopeInfo] {
        &self.scopes
    }

    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}
