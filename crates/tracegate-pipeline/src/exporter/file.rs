//! The `file` exporter, as the collector's `fileexporter`: one OTLP/JSON
//! request per line (`format: json`), or each encoded request preceded by
//! its length as a 4-byte big-endian integer (`format: proto`, and any
//! format with `compression: zstd`). With `rotation` the file is rotated by
//! size as lumberjack does (`<name>-<UTC time>.<ext>` backups, oldest
//! removed first). All file I/O runs on one dedicated thread, never on the
//! async runtime.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::oneshot;
use tracegate_model::SpanBatch;

use super::delivery::QueueConfig;
use super::utc::{unix_time, UtcTime};
use super::{Delivered, ExportError, Exporter};
use crate::config::{error, ComponentError};
use crate::offload;

/// `format:`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Json,
    Proto,
}

/// `exporters: file:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File to write, relative to the working directory. Required.
    #[serde(default)]
    pub path: String,
    /// Append to an existing file instead of truncating it. Cannot be
    /// combined with `rotation` or `compression`. Default `false`.
    #[serde(default)]
    pub append: bool,
    /// Rotate the file by size. Default: no rotation (the key absent). With
    /// rotation an existing file is appended to, as lumberjack does.
    pub rotation: Option<RotationConfig>,
    /// `json` (one OTLP/JSON request per line) or `proto` (length-prefixed
    /// protobuf requests). Default `json`.
    #[serde(default)]
    pub format: FileFormat,
    /// `zstd` compresses each request, written length-prefixed. Default
    /// none.
    #[serde(default)]
    pub compression: String,
    /// How often buffered output is flushed to the file. Default `1s`.
    #[serde(
        default = "default_flush_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub flush_interval: Duration,
    /// Create the file's parent directory at start. Default `false`.
    #[serde(default)]
    pub create_directory: bool,
    /// Octal permissions of created directories (minus umask); needs
    /// `create_directory`. Default `0755`.
    #[serde(default)]
    pub directory_permissions: String,
    /// Per-resource files are not supported; only `enabled: false` is accepted.
    pub group_by: Option<GroupByConfig>,
    /// The exporter's queue. Default enabled (tracegate gives every exporter
    /// its own queue, so a slow disk never stalls the pipeline; the
    /// collector's file exporter writes synchronously).
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

/// `rotation:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Size in MiB after which the file is rotated. Default 100.
    #[serde(default)]
    pub max_megabytes: u64,
    /// Remove backups older than this many days; 0 keeps them regardless of
    /// age. Default 0.
    #[serde(default)]
    pub max_days: u64,
    /// Number of backups kept; 0 keeps all. Default 100.
    #[serde(default = "default_max_backups")]
    pub max_backups: u64,
    /// Name backups in local time. Not supported yet: backups are named in
    /// UTC (a warning says so). Default `false`.
    #[serde(default)]
    pub localtime: bool,
}

/// `group_by:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupByConfig {
    /// Must be `false`: grouping by resource attribute is not implemented.
    #[serde(default)]
    pub enabled: bool,
    /// Accepted for compatibility.
    pub resource_attribute: Option<String>,
    /// Accepted for compatibility.
    pub max_open_files: Option<u64>,
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backups() -> u64 {
    100
}

const MIB: u64 = 1024 * 1024;

