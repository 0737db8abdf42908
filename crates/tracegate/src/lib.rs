//! The tracegate binary's library half: config loading and validation, and
//! wiring receivers, processors and exporters into running pipelines. The
//! CLI in `main.rs` only parses arguments and calls in here.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod logging;

/// The embedded default config (`config/tracegate.yaml`): OTLP receivers,
/// batch, `debug` and `file` exporters; no backend needed.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/tracegate.yaml");
