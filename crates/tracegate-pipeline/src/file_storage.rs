//! The `file_storage` extension, with the collector's keys: a directory
//! that components keep state in, one subdirectory (one
//! [`tracegate_storage::Log`]) per client, locked so that a second process
//! cannot use it at the same time. A started extension is reached by
//! components through [`BuildContext::storages`](crate::context::BuildContext).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tracegate_storage::{DirLock, Fsync, Log, LogOptions, OpenError, OpenReport, Position};

use crate::config::{error, ComponentError};
use crate::context::BuildContext;
use crate::extension::{BuildExtension, RunningExtension, Started};

/// `extensions: file_storage[/name]:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory the extension keeps its files in, one subdirectory
    /// per component. Default `/var/lib/otelcol/file_storage`.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// How long to wait for the directory's lock when another process
    /// holds it. Default `1s`.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Create `directory` (and its parents) when it does not exist.
    /// Default `false`: a missing directory is an error at startup.
    #[serde(default)]
    pub create_directory: bool,
    /// The permissions, in octal, `directory` and the components'
    /// subdirectories are created with (less the umask). Default `0750`.
    #[serde(default = "default_permissions")]
    pub directory_permissions: String,
    /// When written data is forced to the disk: `false` (default, the
    /// collector's) leaves it to the OS, `true` syncs every write before it
    /// is acknowledged, a duration such as `100ms` syncs at most that long
    /// after a write. tracegate's extension: the duration form.
    #[serde(default)]
    pub fsync: FsyncSetting,
    /// The collector's compaction settings. Accepted and checked as the
    /// collector checks them; tracegate's store deletes each segment as
    /// soon as everything in it is acknowledged, so there is nothing left
    /// for them to do.
    #[serde(default)]
    pub compaction: CompactionConfig,
    /// The collector's option to recreate a database it cannot open.
    /// Accepted; tracegate always starts, skipping and counting damaged
    /// records instead.
    #[serde(default)]
    pub recreate: bool,
    /// tracegate's bound on the directory's size, all components together:
    /// a write that would take it past this is refused (the queue reports
    /// itself full). `0`: no bound beyond each queue's `queue_size`.
    /// Default `0`.
    #[serde(default)]
    pub max_size_mib: u64,
}

/// `fsync:` — a bool as in the collector, or a sync interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsyncSetting(pub Fsync);

impl<'de> Deserialize<'de> for FsyncSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Interval(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(true) => Ok(FsyncSetting(Fsync::Always)),
            Raw::Flag(false) => Ok(FsyncSetting(Fsync::Never)),
            Raw::Interval(text) => {
                let every = crate::duration::parse(&text).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "fsync must be true, false or a duration such as 100ms: {e}"
                    ))
                })?;
                Ok(FsyncSetting(if every.is_zero() {
                    Fsync::Always
                } else {
                    Fsync::Interval(every)
                }))
            }
        }
    }
}

/// `compaction:` as the collector spells it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionConfig {
    #[serde(default)]
    pub on_start: bool,
    #[serde(default)]
    pub on_rebound: bool,
    /// Where the collector writes its compaction copy. Default: `directory`.
    #[serde(default)]
    pub directory: Option<String>,
    /// Default 65536.
    #[serde(default = "default_max_transaction_size")]
    pub max_transaction_size: i64,
    /// Default 100.
    #[serde(default = "default_rebound_needed")]
    pub rebound_needed_threshold_mib: i64,
    /// Default 10.
    #[serde(default = "default_rebound_trigger")]
    pub rebound_trigger_threshold_mib: i64,
    /// Default `5s`.
    #[serde(
        default = "default_check_interval",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub check_interval: Duration,
    #[serde(default)]
    pub cleanup_on_start: bool,
}

fn default_directory() -> String {
    "/var/lib/otelcol/file_storage".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_permissions() -> String {
    "0750".into()
}
fn default_max_transaction_size() -> i64 {
    65_536
}
fn default_rebound_needed() -> i64 {
    100
}
fn default_rebound_trigger() -> i64 {
    10
}
fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            on_start: false,
            on_rebound: false,
            directory: None,
            max_transaction_size: default_max_transaction_size(),
            rebound_needed_threshold_mib: default_rebound_needed(),
            rebound_trigger_threshold_mib: default_rebound_trigger(),
            check_interval: default_check_interval(),
            cleanup_on_start: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            directory: default_directory(),
            timeout: default_timeout(),
            create_directory: false,
            directory_permissions: default_permissions(),
            fsync: FsyncSetting::default(),
            compaction: CompactionConfig::default(),
            recreate: false,
            max_size_mib: 0,
        }
    }
}

