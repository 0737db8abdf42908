//! The load generator's sending side: rounds of pre-encoded requests over
//! OTLP/gRPC or Jaeger api_v2 gRPC (HTTP/2 directly, several streams per
//! connection), OTLP/HTTP or Jaeger thrift over HTTP (HTTP/1.1), or Jaeger
//! thrift over UDP, open-loop at a rate or closed-loop, with retry and
//! backoff on the refusals SDKs retry.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::rpc;
use crate::template::{hex_encode, Encoding, Template};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with a protobuf body.
    HttpProto,
    /// OTLP/HTTP with a JSON body.
    HttpJson,
    /// Jaeger api_v2 `CollectorService/PostSpans` over gRPC.
    JaegerGrpc,
    /// Jaeger thrift over HTTP: a binary-protocol `Batch` posted to
    /// `/api/traces` (`application/x-thrift`), as jaeger-client's HTTP
    /// sender does.
    JaegerThriftHttp,
    /// Jaeger thrift over UDP: the agent's `emitBatch` in the compact
    /// protocol (port 6831), as jaeger-client's UDP sender does. Nothing
    /// is acknowledged: every packet counts as accepted once sent, and only
    /// the sink tells what arrived.
    JaegerThriftUdp,
}

impl Protocol {
    pub fn encoding(self) -> Encoding {
        match self {
            Protocol::Grpc => Encoding::Grpc,
            Protocol::HttpProto => Encoding::Proto,
            Protocol::HttpJson => Encoding::Json,
            Protocol::JaegerGrpc => Encoding::Jaeger,
            Protocol::JaegerThriftHttp => Encoding::ThriftBinary,
            Protocol::JaegerThriftUdp => Encoding::ThriftCompact,
        }
    }

    /// The URL path of an HTTP protocol unless `--http-path` says otherwise.
    pub fn default_http_path(self) -> &'static str {
        match self {
            Protocol::JaegerThriftHttp => "/api/traces",
            _ => "/v1/traces",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Protocol::HttpJson => "application/json",
            Protocol::JaegerThriftHttp => "application/x-thrift",
            _ => "application/x-protobuf",
        }
    }

    fn grpc_path(self) -> &'static str {
        match self {
            Protocol::JaegerGrpc => "/jaeger.api_v2.CollectorService/PostSpans",
            _ => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The name in `grpc-encoding` and `content-encoding`.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }

    /// The level `--compression-level` picks when not given.
    ///
    /// zstd: 1. The collector's OTLP/HTTP exporter maps its default level
    /// to klauspost's `SpeedFastest` (about zstd 1); its gRPC zstd codec
    /// uses `SpeedDefault` (about zstd 3). Negative levels are zstd's fast
    /// modes: cheaper for the loader, larger requests.
    ///
    /// gzip: 1, deflate's fastest. The SDKs and the collector default to
    /// level 6 (Go's `DefaultCompression`, grpc-go's gzip codec), which
    /// costs the sender more and the receiver about the same.
    pub const fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip | Compression::Zstd => 1,
        }
    }

    /// The level to compress at: `given`, checked against what this
    /// compression accepts, or the default.
    pub fn level(self, given: Option<i32>) -> Result<i32, String> {
        let Some(level) = given else {
            return Ok(self.default_level());
        };
        let range = match self {
            Compression::None => 0..=0,
            Compression::Gzip => 0..=9,
            Compression::Zstd => zstd::compression_level_range(),
        };
        if range.contains(&level) {
            Ok(level)
        } else if self == Compression::None {
            Err("--compression-level needs --compression gzip or zstd".into())
        } else {
            Err(format!(
                "{self:?} levels are {}..={}, not {level}",
                range.start(),
                range.end()
            ))
        }
    }
}

/// How the loader retries refused requests. The OTLP exporters retry with
/// exponential backoff and give up after a while; the defaults are shorter
/// than the SDKs' (5 s initial) so a benchmark finishes.
#[derive(Debug, Clone)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    pub max_elapsed: Duration,
}

