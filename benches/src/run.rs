//! The scenario runner: starts the counting sink, tracegate on a scenario's
//! config (or, in comparison mode, uses any OTLP endpoint given), runs the
//! load, waits for delivery to settle, samples the target's CPU time and
//! memory from /proc, checks sampling accuracy when the scenario expects
//! shares, and writes a JSON result and a Markdown row.
//!
//! A scenario is a tracegate config with `# bench.` header lines:
//!
//! ```yaml
//! # bench.load: --spans 1000000 --error-share 0.01   (arguments of `send`)
//! # bench.sink: --delay 5ms                          (arguments of `sink`)
//! # bench.expect: error=1 slow=0.25 normal=0.05     (checker expectations)
//! # bench.settle: 3s                                 (quiet time that ends the drain)
//! # bench.sink-listen: 0.0.0.0:0                     (where the sink listens)
//! ```
//!
//! The config reads `${env:TG_GRPC_ENDPOINT}`, `${env:TG_HTTP_ENDPOINT}`
//! (both `127.0.0.1:0`; the runner reads the bound ports from tracegate's
//! JSON log: the `otlp` receiver's, or the `jaeger` receiver's gRPC,
//! thrift HTTP or compact UDP port for `--protocol jaeger-grpc`,
//! `jaeger-thrift-http` or `jaeger-thrift-udp`), `${env:SINK_ENDPOINT}` and
//! `${env:SINK_PORT}` (its port alone: a sink listening on `0.0.0.0` is
//! reached as several backends at `127.0.0.1`, `127.0.0.2`, ... that port),
//! and may keep files in `${env:TG_STORAGE_DIR}`, an empty directory the
//! runner makes for the run and removes after it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::check;
use crate::proc_stat;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The scenario: a tracegate config with `# bench.` header lines.
    #[arg(long)]
    pub scenario: PathBuf,
    /// The tracegate binary; default: `tracegate` beside this program.
    #[arg(long)]
    pub tracegate: Option<PathBuf>,
    /// Comparison mode: send to this OTLP endpoint instead of starting
    /// tracegate (e.g. an OpenTelemetry Collector exporting to --sink-listen).
    #[arg(long)]
    pub target: Option<String>,
    /// Comparison mode: the target's process id, for its CPU time and memory.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Comparison mode: the target's Prometheus endpoint (host:port), read
    /// once the load has drained.
    #[arg(long)]
    pub target_metrics: Option<String>,
    /// Where the sink listens; fix it when an external target exports to
    /// it. Default: the scenario's `# bench.sink-listen:`, else
    /// 127.0.0.1:0.
    #[arg(long)]
    pub sink_listen: Option<String>,
    /// Name of the target in the result (default: tracegate, or the URL).
    #[arg(long)]
    pub label: Option<String>,
    /// Comparison mode: first run the scenario against tracegate, then
    /// against --target, one after the other on this machine; both results
    /// are printed and both rows written to the table.
    #[arg(long, requires = "target")]
    pub also_tracegate: bool,
    /// Directory for the JSON result and the Markdown table (`results.md`).
    #[arg(long, default_value = "target/bench-results")]
    pub out: PathBuf,
    /// Give up waiting for delivery after this long.
    #[arg(long, value_parser = crate::parse_duration, default_value = "120s")]
    pub drain_timeout: Duration,
    /// Extra `send` arguments, after `--`; they override the scenario's.
    #[arg(last = true)]
    pub send_args: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Scenario {
    pub name: String,
    pub load: Vec<String>,
    pub sink: Vec<String>,
    pub expect: Vec<(crate::template::Class, f64)>,
    pub settle: Duration,
    pub sink_listen: Option<String>,
}

pub fn read_scenario(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut s = Scenario {
        name: path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        settle: Duration::from_secs(2),
        ..Default::default()
    };
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("# bench.") else {
            continue;
        };
        let (key, value) = rest
            .split_once(':')
            .with_context(|| format!("{}: `# bench.KEY: VALUE`", path.display()))?;
        let words = value.split_whitespace().map(String::from);
        match key.trim() {
            "load" => s.load.extend(words),
            "sink" => s.sink.extend(words),
            "expect" => {
                for w in words {
                    s.expect
                        .push(check::parse_expectation(&w).map_err(anyhow::Error::msg)?);
                }
            }
            "settle" => {
                s.settle = crate::parse_duration(value).map_err(anyhow::Error::msg)?;
            }
            "sink-listen" => s.sink_listen = Some(value.trim().to_string()),
            other => bail!("{}: unknown bench key {other:?}", path.display()),
        }
    }
    Ok(s)
}

