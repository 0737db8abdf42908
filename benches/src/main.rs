//! `tracegate-loadgen`: sends pre-encoded OTLP/gRPC trace requests as fast
//! as the target takes them (`send`), or receives and counts them (`sink`).
//! Request templates are encoded once; per request only the trace ids are
//! patched in place, so the generator itself costs little CPU and reports
//! its own CPU per span.
#![forbid(unsafe_code)]

mod codec;
mod template;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use codec::{RawCodec, EXPORT_PATH};

#[derive(Parser)]
#[command(about = "tracegate's load generator and counting sink")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send OTLP/gRPC trace requests to an endpoint.
    Send {
        /// Target, e.g. http://127.0.0.1:4317
        #[arg(long)]
        endpoint: String,
        /// Total spans to send.
        #[arg(long, default_value_t = 2_000_000)]
        spans: u64,
        /// Spans per trace.
        #[arg(long, default_value_t = 10)]
        spans_per_trace: usize,
        /// Traces per request.
        #[arg(long, default_value_t = 10)]
        traces_per_request: usize,
        /// Attributes per span.
        #[arg(long, default_value_t = 8)]
        attributes: usize,
        /// Concurrent connections, one request in flight on each.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Receive OTLP/gRPC trace requests and count their spans.
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Print the running count every this many seconds.
        #[arg(long, default_value_t = 1)]
        report_every: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Send {
            endpoint,
            spans,
            spans_per_trace,
            traces_per_request,
            attributes,
            connections,
        } => runtime.block_on(send(
            endpoint,
            spans,
            template::Shape {
                spans_per_trace,
                traces_per_request,
                attributes,
            },
            connections,
        )),
        Command::Sink {
            listen,
            report_every,
        } => runtime.block_on(sink(listen, report_every)),
    }
}

/// This process's CPU time (user + system) from /proc.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

async fn send(
    endpoint: String,
    total_spans: u64,
    shape: template::Shape,
    connections: usize,
) -> anyhow::Result<()> {
    let template = Arc::new(template::Template::new(&shape));
    let per_request = template.spans as u64;
    let requests = total_spans.div_ceil(per_request);
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu0 = own_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {endpoint}"))?;
        let (template, next, acked, failed) = (
            template.clone(),
            next.clone(),
            acked.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = tonic::client::Grpc::new(channel);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let body = template.request(n);
                if client.ready().await.is_err() {
                    failed.fetch_add(per_request, Ordering::Relaxed);
                    continue;
                }
                let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                match client
                    .unary(tonic::Request::new(body), path, RawCodec)
                    .await
                {
                    Ok(_) => acked.fetch_add(per_request, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(per_request, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu0;
    let acked = acked.load(Ordering::Relaxed);
    println!(
        "{{\"spans_acked\":{acked},\"spans_failed\":{},\"wall_seconds\":{wall:.3},\"spans_per_second\":{:.0},\"loader_cpu_seconds\":{cpu:.3},\"loader_cpu_ns_per_span\":{:.1},\"request_bytes\":{}}}",
        failed.load(Ordering::Relaxed),
        acked as f64 / wall,
        cpu * 1e9 / acked.max(1) as f64,
        template.encoded_len(),
    );
    Ok(())
}

async fn sink(listen: SocketAddr, report_every: u64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    let counter = codec::SpanCounter::default();
    let spans = counter.spans.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(report_every)).await;
            let now = spans.load(Ordering::Relaxed);
            if now != last {
                println!("spans {now}");
                last = now;
            }
        }
    });
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(counter.into_service())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
