//! The tracegate command line: run a config, or validate one.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracegate::config::{self, ConfigMapRef, Loaded};

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
    Validate {
        /// Read the config out of a Kubernetes ConfigMap instead: --config
        /// names the manifest (it may hold several documents), NAME the
        /// ConfigMap's metadata.name, KEY the key of its data that holds
        /// the config (not needed when there is only one).
        #[arg(long, value_name = "NAME[:KEY]")]
        from_configmap: Option<ConfigMapRef>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tracegate_pipeline::duration::parse(s)
}

fn config_path(path: &str) -> PathBuf {
    PathBuf::from(path.strip_prefix("file:").unwrap_or(path))
}

fn load(path: Option<&str>) -> Result<Loaded, config::ConfigError> {
    match path {
        Some(p) => config::load_file(&config_path(p)),
        None => config::load_str(tracegate::DEFAULT_CONFIG, "embedded default config", &|k| {
            std::env::var(k).ok()
        }),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Validate { from_configmap }) => {
            match validate(cli.config.as_deref(), from_configmap.as_ref()) {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
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

/// `tracegate validate`: the lines to print (warnings, then the verdict),
/// or the message of what is wrong.
fn validate(
    config: Option<&str>,
    from_configmap: Option<&ConfigMapRef>,
) -> Result<Vec<String>, String> {
    let (loaded, origin) = match (from_configmap, config) {
        (Some(which), Some(path)) => (
            config::load_configmap_file(&config_path(path), which),
            format!("{path} (ConfigMap {which})"),
        ),
        (Some(_), None) => {
            return Err(
                "--from-configmap reads a Kubernetes manifest: name it with --config".into(),
            )
        }
        (None, path) => (
            load(path),
            path.unwrap_or("embedded default config").to_string(),
        ),
    };
    let loaded = loaded.map_err(|e| e.to_string())?;
    let mut lines: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    lines.push(format!("{origin}: valid"));
    Ok(lines)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let prometheus = tracegate_pipeline::telemetry::install_recorder();
    #[cfg(feature = "jemalloc")]
    tracegate_pipeline::memory::set_release_hook(jemalloc::purge_arenas);
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
        let running = tracegate::app::start(&loaded.config, prometheus).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed deployments' manifests, as committed in tests/fixtures.
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

    fn validate_args(args: &[&str]) -> Result<Vec<String>, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match &cli.command {
            Some(Command::Validate { from_configmap }) => {
                validate(cli.config.as_deref(), from_configmap.as_ref())
            }
            None => panic!("not a validate command: {args:?}"),
        }
    }

    #[test]
    fn validate_reads_the_seed_configs_out_of_their_configmaps() {
        for (file, selector, metrics_line) in [
            (
                "jaeger-v2-k8s.yaml",
                "jaeger-collector-config",
                "(line 103)",
            ),
            (
                "otel-collector-daemonset-k8s.yaml",
                "otel-collector-config:otel-collector-config.yaml",
                "(line 38)",
            ),
        ] {
            let path = format!("{FIXTURES}/{file}");
            let config = format!("--config={path}");
            let lines = validate_args(&[
                "tracegate",
                "validate",
                &config,
                "--from-configmap",
                selector,
            ])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                lines.last().unwrap(),
                &format!("{path} (ConfigMap {selector}): valid")
            );
            // Lines are the manifest's own: the skipped metrics pipeline.
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("warning: service::pipelines::metrics: ")
                        && l.ends_with(metrics_line)),
                "{file}: {lines:#?}"
            );
            // Given as a config, the manifest is refused for what it is.
            let e = validate_args(&["tracegate", "validate", &config]).unwrap_err();
            assert!(e.contains("holds several YAML documents"), "{e}");
            assert!(e.contains("--from-configmap NAME[:KEY]"), "{e}");
        }
    }

    #[test]
    fn validate_names_what_the_manifest_lacks() {
        let config = format!("--config={FIXTURES}/otel-collector-daemonset-k8s.yaml");
        let e = validate_args(&[
            "tracegate",
            "validate",
            &config,
            "--from-configmap",
            "other",
        ])
        .unwrap_err();
        assert!(
            e.ends_with(
                "no ConfigMap named \"other\"; the file's ConfigMaps: \"otel-collector-config\""
            ),
            "{e}"
        );
        let e = validate_args(&[
            "tracegate",
            "validate",
            &config,
            "--from-configmap",
            "otel-collector-config:config.yaml",
        ])
        .unwrap_err();
        assert!(
            e.ends_with("its keys: \"otel-collector-config.yaml\""),
            "{e}"
        );
        let e = validate_args(&["tracegate", "validate", "--from-configmap", "x"]).unwrap_err();
        assert!(e.contains("name it with --config"), "{e}");
        let e = validate_args(&["tracegate", "validate", &config, "--from-configmap", "x:"])
            .unwrap_err();
        assert!(e.contains("expected a data key"), "{e}");
    }
}