impl RotationConfig {
    fn max_bytes(&self) -> u64 {
        if self.max_megabytes == 0 {
            100 * MIB
        } else {
            self.max_megabytes.saturating_mul(MIB)
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let mut warnings = Vec::new();
        if self.path.is_empty() {
            return Err(error("path", "path must be non-empty"));
        }
        if self.append && !self.compression.is_empty() {
            return Err(error(
                "append",
                "append and compression enabled at the same time is not supported",
            ));
        }
        if self.append && self.rotation.is_some() {
            return Err(error(
                "append",
                "append and rotation enabled at the same time is not supported",
            ));
        }
        if !matches!(self.compression.as_str(), "" | "zstd") {
            return Err(error(
                "compression",
                format!(
                    "compression {:?} is not supported; use zstd",
                    self.compression
                ),
            ));
        }
        if self.group_by.as_ref().is_some_and(|g| g.enabled) {
            return Err(error(
                "group_by.enabled",
                "writing a file per resource (group_by) is not implemented by tracegate",
            ));
        }
        if !self.directory_permissions.is_empty() {
            if !self.create_directory {
                return Err(error(
                    "directory_permissions",
                    "directory_permissions requires create_directory to be true",
                ));
            }
            self.permissions()?;
        }
        if self.rotation.as_ref().is_some_and(|r| r.localtime) {
            warnings.push("rotation.localtime is not supported: backup names use UTC".into());
        }
        self.sending_queue.validate()?;
        Ok(warnings)
    }

    fn permissions(&self) -> Result<u32, ComponentError> {
        let text = if self.directory_permissions.is_empty() {
            "0755"
        } else {
            &self.directory_permissions
        };
        let mode = u32::from_str_radix(text, 8).map_err(|_| {
            error(
                "directory_permissions",
                "directory_permissions value must be a valid octal representation",
            )
        })?;
        if mode & !0o777 != 0 {
            return Err(error(
                "directory_permissions",
                "directory_permissions contain invalid bits for file access",
            ));
        }
        Ok(mode)
    }
}

enum Command {
    Write(Vec<u8>, oneshot::Sender<io::Result<()>>),
    Close(oneshot::Sender<io::Result<()>>),
}

pub struct FileExporter {
    format: FileFormat,
    zstd: bool,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    path: PathBuf,
}

impl FileExporter {
    /// Opens (or creates) the file and starts the writer thread; an
    /// unwritable path is an error here.
    pub fn new(id: &str, config: &Config) -> Result<FileExporter, String> {
        let path = PathBuf::from(&config.path);
        if config.create_directory {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let mode = config.permissions().map_err(|e| e.to_string())?;
                create_directory(parent, mode)
                    .map_err(|e| format!("cannot create directory {}: {e}", parent.display()))?;
            }
        }
        let rotation = config.rotation.clone();
        // Lumberjack appends to an existing file when rotating.
        let append = config.append || rotation.is_some();
        let file =
            open(&path, append).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut sink = FileSink {
            path: path.clone(),
            file: BufWriter::with_capacity(256 * 1024, file),
            written,
            dirty: false,
            rotation,
        };
        let (tx, rx) = mpsc::channel();
        let flush_interval = config.flush_interval;
        std::thread::Builder::new()
            .name(format!("file-exporter-{id}"))
            .spawn(move || sink.run(rx, flush_interval))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(FileExporter {
            format: config.format,
            zstd: config.compression == "zstd",
            commands: Mutex::new(Some(tx)),
            path,
        })
    }

    /// The batch as written to the file. JSON and zstd cost far more than
    /// the write: for a large batch they run on the blocking pool
    /// ([`offload`]); a protobuf record is a copy.
    async fn record(&self, batch: &SpanBatch) -> Result<Vec<u8>, ExportError> {
        let (format, zstd) = (self.format, self.zstd);
        // Only a large batch is worth the copy of its tables a thread of
        // the pool needs.
        if (format == FileFormat::Proto && !zstd) || batch.encoded_len() < offload::ENCODE_BYTES {
            return record(format, zstd, batch);
        }
        let batch = batch.clone();
        offload::run(move || record(format, zstd, &batch))
            .await
            .unwrap_or_else(|e| Err(ExportError::Permanent(format!("cannot encode: {e}"))))
    }

    fn sender(&self) -> Option<mpsc::Sender<Command>> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One record: a JSON line, or a length-prefixed protobuf request,
/// compressed with zstd if asked.
fn record(format: FileFormat, zstd: bool, batch: &SpanBatch) -> Result<Vec<u8>, ExportError> {
    let message = match format {
        FileFormat::Json => batch.to_json(),
        FileFormat::Proto => batch.bytes().to_vec(),
    };
    if !zstd && format == FileFormat::Json {
        let mut line = message;
        line.push(b'\n');
        return Ok(line);
    }
    let message = if zstd {
        zstd::bulk::compress(&message, zstd::DEFAULT_COMPRESSION_LEVEL)
            .map_err(|e| ExportError::Permanent(format!("cannot compress: {e}")))?
    } else {
        message
    };
    let len = u32::try_from(message.len())
        .map_err(|_| ExportError::Permanent("request larger than 4 GiB".into()))?;
    let mut framed = Vec::with_capacity(4 + message.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&message);
    Ok(framed)
}

#[async_trait]
impl Exporter for FileExporter {
    async fn export(&self, batch: &SpanBatch) -> Result<Delivered, ExportError> {
        let record = self.record(batch).await?;
        let (reply, done) = oneshot::channel();
        let closed = || ExportError::Permanent(format!("{} is closed", self.path.display()));
        self.sender()
            .ok_or_else(closed)?
            .send(Command::Write(record, reply))
            .map_err(|_| closed())?;
        match done.await {
            Ok(Ok(())) => Ok(Delivered::default()),
            Ok(Err(e)) => Err(ExportError::Permanent(format!(
                "cannot write {}: {e}",
                self.path.display()
            ))),
            Err(_) => Err(closed()),
        }
    }

