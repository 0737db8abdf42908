//! `tracegate-loadgen`: the benchmark harness.
//!
//! - `send`: realistic traces (error / slow / normal classes, spread over
//!   several requests) from pre-encoded templates patched in place, so the
//!   generator costs little CPU and reports its own CPU per span.
//! - `sink`: a counting OTLP gRPC/HTTP and Jaeger gRPC receiver with fault
//!   modes.
//! - `check`: joins the sender's manifest with the sink's record.
//! - `run`: a scenario end to end (tracegate or any OTLP endpoint, sink,
//!   load), with tracegate's CPU and memory from /proc.
#![forbid(unsafe_code)]

mod check;
mod jaeger;
mod jaeger_thrift;
mod proc_stat;
mod rpc;
mod run;
mod send;
mod sink;
mod template;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "tracegate's load generator, counting sink, checker and scenario runner")]
struct Cli {
    /// Runtime worker threads; 1 runs everything on the calling thread,
    /// which is the cheapest for the loader.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send traces to an OTLP or Jaeger (gRPC, thrift) endpoint; prints a JSON report
    /// on stdout.
    Send(SendArgs),
    /// Receive OTLP or Jaeger gRPC traces and count them; prints JSON stats
    /// lines.
    Sink(SinkArgs),
    /// Compare a manifest (from `send --manifest`) with a sink record.
    Check(check::Args),
    /// Run a scenario: tracegate (or --target), the sink and the load.
    Run(run::Args),
}

#[derive(Args, Clone, Debug)]
pub struct SendArgs {
    /// Target, e.g. http://127.0.0.1:4317 (gRPC) or http://127.0.0.1:4318.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: send::Protocol,
    #[arg(long, value_enum, default_value = "none")]
    pub compression: send::Compression,
    /// Compression level: zstd from -131072 (its fast modes, negative) to
    /// 22, gzip 0–9. Default 1 for both.
    #[arg(long, allow_hyphen_values = true)]
    pub compression_level: Option<i32>,
    /// URL path for HTTP: default `/v1/traces` (OTLP), `/api/traces`
    /// (Jaeger thrift).
    #[arg(long)]
    pub http_path: Option<String>,
    /// Total spans (rounded up to whole rounds). Default when neither this
    /// nor --duration is given: 1 000 000.
    #[arg(long)]
    pub spans: Option<u64>,
    /// Send for this long (e.g. 30s), ending on a whole round.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Open loop at this many spans per second; closed loop (as fast as
    /// acknowledged) without it.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// gRPC requests in flight per connection (HTTP/1.1: always 1).
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Spans per trace: `10`, or a range `5-20` (each trace slot of a
    /// round draws its count once).
    #[arg(long, default_value = "10", value_parser = parse_span_range)]
    pub spans_per_trace: (usize, usize),
    /// Traces whose spans share one round of requests.
    #[arg(long, default_value_t = 100)]
    pub traces_per_round: usize,
    /// Requests each trace's spans are spread over (split by service);
    /// Jaeger sends one request per service.
    #[arg(long, default_value_t = 2)]
    pub requests_per_trace: usize,
    /// Services (resources) spans are spread over, at most 10.
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    /// Attributes per span: the semantic-convention keys of the span's role
    /// first (HTTP, database, RPC, internal), then `app.attribute_N`.
    #[arg(long, default_value_t = 8)]
    pub attributes: usize,
    /// Share of traces with one span of status ERROR.
    #[arg(long, default_value_t = 0.0)]
    pub error_share: f64,
    /// Share of traces whose root lasts 1–1.5 × --slow-duration.
    #[arg(long, default_value_t = 0.0)]
    pub slow_share: f64,
    /// Typical root duration of the other traces: each lasts 0.5–1.5 × it.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub normal_duration: Duration,
    /// Shortest root duration of slow traces.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub slow_duration: Duration,
    /// The last request of every round is sent this much later (late spans).
    #[arg(long, value_parser = parse_duration)]
    pub late_delay: Option<Duration>,
    /// Seed for trace ids and classes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write one line per trace: hex trace id, class, span count.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub retry_initial: Duration,
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_max: Duration,
    /// Give a request up after retrying this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub retry_max_elapsed: Duration,
}

#[derive(Args, Clone, Debug)]
pub struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Record (trace id, span id) of every span received, 24 bytes each.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Count distinct trace ids too (implied by --record).
    #[arg(long)]
    pub count_traces: bool,
    /// Refuse a share of requests this way.
    #[arg(long, value_enum)]
    pub fault: Option<sink::Fault>,
    /// Share of requests refused with --fault.
    #[arg(long, default_value_t = 1.0)]
    pub fault_share: f64,
    /// Retry delay the refusals ask for (RetryInfo, Retry-After).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_after: Duration,
    /// Answer every request this much later (a slow backend).
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub report_every: Duration,
}