/// A child process that is killed if the runner stops early.
struct Guard {
    child: Child,
    name: &'static str,
    /// Removed after the child is gone (fields drop after `drop`).
    _storage: Option<StorageDir>,
}

/// `TG_STORAGE_DIR`: an empty directory for the run, removed afterwards.
struct StorageDir(PathBuf);

impl StorageDir {
    fn new() -> anyhow::Result<StorageDir> {
        let dir = std::env::temp_dir().join(format!(
            "tracegate-bench-storage-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(StorageDir(dir))
    }
}

impl Drop for StorageDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to `within` for a clean exit.
    fn terminate(&mut self, within: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        bail!("{} did not stop within {within:?} of SIGTERM", self.name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines of a child's output, read on a thread: every line is kept and
/// each is also offered to `watch`.
fn read_lines(
    out: impl std::io::Read + Send + 'static,
    keep: Arc<Mutex<Vec<String>>>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            keep.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_for_line(
    rx: &mpsc::Receiver<String>,
    what: &str,
    within: Duration,
    mut found: impl FnMut(&str) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if found(&line) => return Ok(()),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("{what}: not seen within {within:?}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{what}: the process exited"),
        }
    }
}

/// The sink's latest stats line.
#[derive(Default)]
struct SinkView {
    stats: Value,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.also_tracegate {
        let ours = Args {
            target: None,
            target_pid: None,
            target_metrics: None,
            label: None,
            sink_listen: None,
            also_tracegate: false,
            ..args.clone()
        };
        println!("{}", serde_json::to_string(&run(&ours)?)?);
    }
    let result = run(&args)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<Value> {
    let scenario = read_scenario(&args.scenario)?;
    let exe = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!(
        "tracegate-bench-{}-{}",
        scenario.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&work)?;
    let checking = !scenario.expect.is_empty();
    let record = work.join("record.bin");
    let manifest = work.join("manifest.txt");

    // The sink.
    let mut sink_cmd = Command::new(&exe);
    sink_cmd
        .args([
            "sink",
            "--listen",
            args.sink_listen
                .as_deref()
                .or(scenario.sink_listen.as_deref())
                .unwrap_or("127.0.0.1:0"),
            "--report-every",
            "100ms",
        ])
        .args(&scenario.sink)
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    if checking {
        sink_cmd.arg("--record").arg(&record);
    }
    let mut sink = Guard {
        child: sink_cmd.spawn().context("start the sink")?,
        name: "sink",
        _storage: None,
    };
    let sink_lines = Arc::new(Mutex::new(Vec::new()));
    let sink_rx = read_lines(sink.child.stdout.take().expect("piped"), sink_lines.clone());
    let mut sink_addr = String::new();
    wait_for_line(&sink_rx, "sink listening", Duration::from_secs(10), |l| {
        l.strip_prefix("listening ")
            .map(|a| sink_addr = a.trim().to_string())
            .is_some()
    })?;
    let view = Arc::new(Mutex::new(SinkView::default()));
    {
        let view = view.clone();
        std::thread::spawn(move || {
            for line in sink_rx {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    view.lock().unwrap().stats = v;
                }
            }
        });
    }

    // The target: tracegate on the scenario's config, or an endpoint given.
    let protocol =
        flag_value(&scenario.load, &args.send_args, "--protocol").unwrap_or_else(|| "grpc".into());
    let mut tracegate = None;
    let mut binary = None;
    let tg_logs = Arc::new(Mutex::new(Vec::new()));
    let mut metrics_addr = args.target_metrics.clone();
    let (endpoint, target_pid) = match &args.target {
        Some(url) => (url.clone(), args.target_pid),
        None => {
            let bin = match &args.tracegate {
                Some(b) => b.clone(),
                None => exe.with_file_name("tracegate"),
            };
            if !bin.exists() {
                bail!(
                    "{} not found: build it (cargo build --release -p tracegate) or pass --tracegate",
                    bin.display()
                );
            }
            binary = Some(json!({
                "path": bin.display().to_string(),
                // The target directory is shared; say which build ran.
                "modified": Command::new("date")
                    .args(["-u", "+%Y-%m-%dT%H:%M:%SZ", "-r"])
                    .arg(&bin)
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
            }));
            let storage = StorageDir::new()?;
            let mut child = Guard {
                child: Command::new(&bin)
                    .arg("--config")
                    .arg(&args.scenario)
                    // The runner stops it once delivery has settled; no
                    // load balancer needs the drain delay.
                    .arg("--shutdown-drain-delay=0s")
                    .env("TG_GRPC_ENDPOINT", "127.0.0.1:0")
                    .env("TG_HTTP_ENDPOINT", "127.0.0.1:0")
                    .env("SINK_ENDPOINT", &sink_addr)
                    .env(
                        "SINK_PORT",
                        sink_addr.rsplit_once(':').map_or("", |(_, port)| port),
                    )
                    .env("TG_STORAGE_DIR", &storage.0)
                    .env_remove("RUST_LOG")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(|| format!("start {}", bin.display()))?,
                name: "tracegate",
                _storage: Some(storage),
            };
            let rx = read_lines(child.child.stderr.take().expect("piped"), tg_logs.clone());
            wait_for_line(&rx, "tracegate is ready", Duration::from_secs(30), |l| {
                l.contains("tracegate is ready")
            })
            .with_context(|| tg_logs.lock().unwrap().join("\n"))?;
            std::thread::spawn(move || for _ in rx {});
            let (receiver, want) = receiver_for(&protocol);
            let addr = tg_logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| {
                    v["message"] == "listening"
                        && v["protocol"] == want
                        && v["component"]
                            .as_str()
                            .is_some_and(|c| c.split('/').next() == Some(receiver))
                })
                .and_then(|v| v["address"].as_str().map(String::from))
                .with_context(|| {
                    format!(
                        "no {receiver} {want} listener in tracegate's log (the scenario must log JSON at info)"
                    )
                })?;
            metrics_addr = tg_logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == "listening" && v["protocol"] == "metrics")
                .and_then(|v| v["address"].as_str().map(String::from));
            let pid = child.pid();
            tracegate = Some(child);
            (format!("http://{addr}"), Some(pid))
        }
    };
    let pid = target_pid.map(|p| p.to_string());
    let cpu = |pid: &Option<String>| pid.as_deref().and_then(proc_stat::cpu_seconds);
    let mem = |pid: &Option<String>, f| pid.as_deref().and_then(|p| proc_stat::memory_bytes(p, f));
    let io = |pid: &Option<String>, f| pid.as_deref().and_then(|p| proc_stat::io_bytes(p, f));
    let rss_before = mem(&pid, "VmRSS:");
    let cpu_before = cpu(&pid);
    let io_before = (io(&pid, "wchar"), io(&pid, "write_bytes"));

    // The load.
    let mut send_cmd = Command::new(&exe);
    send_cmd
        .args(["send", "--endpoint", &endpoint])
        .args(merge_flags(&scenario.load, &args.send_args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    if checking {
        send_cmd.arg("--manifest").arg(&manifest);
    }
    let started = Instant::now();
    let output = send_cmd.output().context("run the loader")?;
    if !output.status.success() {
        bail!(
            "the loader failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let load: Value = serde_json::from_slice(
        output
            .stdout
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or_default(),
    )
    .context("the loader's report")?;
    let rss_after_load = mem(&pid, "VmRSS:");
    let acked = load["spans_acked"].as_u64().unwrap_or(0);

    // Delivery: done when the sink has every acknowledged span, or when
    // its count has not moved for the scenario's settle time (a sampler
    // keeps only some).
    let deadline = Instant::now() + args.drain_timeout;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let got = view.lock().unwrap().stats["spans"].as_u64().unwrap_or(0);
        if got >= acked && !checking {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() >= scenario.settle {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained_after = started.elapsed();
    let before_shutdown = view.lock().unwrap().stats["spans"].as_u64().unwrap_or(0);
    let cpu_after = cpu(&pid);
    let io_after = (io(&pid, "wchar"), io(&pid, "write_bytes"));
    let peak_rss = mem(&pid, "VmHWM:");
    let target_metrics = metrics_addr.as_deref().and_then(scrape_metrics);
    if let Some(tg) = tracegate.as_mut() {
        tg.terminate(Duration::from_secs(60))?;
    }
    sink.terminate(Duration::from_secs(30))?;
    // The reader thread sees the final line once the sink has exited.
    let deadline = Instant::now() + Duration::from_secs(5);
    while view.lock().unwrap().stats["final"] != true && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let sink_stats = view.lock().unwrap().stats.clone();
    let delivered = sink_stats["spans"].as_u64().unwrap_or(0);

    let accuracy = if checking {
        let summary = check::join(
            &check::read_manifest(&manifest)?,
            check::read_record(&record)?,
            &scenario.expect,
            0.99,
        );
        eprint!("{}", check::describe(&summary));
        Some(serde_json::to_value(&summary)?)
    } else {
        None
    };
    let target_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let traces = load["traces"].as_u64().unwrap_or(0);
    let result = json!({
        "scenario": scenario.name,
        "target": args.label.clone().unwrap_or_else(|| match &args.target {
            Some(t) => t.clone(),
            None => "tracegate".into(),
        }),
        "date": utc_now(),
        "commit": git_commit(),
        "tracegate_binary": binary,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "load": load,
        "sink": sink_stats,
        "drained_seconds": drained_after.as_secs_f64(),
        // What the sink had before the target was stopped; the rest came
        // from its shutdown (pending traces decided, queues drained).
        "delivered_before_shutdown": before_shutdown,
        "target_cpu_seconds": target_cpu,
        "target_spans_per_cpu_second": target_cpu.map(|c| acked as f64 / c),
        "target_cpu_ns_per_span": target_cpu.map(|c| c * 1e9 / acked.max(1) as f64),
        "target_peak_rss_bytes": peak_rss,
        // What the target wrote from the start of the load to the drain:
        // bytes handed to write calls (sockets included) and bytes sent to
        // the disk (the block layer).
        "target_wchar_bytes": io_before.0.zip(io_after.0).map(|(a, b)| b.saturating_sub(a)),
        "target_disk_write_bytes": io_before.1.zip(io_after.1).map(|(a, b)| b.saturating_sub(a)),
        "target_rss_before_load_bytes": rss_before,
        "target_rss_after_load_bytes": rss_after_load,
        "target_bytes_per_trace_sent": match (rss_before, rss_after_load) {
            (Some(a), Some(b)) if traces > 0 => Some((b.saturating_sub(a)) as f64 / traces as f64),
            _ => None,
        },
        // The loader's share of the CPU both spent on the load: small means
        // the loader was not what limited the run.
        "loader_cpu_share": target_cpu.and_then(|t| {
            let l = load["loader_cpu_seconds"].as_f64()?;
            (l + t > 0.0).then(|| l / (l + t))
        }),
        "delivered_share": if acked == 0 { 0.0 } else { delivered as f64 / acked as f64 },
        "accuracy": accuracy,
        // The target's own counters and gauges after the drain (histogram
        // buckets left out), e.g. accepted, refused and dropped spans.
        "target_metrics": target_metrics,
    });
    write_result(&args.out, &scenario.name, &result)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(result)
}

/// The scenario's arguments with the flags given again in `extra` left
/// out, then `extra`: so `-- --spans 1000` overrides a scenario's `--spans`.
pub fn merge_flags(scenario: &[String], extra: &[String]) -> Vec<String> {
    let name = |a: &str| a.split('=').next().unwrap_or(a).to_string();
    let overridden: Vec<String> = extra
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| name(a))
        .collect();
    let mut out = Vec::new();
    let mut skipping = false;
    for a in scenario {
        if a.starts_with("--") {
            skipping = overridden.contains(&name(a));
            if !skipping {
                out.push(a.clone());
            }
        } else if !skipping {
            out.push(a.clone());
        }
    }
    out.extend(extra.iter().cloned());
    out
}

/// Reads a Prometheus text endpoint: `name{labels}` → value, without
/// histogram buckets. `None` if it cannot be read.
fn scrape_metrics(addr: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || !head.split_whitespace().nth(1)?.starts_with('2') {
        return None;
    }
    Some(parse_prometheus(body))
}

fn parse_prometheus(body: &str) -> std::collections::BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.trim().rsplit_once(' ')?;
            let name = key.split('{').next()?;
            if name.ends_with("_bucket") {
                return None;
            }
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `flag` in the extra arguments, else in the scenario's.
fn flag_value(scenario: &[String], extra: &[String], flag: &str) -> Option<String> {
    let find = |args: &[String]| {
        args.iter().enumerate().rev().find_map(|(i, a)| {
            if a == flag {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{flag}=")).map(String::from)
            }
        })
    };
    find(extra).or_else(|| find(scenario))
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn git_commit() -> Option<String> {
    let o = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The Markdown row of a result.
pub fn markdown_row(r: &Value) -> String {
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map(|f| format!("{f:.digits$}"))
            .unwrap_or_else(|| "–".into())
    };
    let mib = |v: &Value| {
        v.as_u64()
            .map(|b| format!("{} MiB", b >> 20))
            .unwrap_or_else(|| "–".into())
    };
    let accuracy = match r["accuracy"]["classes"].as_object() {
        Some(classes) => classes
            .iter()
            .map(|(name, c)| {
                format!(
                    "{name} {:.3}{}",
                    c["kept_share"].as_f64().unwrap_or(0.0),
                    match c["agrees"].as_bool() {
                        Some(true) => " ✓",
                        Some(false) => " ✗",
                        None => "",
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => "–".into(),
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r["date"].as_str().unwrap_or(""),
        r["scenario"].as_str().unwrap_or(""),
        r["target"].as_str().unwrap_or(""),
        r["load"]["spans_acked"],
        num(&r["delivered_share"], 4),
        num(&r["target_cpu_seconds"], 2),
        num(&r["target_spans_per_cpu_second"], 0),
        num(&r["target_cpu_ns_per_span"], 0),
        mib(&r["target_peak_rss_bytes"]),
        num(&r["load"]["loader_cpu_ns_per_span"], 0),
        num(&r["load"]["loader_spans_per_cpu_second"], 0),
        accuracy,
    )
}

pub const MARKDOWN_HEADER: &str = "| date | scenario | target | spans acked | delivered | target CPU s | spans per CPU-second | CPU ns/span | peak RSS | loader ns/span | loader spans per CPU-second | kept share by class |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

fn write_result(dir: &Path, name: &str, result: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = result["date"].as_str().unwrap_or("").replace(':', "");
    let path = dir.join(format!("{name}-{stamp}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(result)?)?;
    let table = dir.join("results.md");
    let new = !table.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&table)?;
    if new {
        writeln!(f, "{MARKDOWN_HEADER}")?;
    }
    let row = markdown_row(result);
    writeln!(f, "{row}")?;
    eprintln!("{row}\nresult: {}", path.display());
    Ok(())
}

/// The receiver type and protocol a loader protocol is sent to.
fn receiver_for(protocol: &str) -> (&'static str, &'static str) {
    match protocol {
        "jaeger-grpc" => ("jaeger", "grpc"),
        "jaeger-thrift-http" => ("jaeger", "thrift_http"),
        "jaeger-thrift-udp" => ("jaeger", "thrift_compact"),
        "grpc" => ("otlp", "grpc"),
        _ => ("otlp", "http"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn extra_send_flags_override_the_scenarios() {
        let merged = merge_flags(
            &words("--spans 5000 --error-share 0.1 --rate=100 --x"),
            &words("--spans 10 --rate 5"),
        );
        assert_eq!(merged, words("--error-share 0.1 --x --spans 10 --rate 5"));
    }

    #[test]
    fn prometheus_text_is_read_without_buckets() {
        let m = parse_prometheus(
            "# HELP x y\n# TYPE x counter\notelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"} 6000\nlat_bucket{le=\"1\"} 3\nlat_sum 2.5\n\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            m["otelcol_receiver_accepted_spans{receiver=\"otlp\",transport=\"grpc\"}"],
            6000.0
        );
        assert_eq!(m["lat_sum"], 2.5);
    }

    #[test]
    fn scenario_header_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(
            &path,
            "# bench.load: --spans 10\n# bench.load: --rate 5\n# bench.expect: error=1 normal=0.05\n# bench.settle: 3s\nreceivers: {}\n",
        )
        .unwrap();
        let s = read_scenario(&path).unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.load, words("--spans 10 --rate 5"));
        assert_eq!(s.expect.len(), 2);
        assert_eq!(s.settle, Duration::from_secs(3));
        std::fs::write(&path, "# bench.nope: 1\n").unwrap();
        assert!(read_scenario(&path).is_err());
    }
}
