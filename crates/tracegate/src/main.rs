//! The tracegate command line: run a config, or validate one.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracegate::config::{self, ConfigMapRef};

#[cfg(target_os = "linux")]
mod code_pages;
#[cfg(feature = "jemalloc")]
mod jemalloc;

/// A native trace-sampling gateway: OTLP in, sampling and batching, OTLP out.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config in the OpenTelemetry Collector's YAML shape: a path, or a
    /// `file:`, `env:`, `yaml:`, `http://` or `https://` URI. Repeat it to
    /// merge several, later ones winning. Without it the embedded default
    /// runs.
    #[arg(long, global = true, value_name = "URI")]
    config: Vec<String>,
    /// Sets one config value after every --config is merged:
    /// `--set processors.batch.timeout=2s` (dots or `::` separate keys; the
    /// value is YAML). Repeatable.
    #[arg(long, global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The collector's feature gates (`gate,-gate,+gate`). tracegate
    /// honours `confmap.enableMergeAppendOption`; others are warned about.
    #[arg(long, global = true, value_name = "GATES")]
    feature_gates: Vec<String>,
    /// How long shutdown may take after SIGTERM/SIGINT, drain delay
    /// included: the process exits within it (Go duration syntax).
    #[arg(long, default_value = "30s", value_parser = parse_duration, global = true)]
    shutdown_grace: Duration,
    /// After SIGTERM: how long the health check reports 503 while
    /// receivers still take data, before the listeners close, so that a
    /// Kubernetes Service stops sending first. Part of the grace period.
    /// SIGINT, or a second signal, skips it.
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    shutdown_drain_delay: Duration,
    /// Worker threads of the runtime that runs every receiver, processor
    /// and exporter. Default: one per CPU the process may use (its CPU
    /// affinity and cgroup quota). Set it where other work owns the CPUs,
    /// such as a GPU node.
    #[arg(long, value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
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
    /// List the receivers, processors, exporters and extensions this build
    /// implements (YAML, in the collector's shape).
    Components,
    /// Print the resolved config: every --config and --set merged, every
    /// ${...} expanded.
    #[command(alias = "print-initial-config")]
    PrintConfig {
        /// `redacted` (headers, keys and passwords as [REDACTED]) or
        /// `unredacted`.
        #[arg(long, default_value = "redacted")]
        mode: config::PrintMode,
        /// `yaml` or `json`.
        #[arg(long, default_value = "yaml")]
        format: config::PrintFormat,
        /// Refuse to print a config that does not load (`--validate=false`
        /// prints it anyway).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        validate: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tracegate_pipeline::duration::parse(s)
}