/// `10` or `5-20`.
fn parse_span_range(s: &str) -> Result<(usize, usize), String> {
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("{v:?}: a span count is a whole number ≥ 1"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (num(lo)?, num(hi)?),
        None => (num(s)?, num(s)?),
    };
    if lo > hi {
        return Err(format!("{s:?}: the range is empty"));
    }
    Ok((lo, hi))
}

/// `250ms`, `2s`, `1m`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("{s:?}: give a unit (ms, s, m)"))?;
    let v: f64 = num.parse().map_err(|_| format!("{s:?}: not a number"))?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unit must be us, ms, s, m or h")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{s:?}: not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    match cli.command {
        Command::Send(args) => {
            let report = runtime.block_on(send_with(&args, true))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Sink(args) => runtime.block_on(sink::run(sink::Options {
            listen: args.listen,
            record: args.record,
            count_traces: args.count_traces,
            fault: args.fault,
            fault_share: args.fault_share,
            retry_after: args.retry_after,
            delay: args.delay,
            report_every: args.report_every,
        })),
        Command::Check(args) => check::main(args),
        Command::Run(args) => run::main(args),
    }
}

pub async fn send_with(args: &SendArgs, progress: bool) -> anyhow::Result<send::Report> {
    let compression_level = args
        .compression
        .level(args.compression_level)
        .map_err(anyhow::Error::msg)?;
    let base_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    send::run(
        template_for(args, base_time),
        send::Options {
            endpoint: args.endpoint.clone(),
            protocol: args.protocol,
            compression: args.compression,
            compression_level,
            http_path: args
                .http_path
                .clone()
                .unwrap_or_else(|| args.protocol.default_http_path().into()),
            connections: args.connections.max(1),
            in_flight: args.in_flight.max(1),
            rate: args.rate,
            spans: args.spans.or(if args.duration.is_none() {
                Some(1_000_000)
            } else {
                None
            }),
            duration: args.duration,
            late_delay: args.late_delay,
            manifest: args.manifest.clone(),
            retry: send::Retry {
                initial: args.retry_initial,
                max: args.retry_max,
                max_elapsed: args.retry_max_elapsed,
            },
            progress,
        },
    )
    .await
}

/// The pre-encoded requests `send` patches, in the shape `args` asks for.
fn template_for(args: &SendArgs, base_time_ns: u64) -> template::Template {
    template::Template::new(
        &template::Shape {
            spans_per_trace: args.spans_per_trace.0,
            max_spans_per_trace: args.spans_per_trace.1,
            traces_per_round: args.traces_per_round,
            parts: args.requests_per_trace,
            services: args.services,
            attributes: args.attributes,
            normal_duration_ns: args.normal_duration.as_nanos() as u64,
            slow_duration_ns: args.slow_duration.as_nanos() as u64,
        },
        template::Mix {
            error_share: args.error_share,
            slow_share: args.slow_share,
            seed: args.seed,
        },
        args.protocol.encoding(),
        base_time_ns,
    )
}
