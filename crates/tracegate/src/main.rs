//! The tracegate command line: run a config, or validate one.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracegate::config::{self, Loaded};

#[cfg(feature = "jemalloc")]
mod jemalloc;

/// A native trace-sampling gateway: OTLP in, sampling and batching, OTLP out.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file in the OpenTelemetry Collector's YAML shape (a `file:`
    /// prefix is accepted). Without it the embedded default runs.
    #[arg(long, global = true)]
    config: Option<String>,
    /// How long shutdown may take to flush batches and drain exporter
    /// queues after SIGTERM/SIGINT (Go duration syntax).
    #[arg(long, default_value = "30s", value_parser = parse_duration, global = true)]
    shutdown_grace: Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config without starting anything; print warnings.
    Validate,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tracegate_pipeline::duration::parse(s)
}

fn load(path: Option<&str>) -> Result<Loaded, config::ConfigError> {
    match path {
        Some(p) => config::load_file(&PathBuf::from(p.strip_prefix("file:").unwrap_or(p))),
        None => config::load_str(tracegate::DEFAULT_CONFIG, "embedded default config", &|k| {
            std::env::var(k).ok()
        }),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate) => {
            let origin = cli.config.as_deref().unwrap_or("embedded default config");
            match load(cli.config.as_deref()) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        println!("warning: {w}");
                    }
                    println!("{origin}: valid");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        None => run(cli),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let prometheus = tracegate_pipeline::telemetry::install_recorder();
    #[cfg(feature = "jemalloc")]
    let release_memory: Option<fn()> = Some(jemalloc::purge_arenas);
    #[cfg(not(feature = "jemalloc"))]
    let release_memory: Option<fn()> = None;
    let loaded = match load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("invalid config: {e}");
            std::process::exit(1);
        }
    };
    let telemetry = &loaded.config.service.telemetry;
    tracegate::logging::init(
        &telemetry.log_level,
        telemetry.log_format == config::LogFormat::Json,
    );
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = tracegate::app::start(&loaded.config, prometheus, release_memory).await?;
        for (component, protocol, address) in &running.listening {
            tracing::info!(component = %component, protocol, address = %address, "listening");
        }
        tracing::info!("tracegate is ready");
        wait_for_signal().await?;
        tracing::info!(grace = ?cli.shutdown_grace, "shutting down");
        running.shutdown(cli.shutdown_grace).await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