pub struct Options {
    pub endpoint: String,
    pub protocol: Protocol,
    pub compression: Compression,
    /// Checked with [`Compression::level`].
    pub compression_level: i32,
    pub http_path: String,
    pub connections: usize,
    /// Requests in flight per gRPC connection (HTTP/1.1 has one).
    pub in_flight: usize,
    /// Open loop: spans per second; closed loop when `None`.
    pub rate: Option<f64>,
    /// Stop after this many spans (rounded up to whole rounds).
    pub spans: Option<u64>,
    /// Stop starting rounds after this long.
    pub duration: Option<Duration>,
    /// The last part of every round is sent this much later than the rest.
    pub late_delay: Option<Duration>,
    pub manifest: Option<PathBuf>,
    pub retry: Retry,
    pub progress: bool,
}

#[derive(Default)]
struct Counters {
    spans_sent: AtomicU64,
    spans_acked: AtomicU64,
    spans_failed: AtomicU64,
    requests: AtomicU64,
    refusals: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    max_lag_us: AtomicU64,
    bytes: AtomicU64,
    /// Request bytes before compression.
    raw_bytes: AtomicU64,
    /// Each accepted request's round trip (its last attempt), in µs.
    latencies_us: Mutex<Vec<u32>>,
}

#[derive(Serialize)]
pub struct Report {
    pub protocol: Protocol,
    pub compression: Compression,
    pub compression_level: i32,
    pub connections: usize,
    pub in_flight: usize,
    pub rounds: u64,
    pub traces: u64,
    pub spans_sent: u64,
    pub spans_acked: u64,
    pub spans_failed: u64,
    pub requests: u64,
    /// Retryable refusals received, and transport failures (retried as
    /// UNAVAILABLE, as SDKs do); each retried or, past max_elapsed, failed.
    pub refusals: u64,
    pub retries: u64,
    /// Requests that failed without a retry (permanent errors).
    pub errors: u64,
    pub first_error: Option<String>,
    pub wall_seconds: f64,
    pub spans_per_second: f64,
    pub loader_cpu_seconds: f64,
    pub loader_cpu_ns_per_span: f64,
    pub loader_spans_per_cpu_second: f64,
    pub mean_request_bytes: u64,
    /// Request bytes before compression over bytes sent (1 without).
    pub compression_ratio: f64,
    /// Encoded size of one trace's spans with their share of resource and
    /// scope (uncompressed).
    pub bytes_per_trace: u64,
    /// Open loop: how far behind its schedule the loader fell at worst.
    pub max_lag_seconds: f64,
    /// Round trip of accepted requests (the attempt that was accepted),
    /// send to answer, in milliseconds: median, 99th percentile, worst.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// The `q` quantile (0–1) of `sorted`, in milliseconds (nearest rank).
fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1e3
}

struct Rounds {
    /// Highest round admitted so far; rounds are admitted in order.
    admitted: Option<u64>,
    /// First round not to start (the duration ran out).
    stop: u64,
}

struct Shared {
    template: Template,
    opts: Options,
    next: AtomicU64,
    total_requests: u64,
    rounds: Mutex<Rounds>,
    late: Mutex<VecDeque<(Instant, u64)>>,
    started: Instant,
    deadline: Option<Instant>,
    manifest: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    counters: Counters,
    first_error: Mutex<Option<String>>,
    authority: String,
    addr: SocketAddr,
}

use crate::proc_stat::own_cpu_seconds;