impl Cli {
    fn sources(&self) -> config::Sources {
        config::Sources {
            configs: self.config.clone(),
            sets: self.set.clone(),
            feature_gates: self.feature_gates.clone(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Validate { from_configmap }) => match validate(&cli, from_configmap.as_ref())
        {
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
        },
        Some(Command::Components) => {
            print!("{}", config::components_yaml());
            Ok(())
        }
        &Some(Command::PrintConfig {
            mode,
            format,
            validate,
        }) => {
            let resolved = config::resolve_sources(&cli.sources(), &|k| std::env::var(k).ok());
            match &resolved.loaded {
                Ok(loaded) => loaded
                    .warnings
                    .iter()
                    .for_each(|w| eprintln!("warning: {w}")),
                Err(e) if validate => {
                    eprintln!("invalid configuration: {e}");
                    std::process::exit(1);
                }
                Err(_) => {}
            }
            match resolved.print(mode, format) {
                Ok(text) => {
                    print!("{text}");
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
fn validate(cli: &Cli, from_configmap: Option<&ConfigMapRef>) -> Result<Vec<String>, String> {
    let (loaded, origin) = match from_configmap {
        Some(which) => {
            let [path] = cli.config.as_slice() else {
                return Err(
                    "--from-configmap reads a Kubernetes manifest: name it with --config (one file)"
                        .into(),
                );
            };
            if !cli.set.is_empty() {
                return Err("--from-configmap checks the ConfigMap as it is: drop --set".into());
            }
            (
                config::load_configmap_file(&config_path(path), which),
                format!("{path} (ConfigMap {which})"),
            )
        }
        None => {
            let resolved = config::resolve_sources(&cli.sources(), &|k| std::env::var(k).ok());
            (resolved.loaded, resolved.origin)
        }
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

fn config_path(path: &str) -> PathBuf {
    PathBuf::from(path.strip_prefix("file:").unwrap_or(path))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let prometheus = tracegate_pipeline::telemetry::install_recorder();
    #[cfg(feature = "jemalloc")]
    let allocator = Some(jemalloc::hooks());
    #[cfg(not(feature = "jemalloc"))]
    let allocator = None;
    let loaded = match config::load_sources(&cli.sources()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("invalid config: {e}");
            std::process::exit(1);
        }
    };
    let telemetry = &loaded.config.service.telemetry;
    if let Err(e) = tracegate::logging::init(
        &telemetry.log_level,
        telemetry.log_format == config::LogFormat::Json,
        &telemetry.log_outputs,
    ) {
        eprintln!("invalid config: service::telemetry::logs::output_paths: {e}");
        std::process::exit(1);
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    // One worker thread (the GPU node's unit): tokio's current-thread
    // runtime, run on a thread of its own, instead of the multi-thread one
    // with one worker. Same threads (this one waits, the worker runs
    // everything, the blocking pool as before), without the work-stealing
    // scheduler's bookkeeping on every wake-up (benches/RESULTS.md,
    // "GPU-node footprint").
    let single = cli.worker_threads == Some(1);
    let mut runtime = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = cli.worker_threads {
            runtime.worker_threads(usize::from(threads));
        }
        runtime
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if single {
        // Named as tokio names the workers of its multi-thread runtime.
        let worker = std::thread::Builder::new()
            .name("tokio-rt-worker".into())
            .spawn(move || serve(cli, runtime, loaded, prometheus, allocator))
            .context("cannot start the runtime's thread")?;
        return match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
    }
    serve(cli, runtime, loaded, prometheus, allocator)
}

/// Runs the pipelines on `runtime` until a signal, then shuts down.
fn serve(
    cli: Cli,
    runtime: tokio::runtime::Runtime,
    loaded: config::Loaded,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    allocator: Option<tracegate_pipeline::memory::Allocator>,
) -> anyhow::Result<()> {
    let grace = cli.shutdown_grace;
    let worker_threads = runtime.metrics().num_workers();
    let stopped_by = runtime.block_on(async move {
        // Listening before "ready", so that a signal right after it is not
        // the default action (an exit without shutdown).
        let mut signals = Signals::new()?;
        let running = tracegate::app::start(&loaded.config, prometheus, allocator).await?;
        for (component, protocol, address) in &running.listening {
            tracing::info!(component = %component, protocol, address = %address, "listening");
        }
        tracing::info!(worker_threads, "tracegate is ready");
        // Starting is over: its code pages need not stay resident, nor
        // later those of code that stopped running.
        #[cfg(target_os = "linux")]
        tokio::spawn(code_pages::release_every(code_pages::PERIOD));
        let signal = signals.next().await;
        let stop_by = std::time::Instant::now() + grace;
        exit_at(stop_by);
        // An interactive Ctrl-C has no load balancer to wait for.
        let drain_delay = match signal {
            Signal::Terminate => cli.shutdown_drain_delay,
            Signal::Interrupt => Duration::ZERO,
        };
        tracing::info!(?signal, ?grace, ?drain_delay, "shutting down");
        let times = tracegate::app::ShutdownTimes { grace, drain_delay };
        running
            .shutdown(times, async move {
                signals.next().await;
            })
            .await;
        anyhow::Ok(stop_by)
    })?;
    // Tasks that are still running (a connection, a processor that did not
    // finish) do not hold the exit past the grace period.
    runtime.shutdown_timeout(stopped_by.saturating_duration_since(std::time::Instant::now()));
    tracing::info!("stopped");
    Ok(())
}

/// The last resort: if shutdown has not ended when the grace period does
/// (each step is bounded, but an exporter's final close or a blocking call
/// could still hang), the process exits with status 1.
fn exit_at(deadline: std::time::Instant) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
        tracing::error!("shutdown did not finish within the grace period; exiting");
        std::process::exit(1);
    });
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Terminate,
    Interrupt,
}

/// SIGTERM and SIGINT, listened for once and then awaited as often as needed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed deployments' manifests, as committed in tests/fixtures.
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

    fn validate_args(args: &[&str]) -> Result<Vec<String>, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match &cli.command {
            Some(Command::Validate { from_configmap }) => validate(&cli, from_configmap.as_ref()),
            _ => panic!("not a validate command: {args:?}"),
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