impl Config {
    /// Pure checks (the directory itself is looked at when the extension
    /// starts).
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        if self.directory.is_empty() {
            return Err(error("directory", "directory must not be empty"));
        }
        parse_permissions(&self.directory_permissions)
            .map_err(|e| error("directory_permissions", e))?;
        if self.compaction.max_transaction_size < 0 {
            return Err(error(
                "compaction.max_transaction_size",
                "max transaction size for compaction cannot be less than 0",
            ));
        }
        if self.compaction.on_rebound && self.compaction.check_interval.is_zero() {
            return Err(error(
                "compaction.check_interval",
                "compaction check interval must be positive when rebound compaction is set",
            ));
        }
        let mut warnings = Vec::new();
        if self.compaction != CompactionConfig::default() {
            warnings.push(
                "compaction settings have no effect: tracegate deletes stored data as soon as \
                 it is acknowledged"
                    .to_string(),
            );
        }
        Ok(warnings)
    }

    fn mode(&self) -> u32 {
        parse_permissions(&self.directory_permissions).unwrap_or(0o750)
    }
}

/// `"0750"` → `0o750`.
fn parse_permissions(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 && !digits.is_empty() => Ok(mode),
        _ => Err(format!(
            "{text:?} is not octal permissions such as \"0750\""
        )),
    }
}

#[async_trait::async_trait]
impl BuildExtension for Config {
    async fn start(&self, id: &str, _: &BuildContext) -> Started {
        let storage = FileStorage::open(id, self)?;
        tracing::info!(
            extension = %id, directory = %storage.directory().display(),
            "file storage ready"
        );
        Ok(RunningExtension {
            storage: Some(storage),
            ..RunningExtension::default()
        })
    }
}

/// A started `file_storage` extension: its locked directory, where
/// components open their logs. Cheap to clone; the lock is held until the
/// last clone is gone.
#[derive(Clone)]
pub struct FileStorage {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    directory: PathBuf,
    fsync: Fsync,
    mode: u32,
    timeout: Duration,
    max_bytes: Option<u64>,
    clients: Mutex<Vec<Weak<Log>>>,
    _lock: DirLock,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("id", &self.inner.id)
            .field("directory", &self.inner.directory)
            .finish()
    }
}