    async fn shutdown(&self) {
        let Some(sender) = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let (reply, done) = oneshot::channel();
        if sender.send(Command::Close(reply)).is_ok() {
            if let Ok(Err(e)) = done.await {
                tracing::error!(path = %self.path.display(), error = %e, "cannot flush the file");
            }
        }
    }
}

fn open(path: &Path, append: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path)
}

#[cfg(unix)]
fn create_directory(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

#[cfg(not(unix))]
fn create_directory(dir: &Path, _mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// The file as the writer thread owns it.
struct FileSink {
    path: PathBuf,
    file: BufWriter<File>,
    /// Bytes in the current file, for rotation.
    written: u64,
    /// Unflushed writes since the last flush.
    dirty: bool,
    rotation: Option<RotationConfig>,
}

impl FileSink {
    fn run(&mut self, commands: mpsc::Receiver<Command>, flush_interval: Duration) {
        let mut last_flush = Instant::now();
        loop {
            let command = if self.dirty {
                let wait = flush_interval.saturating_sub(last_flush.elapsed());
                match commands.recv_timeout(wait) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => break,
                }
            };
            match command {
                Some(Command::Write(record, reply)) => {
                    let _ = reply.send(self.write(&record));
                }
                Some(Command::Close(reply)) => {
                    let _ = reply.send(self.file.flush());
                    return;
                }
                None => {}
            }
            if self.dirty && last_flush.elapsed() >= flush_interval {
                if let Err(e) = self.file.flush() {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot flush the file");
                }
                self.dirty = false;
                last_flush = Instant::now();
            }
        }
        let _ = self.file.flush();
    }

    fn write(&mut self, record: &[u8]) -> io::Result<()> {
        if let Some(rotation) = &self.rotation {
            // A record larger than the limit gets a file of its own rather
            // than being refused.
            if self.written > 0 && self.written + record.len() as u64 > rotation.max_bytes() {
                self.rotate()?;
            }
        }
        self.file.write_all(record)?;
        self.written += record.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Moves the current file to a timestamped backup, starts a new one and
    /// removes backups beyond `max_backups` / older than `max_days`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let now = SystemTime::now();
        let mut backup = backup_path(&self.path, now);
        let mut bump = 1;
        while backup.exists() {
            backup = backup_path(&self.path, now + Duration::from_millis(bump));
            bump += 1;
        }
        fs::rename(&self.path, &backup)?;
        self.file = BufWriter::with_capacity(256 * 1024, open(&self.path, false)?);
        self.written = 0;
        self.dirty = false;
        if let Err(e) = self.remove_old_backups(now) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove old backups");
        }
        Ok(())
    }

    fn remove_old_backups(&self, now: SystemTime) -> io::Result<()> {
        let Some(rotation) = &self.rotation else {
            return Ok(());
        };
        let (dir, prefix, extension) = backup_parts(&self.path);
        let mut backups: Vec<(String, PathBuf)> = Vec::new();
        for entry in fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stamp) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(&extension))
            {
                if parse_stamp(stamp).is_some() {
                    backups.push((stamp.to_string(), entry.path()));
                }
            }
        }
        // The stamp format sorts chronologically as text; newest first.
        backups.sort_by(|a, b| b.0.cmp(&a.0));
        let cutoff = (rotation.max_days > 0).then(|| {
            now.checked_sub(Duration::from_secs(rotation.max_days * 86_400))
                .unwrap_or(UNIX_EPOCH)
        });
        for (i, (stamp, path)) in backups.iter().enumerate() {
            let too_many = rotation.max_backups > 0 && i as u64 >= rotation.max_backups;
            let too_old = match (cutoff, parse_stamp(stamp)) {
                (Some(cutoff), Some(at)) => at < cutoff,
                _ => false,
            };
            if too_many || too_old {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// `(directory, "<stem>-", ".<ext>")` of a path's backups.
fn backup_parts(path: &Path) -> (&Path, String, String) {
    let dir = path.parent().unwrap_or(Path::new(""));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (dir, format!("{stem}-"), extension)
}

/// `<dir>/<stem>-2006-01-02T15-04-05.000<.ext>`, in UTC.
fn backup_path(path: &Path, at: SystemTime) -> PathBuf {
    let (dir, prefix, extension) = backup_parts(path);
    dir.join(format!("{prefix}{}{extension}", stamp(at)))
}

fn stamp(at: SystemTime) -> String {
    let t = UtcTime::of(at);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.nanos / 1_000_000
    )
}

fn parse_stamp(stamp: &str) -> Option<SystemTime> {
    let b = stamp.as_bytes();
    if b.len() != 23 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'.' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<u64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second, millis) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    unix_time(year as i64, month as u32, day as u32, hour, minute, second)?
        .checked_add(Duration::from_millis(millis))
}

