//! Jaeger thrift ingestion: the agent's `emitBatch` call as jaeger-client
//! SDKs send it over UDP (compact protocol on 6831, binary on 6832), and
//! the bare binary-protocol `Batch` that `POST /api/traces` carries, decoded
//! from untrusted bytes and converted to OTLP as collector-contrib's
//! `jaegerthrift_to_traces.go` does.
//!
//! Two paths: the receivers' (`*_to_span_batch`) reads the bytes into
//! borrowed views (`view.rs`) and writes the OTLP request from them
//! (`ingest.rs`); the reference (`decode_*`, `*_to_request`) builds the
//! owned `jaeger.thrift` model and owned OTLP messages (`to_otlp.rs`), and
//! the property tests hold the two to the same bytes.

use crate::otlp::ExportTraceServiceRequest;
use crate::{Indexing, SpanBatch};

mod ingest;
mod model;
mod protocol;
mod to_otlp;
mod view;

#[cfg(test)]
mod ingest_tests;
#[cfg(test)]
mod tests;

pub use model::{Batch, Log, Process, Span, SpanRef, Tag, TagType, TagValue};
pub use protocol::TType;
pub use to_otlp::batch_to_request;

use protocol::{BinaryReader, BinaryWriter, CompactReader, CompactWriter, Reader, Writer};
use view::BatchView;

/// Why thrift bytes were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThriftError {
    #[error("thrift: unexpected end of data")]
    Eof,
    #[error("thrift: {0}")]
    Invalid(String),
    #[error("thrift: nesting too deep")]
    TooDeep,
    #[error("thrift: required field {0} is not set")]
    MissingField(&'static str),
    #[error("thrift: unsupported agent call {0:?} (only emitBatch is served)")]
    UnsupportedCall(String),
}

/// Thrift message types that may carry `emitBatch`.
const MESSAGE_CALL: u8 = 1;
const MESSAGE_ONEWAY: u8 = 4;
const EMIT_BATCH: &str = "emitBatch";

fn agent_call<'a, R: Reader<'a>>(
    reader: &mut R,
    name: String,
    kind: u8,
    packet_len: usize,
) -> Result<BatchView<'a>, ThriftError> {
    if kind != MESSAGE_ONEWAY && kind != MESSAGE_CALL {
        return Err(ThriftError::Invalid(format!(
            "unexpected message type {kind}"
        )));
    }
    if name != EMIT_BATCH {
        return Err(ThriftError::UnsupportedCall(name));
    }
    // emitBatch_args { 1: Batch batch }
    let mut batch = None;
    reader.struct_begin()?;
    while let Some((id, t)) = reader.field()? {
        if id == 1 && t == TType::Struct {
            batch = Some(view::read_batch(reader, packet_len)?);
        } else {
            reader.skip(t)?;
        }
    }
    reader.struct_end();
    batch.ok_or(ThriftError::MissingField("emitBatch.batch"))
}

fn view_agent_compact(packet: &[u8]) -> Result<BatchView<'_>, ThriftError> {
    let mut reader = CompactReader::new(packet);
    let (name, kind) = reader.message_begin()?;
    agent_call(&mut reader, name, kind, packet.len())
}

fn view_agent_binary(packet: &[u8]) -> Result<BatchView<'_>, ThriftError> {
    let mut reader = BinaryReader::new(packet);
    let (name, kind) = reader.message_begin()?;
    agent_call(&mut reader, name, kind, packet.len())
}

fn view_batch_binary(body: &[u8]) -> Result<BatchView<'_>, ThriftError> {
    view::read_batch(&mut BinaryReader::new(body), body.len())
}

/// A compact agent packet (port 6831) as a [`SpanBatch`], written directly.
pub fn agent_compact_to_span_batch(packet: &[u8]) -> Result<SpanBatch, ThriftError> {
    agent_compact_to_span_batch_with(packet, Indexing::Eager)
}

/// A binary agent packet (port 6832) as a [`SpanBatch`], written directly.
pub fn agent_binary_to_span_batch(packet: &[u8]) -> Result<SpanBatch, ThriftError> {
    agent_binary_to_span_batch_with(packet, Indexing::Eager)
}

