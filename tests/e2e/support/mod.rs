//! Shared pieces of the end-to-end tests: the real tracegate binary started
//! on a config, an in-test OTLP gRPC sink, raw HTTP and gRPC clients for
//! requests no SDK would send.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

pub mod gateway;
pub mod kube;
pub mod load;
pub mod python;
pub mod raw;
pub mod sink;
pub mod tls;
pub mod traces;

/// A file of the repository's `tests/fixtures/` (the seed deployments'
/// configs and checks, copied in so the tests need nothing outside the
/// repository).
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A deterministic generator (splitmix64), so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An encoded OTLP request of one valid span named `name`.
pub fn one_span_request(name: &str) -> Vec<u8> {
    spans_request(name, 1)
}

/// An encoded OTLP request of `n` valid spans of one trace, all named
/// `name`, with span ids 1 to `n`.
pub fn spans_request(name: &str, n: u64) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (1..=n)
                    .map(|i| Span {
                        trace_id: vec![1; 16],
                        span_id: i.to_be_bytes().to_vec(),
                        name: name.into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