impl super::BuildExporter for Config {
    fn sending_queue(&self) -> &QueueConfig {
        &self.sending_queue
    }

    // As the collector's file exporter: a failed write is not retried (a
    // retry could leave a half-written record before the whole one).
    fn build(&self, id: &str, _: &super::BuildContext) -> Result<super::Built<'_>, String> {
        let exporter = FileExporter::new(id, self)?;
        Ok(super::Built::new(
            exporter,
            &self.sending_queue,
            super::RetryConfig::disabled(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use crate::exporter::test_support::{sample_batch, valid_config};

    #[test]
    fn defaults_and_validation_follow_the_collector() {
        let c: Config = valid_config(serde_json::json!({"path": "out.jsonl"}));
        assert_eq!(c.format, FileFormat::Json);
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert!(c.rotation.is_none(), "no rotation unless the key is given");
        assert!(c.validate().unwrap().is_empty());
        let r: Config = valid_config(serde_json::json!({"path": "x", "rotation": {}}));
        let rotation = r.rotation.as_ref().unwrap();
        assert_eq!(
            (
                rotation.max_bytes(),
                rotation.max_backups,
                rotation.max_days
            ),
            (100 * MIB, 100, 0)
        );

        for (value, path) in [
            (serde_json::json!({}), "path"),
            (
                serde_json::json!({"path": "x", "append": true, "rotation": {}}),
                "append",
            ),
            (
                serde_json::json!({"path": "x", "append": true, "compression": "zstd"}),
                "append",
            ),
            (
                serde_json::json!({"path": "x", "compression": "gzip"}),
                "compression",
            ),
            (
                serde_json::json!({"path": "x", "group_by": {"enabled": true}}),
                "group_by.enabled",
            ),
            (
                serde_json::json!({"path": "x", "directory_permissions": "0755"}),
                "directory_permissions",
            ),
            (
                serde_json::json!({"path": "x", "create_directory": true, "directory_permissions": "9"}),
                "directory_permissions",
            ),
        ] {
            let err = valid_config::<Config>(value.clone())
                .validate()
                .unwrap_err();
            assert_eq!(err.path, path, "{value}: {err}");
        }
        let local: Config =
            valid_config(serde_json::json!({"path": "x", "rotation": {"localtime": true}}));
        assert_eq!(local.validate().unwrap().len(), 1);
        assert!(from_value::<Config>(serde_json::json!({"path": "x", "format": "xml"})).is_err());
        assert!(from_value::<Config>(
            serde_json::json!({"path": "x", "rotation": {"max_size": 1}})
        )
        .is_err());
    }

    #[tokio::test]
    async fn writes_one_otlp_json_request_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let exporter =
            FileExporter::new("file", &valid_config(serde_json::json!({"path": path}))).unwrap();
        let batches = [sample_batch(1, 2), sample_batch(2, 3)];
        for batch in &batches {
            exporter.export(batch).await.unwrap();
        }
        exporter.shutdown().await;
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, batch) in lines.iter().zip(&batches) {
            let parsed = SpanBatch::from_json(line.as_bytes()).expect("valid OTLP/JSON");
            assert_eq!(parsed.to_request(), batch.to_request());
            // Canonical OTLP/JSON: hex ids, times as strings, and no field
            // written with its default (the sample spans have no parent,
            // trace state, flags or schema URL).
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let span = &value["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
            assert_eq!(span["traceId"].as_str().map(str::len), Some(32), "{line}");
            assert!(span["startTimeUnixNano"].is_string(), "{line}");
            for written_default in ["null", "\"\"", ":0,", ":0}", "[]"] {
                assert!(
                    !line.contains(written_default),
                    "{written_default} in {line}"
                );
            }
            for absent in [
                "parentSpanId",
                "traceState",
                "schemaUrl",
                "droppedAttributesCount",
            ] {
                assert!(!line.contains(absent), "{absent} in {line}");
            }
        }
        assert!(
            exporter.export(&batches[0]).await.is_err(),
            "a closed file refuses writes"
        );
    }

    #[tokio::test]
    async fn proto_format_is_length_prefixed_and_optionally_zstd() {
        let dir = tempfile::tempdir().unwrap();
        for compression in ["", "zstd"] {
            let path = dir.path().join(format!("spans{compression}.bin"));
            let exporter = FileExporter::new(
                "file",
                &valid_config(serde_json::json!({"path": path, "format": "proto", "compression": compression})),
            )
            .unwrap();
            let batch = sample_batch(2, 2);
            exporter.export(&batch).await.unwrap();
            exporter.export(&batch).await.unwrap();
            exporter.shutdown().await;
            let bytes = fs::read(&path).unwrap();
            let mut rest = &bytes[..];
            let mut count = 0;
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                let message = &rest[4..4 + len];
                let message = if compression == "zstd" {
                    zstd::decode_all(message).unwrap()
                } else {
                    message.to_vec()
                };
                assert_eq!(&message[..], &batch.bytes()[..]);
                rest = &rest[4 + len..];
                count += 1;
            }
            assert_eq!(count, 2);
        }
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let exporter = FileExporter::new(
            "file",
            &valid_config(serde_json::json!({
                "path": path, "rotation": {"max_megabytes": 1, "max_backups": 2}
            })),
        )
        .unwrap();
        // About 0.4 MiB per request: the 1 MiB file holds two.
        let batch = sample_batch(16, 70);
        let line_len = batch.to_json().len() + 1;
        assert!(
            line_len as u64 > MIB / 3 && (line_len as u64) < MIB / 2,
            "{line_len}"
        );
        for _ in 0..9 {
            exporter.export(&batch).await.unwrap();
        }
        exporter.shutdown().await;

        let current = fs::read_to_string(&path).unwrap();
        assert_eq!(
            current.lines().count(),
            1,
            "9 lines: 4 full files and 1 line"
        );
        let mut backups: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &path)
            .collect();
        backups.sort();
        assert_eq!(backups.len(), 2, "older backups removed: {backups:?}");
        for backup in &backups {
            let name = backup.file_name().unwrap().to_string_lossy().into_owned();
            let stamp = name
                .strip_prefix("spans-")
                .and_then(|s| s.strip_suffix(".jsonl"))
                .unwrap();
            assert!(parse_stamp(stamp).is_some(), "{name}");
            let text = fs::read_to_string(backup).unwrap();
            assert!(text.len() as u64 <= MIB);
            assert_eq!(text.lines().count(), 2);
            for line in text.lines() {
                assert_eq!(SpanBatch::from_json(line.as_bytes()).unwrap().len(), 1120);
            }
        }
    }

    #[tokio::test]
    async fn creates_the_directory_when_asked_and_fails_at_start_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/spans.jsonl");
        let err = FileExporter::new("file", &valid_config(serde_json::json!({"path": nested})))
            .err()
            .expect("missing directory");
        assert!(err.contains("cannot open"), "{err}");
        let exporter = FileExporter::new(
            "file",
            &valid_config(serde_json::json!({"path": nested, "create_directory": true})),
        )
        .unwrap();
        exporter.export(&sample_batch(1, 1)).await.unwrap();
        exporter.shutdown().await;
        assert!(nested.exists());
    }

    #[test]
    fn stamps_round_trip() {
        let at = UNIX_EPOCH + Duration::from_millis(1_581_452_773_123);
        assert_eq!(stamp(at), "2020-02-11T20-26-13.123");
        assert_eq!(parse_stamp("2020-02-11T20-26-13.123"), Some(at));
        assert_eq!(parse_stamp("2020-13-11T20-26-13.123"), None);
        assert_eq!(parse_stamp("garbage"), None);
    }
}