/// An HTTP thrift body as a [`SpanBatch`], written directly.
pub fn batch_binary_to_span_batch(body: &[u8]) -> Result<SpanBatch, ThriftError> {
    batch_binary_to_span_batch_with(body, Indexing::Eager)
}

/// [`agent_compact_to_span_batch`], indexed as `indexing` says (lazily:
/// the written request is not scanned).
pub fn agent_compact_to_span_batch_with(
    packet: &[u8],
    indexing: Indexing,
) -> Result<SpanBatch, ThriftError> {
    view_agent_compact(packet).map(|b| ingest::span_batch(&b, packet.len(), indexing))
}

/// [`agent_binary_to_span_batch`], indexed as `indexing` says.
pub fn agent_binary_to_span_batch_with(
    packet: &[u8],
    indexing: Indexing,
) -> Result<SpanBatch, ThriftError> {
    view_agent_binary(packet).map(|b| ingest::span_batch(&b, packet.len(), indexing))
}

/// [`batch_binary_to_span_batch`], indexed as `indexing` says.
pub fn batch_binary_to_span_batch_with(
    body: &[u8],
    indexing: Indexing,
) -> Result<SpanBatch, ThriftError> {
    view_batch_binary(body).map(|b| ingest::span_batch(&b, body.len(), indexing))
}

/// An agent UDP packet in the compact protocol (port 6831).
pub fn decode_agent_compact(packet: &[u8]) -> Result<Batch, ThriftError> {
    view_agent_compact(packet).map(|b| model::to_owned(&b))
}

/// An agent UDP packet in the binary protocol (port 6832).
pub fn decode_agent_binary(packet: &[u8]) -> Result<Batch, ThriftError> {
    view_agent_binary(packet).map(|b| model::to_owned(&b))
}

/// A `POST /api/traces` body: one `Batch` in the binary protocol, no
/// message envelope.
pub fn decode_batch_binary(body: &[u8]) -> Result<Batch, ThriftError> {
    view_batch_binary(body).map(|b| model::to_owned(&b))
}

/// Decodes a compact agent packet to owned OTLP (the reference path).
pub fn agent_compact_to_request(packet: &[u8]) -> Result<ExportTraceServiceRequest, ThriftError> {
    decode_agent_compact(packet).map(|b| batch_to_request(&b))
}

/// Decodes a binary agent packet to owned OTLP (the reference path).
pub fn agent_binary_to_request(packet: &[u8]) -> Result<ExportTraceServiceRequest, ThriftError> {
    decode_agent_binary(packet).map(|b| batch_to_request(&b))
}

/// Decodes an HTTP thrift body to owned OTLP (the reference path).
pub fn batch_binary_to_request(body: &[u8]) -> Result<ExportTraceServiceRequest, ThriftError> {
    decode_batch_binary(body).map(|b| batch_to_request(&b))
}

fn emit_batch<W: Writer>(mut w: W, batch: &Batch) -> Vec<u8> {
    w.message_begin(EMIT_BATCH, MESSAGE_ONEWAY);
    w.struct_begin();
    w.field(1, TType::Struct);
    model::write_batch(&mut w, batch);
    w.stop();
    w.struct_end();
    w.into_bytes()
}

/// What a jaeger-client sends to the agent's compact port: a oneway
/// `emitBatch` message. For tests, benchmarks and load generators.
pub fn encode_agent_compact(batch: &Batch) -> Vec<u8> {
    emit_batch(CompactWriter::default(), batch)
}

/// The same call in the binary protocol (the agent's port 6832).
pub fn encode_agent_binary(batch: &Batch) -> Vec<u8> {
    emit_batch(BinaryWriter::default(), batch)
}

/// What a jaeger-client's HTTP sender posts to `/api/traces`.
pub fn encode_batch_binary(batch: &Batch) -> Vec<u8> {
    let mut w = BinaryWriter::default();
    model::write_batch(&mut w, batch);
    w.into_bytes()
}