pub async fn run(template: Template, opts: Options) -> anyhow::Result<Report> {
    let uri: http::Uri = opts.endpoint.parse().context("endpoint must be a URL")?;
    let authority = uri
        .authority()
        .context("endpoint needs host:port")?
        .to_string();
    let addr = tokio::net::lookup_host(&authority)
        .await?
        .next()
        .with_context(|| format!("cannot resolve {authority}"))?;
    let parts = template.parts.len() as u64;
    let total_requests = match opts.spans {
        Some(spans) => spans.div_ceil(template.spans_per_round() as u64) * parts,
        None if opts.duration.is_some() => u64::MAX,
        None => bail!("give --spans or --duration"),
    };
    let manifest = match &opts.manifest {
        Some(p) => Some(Mutex::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
        ))),
        None => None,
    };
    let started = Instant::now();
    let cpu0 = own_cpu_seconds();
    let shared = Arc::new(Shared {
        deadline: opts.duration.map(|d| started + d),
        template,
        next: AtomicU64::new(0),
        total_requests,
        rounds: Mutex::new(Rounds {
            admitted: None,
            stop: u64::MAX,
        }),
        late: Mutex::new(VecDeque::new()),
        started,
        manifest,
        counters: Counters::default(),
        first_error: Mutex::new(None),
        authority,
        addr,
        opts,
    });
    let progress = shared.opts.progress && std::io::stderr().is_terminal();
    let ticker = progress.then(|| tokio::spawn(progress_line(shared.clone())));
    let mut tasks = Vec::new();
    for _ in 0..shared.opts.connections {
        match shared.opts.protocol {
            Protocol::Grpc | Protocol::JaegerGrpc => {
                let conn = grpc_connect(&shared).await?;
                for _ in 0..shared.opts.in_flight.max(1) {
                    let mut conn = GrpcConn {
                        client: Some(conn.clone()),
                    };
                    let shared = shared.clone();
                    tasks.push(tokio::spawn(
                        async move { worker(&shared, &mut conn).await },
                    ));
                }
            }
            Protocol::HttpProto | Protocol::HttpJson | Protocol::JaegerThriftHttp => {
                let mut conn = HttpConn {
                    sender: Some(http_connect(&shared).await?),
                };
                let shared = shared.clone();
                tasks.push(tokio::spawn(
                    async move { worker(&shared, &mut conn).await },
                ));
            }
            Protocol::JaegerThriftUdp => {
                let mut conn = UdpConn {
                    socket: udp_connect(&shared).await?,
                };
                let shared = shared.clone();
                tasks.push(tokio::spawn(
                    async move { worker(&shared, &mut conn).await },
                ));
            }
        }
    }
    for t in tasks {
        t.await??;
    }
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    if let Some(m) = &shared.manifest {
        m.lock().unwrap().flush()?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu0;
    let c = &shared.counters;
    let acked = c.spans_acked.load(Ordering::Relaxed);
    let requests = c.requests.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().unwrap().clone();
    let rounds = shared.rounds.lock().unwrap().admitted.map_or(0, |r| r + 1);
    let mut latencies = std::mem::take(&mut *c.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    Ok(Report {
        protocol: shared.opts.protocol,
        compression: shared.opts.compression,
        compression_level: shared.opts.compression_level,
        connections: shared.opts.connections,
        in_flight: match shared.opts.protocol {
            Protocol::Grpc | Protocol::JaegerGrpc => shared.opts.in_flight,
            // HTTP/1.1: one request at a time per connection; UDP: one
            // packet at a time per socket.
            _ => 1,
        },
        rounds,
        traces: rounds * shared.template.traces_per_round as u64,
        spans_sent: c.spans_sent.load(Ordering::Relaxed),
        spans_acked: acked,
        spans_failed: c.spans_failed.load(Ordering::Relaxed),
        requests,
        refusals: c.refusals.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        first_error,
        wall_seconds: wall,
        spans_per_second: acked as f64 / wall,
        loader_cpu_seconds: cpu,
        loader_cpu_ns_per_span: cpu * 1e9 / acked.max(1) as f64,
        loader_spans_per_cpu_second: acked as f64 / cpu.max(1e-9),
        mean_request_bytes: c.bytes.load(Ordering::Relaxed) / requests.max(1),
        compression_ratio: c.raw_bytes.load(Ordering::Relaxed) as f64
            / c.bytes.load(Ordering::Relaxed).max(1) as f64,
        bytes_per_trace: shared.template.bytes_per_trace(),
        max_lag_seconds: c.max_lag_us.load(Ordering::Relaxed) as f64 / 1e6,
        latency_p50_ms: quantile_ms(&latencies, 0.5),
        latency_p99_ms: quantile_ms(&latencies, 0.99),
        latency_max_ms: quantile_ms(&latencies, 1.0),
    })
}

async fn progress_line(shared: Arc<Shared>) {
    let c = &shared.counters;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent = c.spans_sent.load(Ordering::Relaxed);
        eprint!(
            "\r{:>10} spans/s sent  {:>12} acked  {:>8} refused  {:>8} failed  {:>6} errors ",
            sent - last,
            c.spans_acked.load(Ordering::Relaxed),
            c.refusals.load(Ordering::Relaxed),
            c.spans_failed.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        );
        last = sent;
    }
}