impl FileStorage {
    /// Checks the directory (creating it if the config says so) and locks
    /// it. The error is the message for the user.
    pub fn open(id: &str, config: &Config) -> Result<FileStorage, String> {
        let directory = PathBuf::from(&config.directory);
        let mode = config.mode();
        match std::fs::metadata(&directory) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", directory.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !config.create_directory {
                    return Err(format!(
                        "directory {} does not exist: create it, or set create_directory: true",
                        directory.display()
                    ));
                }
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(&directory)
                    .map_err(|e| format!("cannot create directory {}: {e}", directory.display()))?;
            }
            Err(e) => {
                return Err(format!(
                    "problem accessing directory {}: {e}",
                    directory.display()
                ))
            }
        }
        let lock = DirLock::acquire(&directory, config.timeout).map_err(|e| e.to_string())?;
        Ok(FileStorage {
            inner: Arc::new(Inner {
                id: id.to_string(),
                directory,
                fsync: config.fsync.0,
                mode,
                timeout: config.timeout,
                max_bytes: (config.max_size_mib > 0).then_some(config.max_size_mib << 20),
                clients: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        })
    }

    /// The extension's id, e.g. `file_storage/queue`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    pub fn fsync(&self) -> Fsync {
        self.inner.fsync
    }

    /// The subdirectory of a client, named as the collector names its
    /// files: `<kind>_<type>_<name>[_<suffix>]` (`exporter_otlp_tempo_traces`),
    /// with anything but letters, digits, `.`, `-`, `_` and `~` replaced by `~`.
    pub fn client_directory(&self, kind: &str, component: &str, suffix: &str) -> PathBuf {
        let (kind_name, name) = component.split_once('/').unwrap_or((component, ""));
        let mut raw = format!("{kind}_{kind_name}_{name}");
        if !suffix.is_empty() {
            raw.push('_');
            raw.push_str(suffix);
        }
        let safe: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~') {
                    c
                } else {
                    '~'
                }
            })
            .collect();
        self.inner.directory.join(safe)
    }

    /// Opens a client's log in its subdirectory with the extension's fsync
    /// policy, replaying what it holds (see [`Log::open`]).
    pub fn open_log(
        &self,
        kind: &str,
        component: &str,
        suffix: &str,
        replay: impl FnMut(Position, &[u8]),
    ) -> Result<(Arc<Log>, OpenReport), OpenError> {
        self.open_log_with(kind, component, suffix, None, replay)
    }

    /// [`Self::open_log`] with the log's segments this large instead of
    /// the default 8 MiB (a client that frees its data in age order and
    /// must stay within a small bound wants smaller ones).
    pub fn open_log_with(
        &self,
        kind: &str,
        component: &str,
        suffix: &str,
        segment_bytes: Option<u64>,
        replay: impl FnMut(Position, &[u8]),
    ) -> Result<(Arc<Log>, OpenReport), OpenError> {
        let defaults = LogOptions::default();
        let options = LogOptions {
            fsync: self.inner.fsync,
            lock_timeout: self.inner.timeout,
            dir_mode: self.inner.mode,
            segment_bytes: segment_bytes.unwrap_or(defaults.segment_bytes),
            // Every client together is held to the bound by its callers,
            // which count the whole directory; each log alone is held to
            // it here too, whatever its caller checks.
            max_bytes: self.inner.max_bytes,
            ..defaults
        };
        let dir = self.client_directory(kind, component, suffix);
        let (log, report) = Log::open(&dir, options, replay)?;
        let log = Arc::new(log);
        let mut clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|c| c.strong_count() > 0);
        clients.push(Arc::downgrade(&log));
        Ok((log, report))
    }

    /// Bytes all open clients' logs take on disk.
    pub fn size_on_disk(&self) -> u64 {
        let clients = self.inner.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .iter()
            .filter_map(Weak::upgrade)
            .map(|log| log.size_on_disk())
            .sum()
    }

    /// `max_size_mib` in bytes, if set.
    pub fn max_bytes(&self) -> Option<u64> {
        self.inner.max_bytes
    }
}

/// The started storage extensions, by id: what components find through
/// [`BuildContext::storages`].
#[derive(Debug, Clone, Default)]
pub struct Storages(Arc<BTreeMap<String, FileStorage>>);

impl Storages {
    pub fn new(storages: impl IntoIterator<Item = FileStorage>) -> Storages {
        Storages(Arc::new(
            storages
                .into_iter()
                .map(|s| (s.id().to_string(), s))
                .collect(),
        ))
    }

