//! The tail sampler's storage: `tail_sampling: tail_storage: <extension
//! id>` names a started storage extension, either a `file_storage` or the
//! collector's `pebble_tail_storage`, which tracegate serves with the same
//! store as `file_storage` (a locked directory of
//! [`tracegate_storage::Log`]s, see [`crate::file_storage`]): the
//! collector's Pebble database is not used, and unlike it, tracegate
//! reopens what it wrote after a restart. Both reach the processor the same
//! way, through [`BuildContext::storages`].

use std::sync::Arc;

use serde::Deserialize;

use crate::config::{error, ComponentError};
use crate::context::BuildContext;
use crate::extension::{BuildExtension, RunningExtension, Started};
use crate::file_storage::{self, FileStorage};
use crate::processor::tail_sampling::journal::{JournalPlace, DECISIONS_LOG};

/// `extensions: pebble_tail_storage[/name]:`, with the collector's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PebbleTailStorageConfig {
    /// The directory the tail sampler's journal is kept in (created if
    /// missing, as the collector's Pebble database creates it). Required.
    #[serde(default)]
    pub directory: String,
    /// The most the directory may hold, in MiB; `0`: unbounded. Near the
    /// bound the tail sampler decides its oldest pending traces early, at
    /// it new spans are refused (retryable). Default `0`.
    #[serde(default)]
    pub max_storage_size_mib: i64,
}

impl PebbleTailStorageConfig {
    /// The collector's checks.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        if self.directory.is_empty() {
            return Err(error("directory", "directory must be set"));
        }
        if self.max_storage_size_mib < 0 {
            return Err(error(
                "max_storage_size_mib",
                "max_storage_size_mib must be greater than or equal to zero",
            ));
        }
        Ok(Vec::new())
    }

    /// The same store as a `file_storage` extension with these settings.
    fn as_file_storage(&self) -> file_storage::Config {
        file_storage::Config {
            directory: self.directory.clone(),
            create_directory: true,
            max_size_mib: self.max_storage_size_mib.max(0) as u64,
            ..file_storage::Config::default()
        }
    }
}

#[async_trait::async_trait]
impl BuildExtension for PebbleTailStorageConfig {
    async fn start(&self, id: &str, _: &BuildContext) -> Started {
        let storage = FileStorage::open(id, &self.as_file_storage())?;
        tracing::info!(
            extension = %id, directory = %storage.directory().display(),
            "tail storage ready"
        );
        Ok(RunningExtension {
            storage: Some(storage),
            ..RunningExtension::default()
        })
    }
}

/// The journal of processor `processor` in the started storage extension
/// `storage` (its subdirectory `processor_tail_sampling_<name>`).
pub fn journal_place(
    storage: &str,
    processor: &str,
    ctx: &BuildContext,
) -> Result<JournalPlace, ComponentError> {
    let storage = ctx
        .storages
        .get(storage)
        .map_err(|message| error("tail_storage", message))?;
    Ok(journal_in(storage, processor))
}

/// The journal of `processor` in `storage`: its spans log in the
/// subdirectory `processor_<type>_<name>`, its decisions log beside it
/// (`..._decisions`). The spans log's segments are a sixteenth of the
/// storage's bound (64 KiB to 8 MiB), so that deciding the oldest traces
/// frees whole segments well before the bound; the decisions log's are at
/// most 1 MiB, as it only ever holds a few snapshots' worth.
pub fn journal_in(storage: &FileStorage, processor: &str) -> JournalPlace {
    let bound = storage.max_bytes();
    let spans_segment = bound.map(|b| (b / 16).clamp(64 << 10, 8 << 20));
    let decisions_segment = Some(bound.map_or(1 << 20, |b| (b / 64).clamp(64 << 10, 1 << 20)));
    let (opener, sizer) = (storage.clone(), storage.clone());
    let processor = processor.to_string();
    JournalPlace {
        storage: storage.id().to_string(),
        open: Box::new(move |name, replay| {
            let segment_bytes = if name == DECISIONS_LOG {
                decisions_segment
            } else {
                spans_segment
            };
            opener
                .open_log_with("processor", &processor, name, segment_bytes, replay)
                .map_err(|e| e.to_string())
        }),
        bound,
        disk_use: Some(Arc::new(move || sizer.size_on_disk())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_value;
    use crate::processor::tail_sampling::journal::SPANS_LOG;

    #[test]
    fn the_collectors_keys_and_checks() {
        let config: PebbleTailStorageConfig = from_value(serde_json::json!({
            "directory": "/var/lib/otelcol/pebble-tail-storage",
            "max_storage_size_mib": 10240,
        }))
        .unwrap();
        assert_eq!(config.validate().unwrap(), Vec::<String>::new());
        assert_eq!(config.as_file_storage().max_size_mib, 10240);
        let missing: PebbleTailStorageConfig = from_value(serde_json::Value::Null).unwrap();
        assert_eq!(missing.validate().unwrap_err().path, "directory");
        let negative: PebbleTailStorageConfig =
            from_value(serde_json::json!({"directory": "/x", "max_storage_size_mib": -1})).unwrap();
        assert_eq!(
            negative.validate().unwrap_err().path,
            "max_storage_size_mib"
        );
        assert!(from_value::<PebbleTailStorageConfig>(serde_json::json!({"dir": "/x"})).is_err());
    }

    #[tokio::test]
    async fn it_starts_as_a_storage_the_tail_sampler_finds_by_id() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("made/by/the/extension");
        let config = PebbleTailStorageConfig {
            directory: dir.display().to_string(),
            max_storage_size_mib: 1,
        };
        let running = config
            .start("pebble_tail_storage", &BuildContext::default())
            .await
            .unwrap();
        let storage = running.storage.expect("a storage");
        assert_eq!(storage.max_bytes(), Some(1 << 20));
        let ctx = BuildContext {
            storages: file_storage::Storages::new([storage]),
            ..BuildContext::default()
        };
        let place = journal_place("pebble_tail_storage", "tail_sampling/x", &ctx).unwrap();
        assert_eq!(place.bound, Some(1 << 20));
        let mut place = place;
        let (log, _) = (place.open)(SPANS_LOG, &mut |_, _| {}).unwrap();
        assert!(log.dir().ends_with("processor_tail_sampling_x"));
        assert_eq!(log.options().segment_bytes, 64 << 10);
        let (decisions, _) = (place.open)(DECISIONS_LOG, &mut |_, _| {}).unwrap();
        assert!(decisions
            .dir()
            .ends_with("processor_tail_sampling_x_decisions"));
        let missing = journal_place("file_storage/nope", "tail_sampling", &ctx).unwrap_err();
        assert!(
            missing.message.contains("not a started storage extension"),
            "{missing:?}"
        );
    }
}