impl Shared {
    /// Whether round `round` may start: rounds are all-or-nothing, so once
    /// one part of a round has gone out the round is completed.
    fn admit(&self, round: u64) -> anyhow::Result<bool> {
        // Open loop: a round starts when its first request is due, which
        // may be later than now (workers take requests ahead of time).
        let starts = match self.opts.rate {
            Some(rate) => {
                let first = round * self.template.parts.len() as u64;
                let per_request =
                    self.template.spans_per_round() as f64 / self.template.parts.len() as f64;
                let due = self.started + Duration::from_secs_f64(first as f64 * per_request / rate);
                due.max(Instant::now())
            }
            None => Instant::now(),
        };
        let mut rounds = self.rounds.lock().unwrap();
        if rounds.admitted.is_some_and(|a| round <= a) {
            return Ok(true);
        }
        if round >= rounds.stop {
            return Ok(false);
        }
        if self.deadline.is_some_and(|d| starts >= d) {
            rounds.stop = round;
            return Ok(false);
        }
        rounds.admitted = Some(round);
        drop(rounds);
        if let Some(m) = &self.manifest {
            let mut m = m.lock().unwrap();
            let mut hex = [0u8; 32];
            for (id, class, spans) in self.template.round_traces(round) {
                hex_encode(&id, &mut hex);
                m.write_all(&hex)?;
                writeln!(m, " {} {spans}", class.name())?;
            }
        }
        Ok(true)
    }

    fn note_error(&self, e: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(e);
    }
}

/// What became of one attempt.
enum Outcome {
    Accepted,
    /// Refused in a way SDKs retry, with the server's requested delay.
    Retryable(Option<Duration>),
    /// Failed for good.
    Failed(String),
}

trait Conn {
    async fn send(&mut self, shared: &Shared, body: Bytes) -> Outcome;
}

