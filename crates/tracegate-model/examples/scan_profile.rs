//! A fixed amount of work for instruction counting, which stays repeatable on
//! a busy machine where wall-clock benchmarks do not:
//!
//! cargo build --release -p tracegate-model --example scan_profile
//! valgrind --tool=callgrind target/release/examples/scan_profile scan 1000
//!
//! Modes: scan, reencode10 (scan + keep 1 trace in 10), prost (decode +
//! encode). Instructions per span = total Ir / (iterations × 100).

use bytes::Bytes;
use prost::Message;
use tracegate_model::otlp::ExportTraceServiceRequest;
use tracegate_model::SpanBatch;

#[path = "../benches/workload/mod.rs"]
mod workload;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "scan".into());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let encoded = Bytes::from(workload::request(0).encode_to_vec());
    let mut spans = 0;
    for _ in 0..iterations {
        spans += match mode.as_str() {
            "scan" => SpanBatch::scan(encoded.clone()).unwrap().len(),
            "reencode10" => SpanBatch::scan(encoded.clone())
                .unwrap()
                .filter(|s| workload::sampled(&s.trace_id))
                .len(),
            "prost" => {
                let req = ExportTraceServiceRequest::decode(&encoded[..]).unwrap();
                req.encode_to_vec().len() / 400
            }
            other => panic!("unknown mode {other}"),
        };
    }
    println!("{mode}: {iterations} iterations, {spans} spans out");
}