    /// The storage extension `id`, or an error that says what exists.
    pub fn get(&self, id: &str) -> Result<&FileStorage, String> {
        self.0.get(id).ok_or_else(|| {
            let started: Vec<&str> = self.0.keys().map(String::as_str).collect();
            if started.is_empty() {
                format!(
                    "storage {id:?} is not a started storage extension: define it under \
                     extensions and list it in service::extensions"
                )
            } else {
                format!(
                    "storage {id:?} is not a started storage extension (started: {})",
                    started.join(", ")
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;

    #[test]
    fn defaults_are_the_collectors() {
        let config: Config = from_value(serde_json::Value::Null).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.directory, "/var/lib/otelcol/file_storage");
        assert_eq!(config.timeout, Duration::from_secs(1));
        assert!(!config.create_directory);
        assert_eq!(config.directory_permissions, "0750");
        assert_eq!(config.fsync, FsyncSetting(Fsync::Never));
        assert_eq!(config.compaction.max_transaction_size, 65_536);
        assert_eq!(config.compaction.check_interval, Duration::from_secs(5));
        assert_eq!(config.validate().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn fsync_is_a_bool_or_an_interval() {
        for (value, want) in [
            (serde_json::json!(true), Fsync::Always),
            (serde_json::json!(false), Fsync::Never),
            (
                serde_json::json!("200ms"),
                Fsync::Interval(Duration::from_millis(200)),
            ),
        ] {
            let config: Config = from_value(serde_json::json!({ "fsync": value })).unwrap();
            assert_eq!(config.fsync.0, want);
        }
        let err = from_value::<Config>(serde_json::json!({"fsync": "often"})).unwrap_err();
        assert!(err.message.contains("fsync"), "{err}");
    }

    #[test]
    fn the_collectors_checks_and_keys() {
        let config: Config = from_value(serde_json::json!({
            "directory": "/x",
            "compaction": {"on_start": true, "on_rebound": true, "directory": "/tmp",
                           "max_transaction_size": 1024, "rebound_needed_threshold_mib": 5,
                           "rebound_trigger_threshold_mib": 1, "check_interval": "1s",
                           "cleanup_on_start": true},
            "recreate": true,
        }))
        .unwrap();
        let warnings = config.validate().unwrap();
        assert!(warnings[0].contains("no effect"), "{warnings:?}");
        let config: Config = from_value(
            serde_json::json!({"compaction": {"on_rebound": true, "check_interval": "0s"}}),
        )
        .unwrap();
        assert_eq!(
            config.validate().unwrap_err().path,
            "compaction.check_interval"
        );
        let config: Config =
            from_value(serde_json::json!({"compaction": {"max_transaction_size": -1}})).unwrap();
        assert!(config.validate().is_err());
        let config: Config =
            from_value(serde_json::json!({"directory_permissions": "0985"})).unwrap();
        assert_eq!(config.validate().unwrap_err().path, "directory_permissions");
        assert!(from_value::<Config>(serde_json::json!({"directroy": "/x"})).is_err());
    }

    #[test]
    fn a_missing_directory_is_an_error_unless_it_may_be_created() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        let config = Config {
            directory: dir.display().to_string(),
            directory_permissions: "0700".into(),
            ..Config::default()
        };
        let err = FileStorage::open("file_storage", &config).unwrap_err();
        assert!(
            err.contains("does not exist") && err.contains("create_directory"),
            "{err}"
        );
        let config = Config {
            create_directory: true,
            ..config
        };
        let storage = FileStorage::open("file_storage", &config).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o700, 0, "{mode:o}");
        // A second start on the same directory is refused, naming it.
        let err = FileStorage::open(
            "file_storage/other",
            &Config {
                timeout: Duration::ZERO,
                ..config.clone()
            },
        )
        .unwrap_err();
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("in use by another process"), "{err}");
        assert_eq!(
            storage.client_directory("exporter", "otlp/tempo 1", "traces"),
            dir.join("exporter_otlp_tempo~1_traces")
        );
        assert_eq!(
            storage.client_directory("exporter", "otlp", "traces"),
            dir.join("exporter_otlp__traces")
        );
    }

    #[test]
    fn a_log_opened_through_the_storage_is_held_to_max_size_mib() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            directory: dir.path().display().to_string(),
            max_size_mib: 1,
            ..Config::default()
        };
        let storage = FileStorage::open("file_storage", &config).unwrap();
        assert_eq!(storage.max_bytes(), Some(1 << 20));
        let (log, _) = storage
            .open_log_with("exporter", "otlp", "traces", Some(256 << 10), |_, _| {})
            .unwrap();
        assert_eq!(log.options().max_bytes, Some(1 << 20));
        let record = vec![7u8; 60 << 10];
        let mut appended = 0;
        let err = loop {
            match log.append(&record) {
                Ok(_) => appended += 1,
                Err(e) => break e,
            }
            assert!(appended < 100, "never refused");
        };
        assert!(
            matches!(
                err,
                tracegate_storage::AppendError::Full { limit, .. } if limit == 1 << 20
            ),
            "{err}"
        );
        assert!(appended >= 14, "{appended} records of 60 KiB in 1 MiB");
        assert!(log.size_on_disk() <= 1 << 20);
        assert_eq!(storage.size_on_disk(), log.size_on_disk());
        // open_log takes the same bound.
        let (other, _) = storage
            .open_log("exporter", "otlp", "logs", |_, _| {})
            .unwrap();
        assert_eq!(other.options().max_bytes, Some(1 << 20));
    }

    #[test]
    fn an_unknown_storage_id_names_the_started_ones() {
        let storages = Storages::default();
        assert!(storages
            .get("file_storage")
            .unwrap_err()
            .contains("service::extensions"));
    }
}