async fn worker(shared: &Shared, conn: &mut impl Conn) -> anyhow::Result<()> {
    let parts = shared.template.parts.len() as u64;
    let per_request = shared.template.spans_per_round() as f64 / parts as f64;
    let mut bufs = vec![None; shared.template.slots()];
    let mut compressor = Compressor::new(shared.opts.compression, shared.opts.compression_level);
    loop {
        let late_due = {
            let mut late = shared.late.lock().unwrap();
            match late.front() {
                Some(&(due, round)) if due <= Instant::now() => {
                    late.pop_front();
                    Some(round)
                }
                _ => None,
            }
        };
        if let Some(round) = late_due {
            deliver(
                shared,
                conn,
                &mut bufs,
                &mut compressor,
                round,
                parts as usize - 1,
            )
            .await;
            continue;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let (round, part) = (n / parts, (n % parts) as usize);
        if n >= shared.total_requests || !shared.admit(round)? {
            // Nothing new to start: wait for late parts still to go.
            let head = shared.late.lock().unwrap().front().map(|&(due, _)| due);
            match head {
                Some(due) => {
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
                None => return Ok(()),
            }
        }
        if let Some(rate) = shared.opts.rate {
            let due = shared.started + Duration::from_secs_f64(n as f64 * per_request / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            } else {
                let lag = (now - due).as_micros() as u64;
                shared.counters.max_lag_us.fetch_max(lag, Ordering::Relaxed);
            }
        }
        if let Some(delay) = shared.opts.late_delay {
            if parts > 1 && part == parts as usize - 1 {
                shared
                    .late
                    .lock()
                    .unwrap()
                    .push_back((Instant::now() + delay, round));
                continue;
            }
        }
        deliver(shared, conn, &mut bufs, &mut compressor, round, part).await;
    }
}

/// Sends one request until it is accepted, refused for good, or its retries
/// run out. `bufs` (one per template slot) are reused once the transport
/// lets go.
async fn deliver(
    shared: &Shared,
    conn: &mut impl Conn,
    bufs: &mut [Option<BytesMut>],
    compressor: &mut Compressor,
    round: u64,
    part: usize,
) {
    let template = &shared.template;
    let spans = template.parts[part].spans as u64;
    // A buffer that held this slot before differs from the template only
    // in the bytes every round writes, so it is not copied again.
    let slot = template.slot(round, part);
    let buf = template.fill(round, part, bufs[slot].take());
    let mut kept = None;
    let body = match shared.opts.compression {
        Compression::None => buf.freeze(),
        c => {
            let body = compressor.compress_request(c, template.encoding, &buf);
            kept = Some(buf);
            body
        }
    };
    let c = &shared.counters;
    c.spans_sent.fetch_add(spans, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let raw_len = kept.as_ref().map_or(body.len(), |b| b.len());
    c.raw_bytes.fetch_add(raw_len as u64, Ordering::Relaxed);
    let first_try = Instant::now();
    let mut backoff = shared.opts.retry.initial;
    let mut attempt = 0u64;
    loop {
        let sent = Instant::now();
        match conn.send(shared, body.clone()).await {
            Outcome::Accepted => {
                c.spans_acked.fetch_add(spans, Ordering::Relaxed);
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                c.latencies_us.lock().unwrap().push(us);
                break;
            }
            Outcome::Failed(e) => {
                c.spans_failed.fetch_add(spans, Ordering::Relaxed);
                shared.note_error(e);
                break;
            }
            Outcome::Retryable(hint) => {
                c.refusals.fetch_add(1, Ordering::Relaxed);
                // Jitter of ±50 % as the OTLP exporters do, from the round
                // and attempt so runs stay reproducible.
                let jitter = (crate::template::splitmix64(round ^ (part as u64) << 48 ^ attempt)
                    % 1000) as f64
                    / 1000.0;
                let wait = hint.unwrap_or_else(|| backoff.mul_f64(0.5 + jitter));
                if first_try.elapsed() + wait > shared.opts.retry.max_elapsed {
                    c.spans_failed.fetch_add(spans, Ordering::Relaxed);
                    break;
                }
                c.retries.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(shared.opts.retry.max);
            }
        }
    }
    // Take the buffer back if the transport has released it.
    bufs[slot] = kept.or_else(|| body.try_into_mut().ok());
}

/// A worker's compression state, kept across requests: a zstd context or
/// a deflate stream allocates a few hundred KiB, which would cost more
/// than compressing a request if it were made anew each time.
struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    deflate: Option<flate2::Compress>,
    /// The gzip header's XFL: 4 for the fastest level, 2 for the best.
    gzip_xfl: u8,
    out: Vec<u8>,
}

impl Compressor {
    /// `level` as checked by [`Compression::level`].
    fn new(c: Compression, level: i32) -> Compressor {
        Compressor {
            zstd: (c == Compression::Zstd)
                .then(|| zstd::bulk::Compressor::new(level).expect("a checked zstd level")),
            deflate: (c == Compression::Gzip).then(|| {
                let level = u32::try_from(level).expect("a checked gzip level");
                flate2::Compress::new(flate2::Compression::new(level), false)
            }),
            gzip_xfl: match level {
                1 => 4,
                9 => 2,
                _ => 0,
            },
            out: Vec::new(),
        }
    }

    /// A request body as the template encodes it (a gRPC message with its
    /// prefix, or an HTTP body), compressed the same way.
    fn compress_request(&mut self, c: Compression, encoding: Encoding, request: &[u8]) -> Bytes {
        match encoding {
            Encoding::Grpc | Encoding::Jaeger => self.compress(c, &request[5..], true),
            Encoding::Proto | Encoding::Json | Encoding::ThriftBinary | Encoding::ThriftCompact => {
                self.compress(c, request, false)
            }
        }
    }

    /// `raw` compressed (zstd, or gzip: header, raw deflate, CRC-32 and
    /// length), behind a gRPC message prefix when `grpc`.
    fn compress(&mut self, c: Compression, raw: &[u8], grpc: bool) -> Bytes {
        self.out.clear();
        match c {
            Compression::None => self.out.extend_from_slice(raw),
            Compression::Zstd => {
                let zstd = self.zstd.as_mut().expect("made for zstd");
                self.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                zstd.compress_to_buffer(raw, &mut self.out)
                    .expect("the buffer holds the bound");
            }
            Compression::Gzip => {
                let deflate = self.deflate.as_mut().expect("made for gzip");
                deflate.reset();
                // Magic, deflate, no flags, no mtime, XFL, unknown OS.
                self.out
                    .extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, self.gzip_xfl, 0xff]);
                loop {
                    self.out.reserve(raw.len() / 2 + 1024);
                    let read = deflate.total_in() as usize;
                    let status = deflate
                        .compress_vec(&raw[read..], &mut self.out, flate2::FlushCompress::Finish)
                        .expect("deflating into a Vec");
                    if status == flate2::Status::StreamEnd {
                        break;
                    }
                }
                let mut crc = flate2::Crc::new();
                crc.update(raw);
                self.out.extend_from_slice(&crc.sum().to_le_bytes());
                self.out
                    .extend_from_slice(&(raw.len() as u32).to_le_bytes());
            }
        }
        // Sized to fit: the body lives until the transport lets go of it.
        let mut body = BytesMut::with_capacity(5 + self.out.len());
        if grpc {
            body.extend_from_slice(&[1]);
            body.extend_from_slice(&(self.out.len() as u32).to_be_bytes());
        }
        body.extend_from_slice(&self.out);
        body.freeze()
    }
}

