//! Shared pieces of the end-to-end tests: the real tracegate binary started
//! on a config, an in-test OTLP gRPC sink, raw HTTP and gRPC clients for
//! requests no SDK would send.
#![allow(dead_code)]

pub mod gateway;
pub mod python;
pub mod raw;
pub mod sink;
pub mod tls;

/// A file of the repository's `tests/fixtures/` (the seed deployments'
/// configs and checks, copied in so the tests need nothing outside the
/// repository).
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}
