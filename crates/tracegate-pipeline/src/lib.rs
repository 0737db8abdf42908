//! tracegate's runtime: everything that does I/O. Receivers decode requests
//! into [`SpanBatch`](tracegate_model::SpanBatch)es and hand them to a
//! [`Consumer`]; processors are consumers that pass batches on; the fan-out
//! hands one shared batch to every exporter's own queue.
#![forbid(unsafe_code)]

pub mod auth;
pub mod compression;
pub mod config;
pub mod consumer;
pub mod context;
pub mod duration;
pub mod exporter;
pub mod extension;
pub mod file_storage;
pub(crate) mod file_watch;
pub mod grpc;
pub mod health;
mod http_client;
mod http_server;
pub mod kube;
pub mod membership;
pub mod memory;
mod offload;
pub mod processor;
pub mod receiver;
pub mod registry;
pub mod remote_sampling;
pub mod tail_storage;
pub mod telemetry;
#[cfg(test)]
mod test_logs;
pub mod tls;
mod url;

pub use consumer::{ConsumeError, Consumer};
