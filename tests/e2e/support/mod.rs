//! Shared pieces of the end-to-end tests: the real tracegate binary started
//! on a config, an in-test OTLP gRPC sink, raw HTTP and gRPC clients for
//! requests no SDK would send.
#![allow(dead_code)]

pub mod gateway;
pub mod raw;
pub mod sink;
pub mod tls;