async fn grpc_connect(shared: &Shared) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tcp = TcpStream::connect(shared.addr)
        .await
        .with_context(|| format!("connect to {}", shared.addr))?;
    tcp.set_nodelay(true)?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

struct GrpcConn {
    client: Option<h2::client::SendRequest<Bytes>>,
}

impl Conn for GrpcConn {
    async fn send(&mut self, shared: &Shared, body: Bytes) -> Outcome {
        let client = match self.client.take() {
            Some(c) => c,
            None => match grpc_connect(shared).await {
                Ok(c) => c,
                Err(e) => return transport_failure(shared, format!("{e:#}")),
            },
        };
        match grpc_call(shared, client.clone(), body).await {
            Ok(outcome) => {
                self.client = Some(client);
                outcome
            }
            // A broken connection: reconnect and retry, as SDKs treat
            // transport failures as UNAVAILABLE.
            Err(e) => transport_failure(shared, e.to_string()),
        }
    }
}

fn transport_failure(shared: &Shared, e: String) -> Outcome {
    shared.first_error.lock().unwrap().get_or_insert(e);
    Outcome::Retryable(None)
}

async fn grpc_call(
    shared: &Shared,
    client: h2::client::SendRequest<Bytes>,
    body: Bytes,
) -> Result<Outcome, h2::Error> {
    let mut client = client.ready().await?;
    let mut request = http::Request::post(format!(
        "http://{}{}",
        shared.authority,
        shared.opts.protocol.grpc_path()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    if let Some(name) = shared.opts.compression.name() {
        request = request.header("grpc-encoding", name);
    }
    let request = request.body(()).expect("static request parts");
    let (response, mut stream) = client.send_request(request, false)?;
    stream.send_data(body, true)?;
    let response = response.await?;
    let (parts, mut recv) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        // gRPC's mapping of HTTP statuses: 429, 502, 503, 504 are UNAVAILABLE.
        return Ok(match parts.status.as_u16() {
            429 | 502 | 503 | 504 => Outcome::Retryable(None),
            s => Outcome::Failed(format!("HTTP status {s}")),
        });
    }
    let trailers = if parts.headers.contains_key("grpc-status") {
        parts.headers
    } else {
        while let Some(data) = recv.data().await {
            let data = data?;
            let _ = recv.flow_control().release_capacity(data.len());
        }
        recv.trailers().await?.unwrap_or_default()
    };
    let code: u32 = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    Ok(match code {
        0 => Outcome::Accepted,
        rpc::UNAVAILABLE => Outcome::Retryable(
            trailers
                .get("grpc-status-details-bin")
                .and_then(|v| rpc::retry_delay(v.as_bytes())),
        ),
        // The OTLP spec retries RESOURCE_EXHAUSTED only when the server
        // says when to come back (RetryInfo).
        rpc::RESOURCE_EXHAUSTED => match trailers
            .get("grpc-status-details-bin")
            .and_then(|v| rpc::retry_delay(v.as_bytes()))
        {
            Some(d) => Outcome::Retryable(Some(d)),
            None => Outcome::Failed("RESOURCE_EXHAUSTED without RetryInfo".into()),
        },
        code => Outcome::Failed(format!(
            "grpc-status {code}: {}",
            trailers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        )),
    })
}

type HttpSender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http_connect(shared: &Shared) -> anyhow::Result<HttpSender> {
    let tcp = TcpStream::connect(shared.addr)
        .await
        .with_context(|| format!("connect to {}", shared.addr))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

struct HttpConn {
    sender: Option<HttpSender>,
}

impl Conn for HttpConn {
    async fn send(&mut self, shared: &Shared, body: Bytes) -> Outcome {
        let mut sender = match self.sender.take() {
            Some(s) => s,
            None => match http_connect(shared).await {
                Ok(s) => s,
                Err(e) => return transport_failure(shared, format!("{e:#}")),
            },
        };
        if let Err(e) = sender.ready().await {
            return transport_failure(shared, e.to_string());
        }
        let mut request = http::Request::post(&shared.opts.http_path)
            .header("host", &shared.authority)
            .header("content-type", shared.opts.protocol.content_type());
        if let Some(name) = shared.opts.compression.name() {
            request = request.header("content-encoding", name);
        }
        let request = request.body(Full::new(body)).expect("valid request parts");
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => return transport_failure(shared, e.to_string()),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return transport_failure(shared, e.to_string()),
        };
        self.sender = Some(sender);
        match status {
            200..=299 => Outcome::Accepted,
            429 | 502 | 503 | 504 => Outcome::Retryable(retry_after),
            s => Outcome::Failed(format!(
                "HTTP {s}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
        }
    }
}

async fn udp_connect(shared: &Shared) -> anyhow::Result<tokio::net::UdpSocket> {
    let any: SocketAddr = if shared.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket
        .connect(shared.addr)
        .await
        .with_context(|| format!("connect to {}", shared.addr))?;
    Ok(socket)
}

/// The agent's UDP port: a packet is "accepted" once the kernel took it.
struct UdpConn {
    socket: tokio::net::UdpSocket,
}

impl Conn for UdpConn {
    async fn send(&mut self, shared: &Shared, body: Bytes) -> Outcome {
        match self.socket.send(&body).await {
            Ok(n) if n == body.len() => Outcome::Accepted,
            Ok(n) => Outcome::Failed(format!("sent {n} of {} bytes", body.len())),
            // Refused (an ICMP answer to an earlier packet) or a full
            // buffer: sent again after the backoff.
            Err(e) => transport_failure(shared, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{sink, Cli, Command, SendArgs};

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(quantile_ms(&sorted, 0.5), 50.0);
        assert_eq!(quantile_ms(&sorted, 0.99), 99.0);
        assert_eq!(quantile_ms(&sorted, 1.0), 100.0);
        assert_eq!(quantile_ms(&[7_000], 0.99), 7.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }

    fn send_args(args: &[&str]) -> Result<SendArgs, clap::Error> {
        let head = [
            "tracegate-loadgen",
            "send",
            "--endpoint",
            "http://127.0.0.1:1",
        ];
        match Cli::try_parse_from(head.iter().chain(args))?.command {
            Command::Send(args) => Ok(args),
            _ => unreachable!("parsed a send command"),
        }
    }

    fn level(args: &[&str]) -> Result<i32, String> {
        let args = send_args(args).map_err(|e| e.to_string())?;
        args.compression.level(args.compression_level)
    }

    #[test]
    fn compression_level_is_parsed_and_checked() {
        assert_eq!(level(&["--compression", "zstd"]), Ok(1));
        assert_eq!(level(&["--compression", "gzip"]), Ok(1));
        assert_eq!(level(&["--compression", "none"]), Ok(0));
        for (c, l) in [
            ("zstd", -7),
            ("zstd", 3),
            ("zstd", 22),
            ("gzip", 0),
            ("gzip", 9),
        ] {
            let given = l.to_string();
            let args = ["--compression", c, "--compression-level", &given];
            assert_eq!(level(&args), Ok(l), "{args:?}");
        }
        for args in [
            ["--compression", "gzip", "--compression-level", "10"],
            ["--compression", "gzip", "--compression-level", "-1"],
            ["--compression", "zstd", "--compression-level", "23"],
            ["--compression", "none", "--compression-level", "1"],
            ["--compression", "zstd", "--compression-level", "fast"],
        ] {
            assert!(level(&args).is_err(), "{args:?} accepted");
        }
    }

    /// Every level's requests decode at the sink to the request the
    /// template encoded, in every framing.
    #[test]
    fn compressed_requests_decode_at_the_sink() {
        for (protocol, compression, level) in [
            ("grpc", "zstd", "1"),
            ("grpc", "zstd", "-5"),
            ("grpc", "zstd", "12"),
            ("grpc", "gzip", "1"),
            ("http-proto", "zstd", "-1"),
            ("http-proto", "gzip", "6"),
            ("http-json", "gzip", "0"),
            ("jaeger-grpc", "gzip", "9"),
            ("jaeger-grpc", "zstd", "3"),
        ] {
            let what = format!("{protocol} {compression} {level}");
            let args = send_args(&[
                "--protocol",
                protocol,
                "--compression",
                compression,
                "--compression-level",
                level,
                "--traces-per-round",
                "20",
            ])
            .unwrap();
            let c = args.compression;
            let template = crate::template_for(&args, 1_700_000_000_000_000_000);
            let mut compressor = Compressor::new(c, c.level(args.compression_level).unwrap());
            for part in 0..template.parts.len() {
                for round in [0, 7] {
                    let request = template.fill(round, part, None);
                    let body = compressor.compress_request(c, template.encoding, &request);
                    let (decoded, raw) = match template.encoding {
                        Encoding::Grpc | Encoding::Jaeger => {
                            (sink::grpc_message(&body, c.name()), &request[5..])
                        }
                        _ => (sink::decompress(body.clone(), c.name()), &request[..]),
                    };
                    assert_eq!(decoded.as_deref(), Ok(raw), "{what}");
                    if level != "0" {
                        assert!(body.len() < raw.len() / 2, "{what}: {}", body.len());
                    }
                }
            }
        }
    }
}
