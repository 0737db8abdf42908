//! The end-to-end tests: each module starts the real `tracegate` binary and
//! talks to it over real sockets. They are one test binary so the suite
//! links once; run one area with `cargo test -p tracegate --test e2e otlp::`.

mod support;

mod adaptive_sampling;
mod auth;
mod backpressure;
mod bad_input;
mod config_sources;
mod conformance;
mod deploy;
mod differences;
mod handover;
mod head_sampling;
mod jaeger;
mod jaeger_thrift;
mod loadbalancing;
mod memory_limiter;
mod otlp;
mod overload;
mod remote_adaptive;
mod remote_sampling;
mod resource_detection;
mod seed_configs;
mod shutdown;
mod storage;
mod tail_journal;
mod tail_sampling;
mod zipkin;
