//! Noticing that a file was replaced or rewritten, by polling its
//! identity (inode, size, modification time) rather than through inotify:
//! one `stat` per check, no watcher to re-arm when a Kubernetes Secret or
//! ConfigMap swaps its symlink, and no extra dependency.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// How often a watched file is looked at: a change is in effect within
/// this (the collector's fsnotify watch sees it at once).
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    inode: u64,
    device: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// The identity of the file `path` names (following symlinks); `None`
/// when it cannot be had (missing, unreadable).
pub(crate) fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Identity {
        inode: meta.ino(),
        device: meta.dev(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Calls `reload` whenever the file at `path` changes, checking every
/// `every`, until `shutdown`. `seen` is the identity of the version
/// already loaded. A file that disappears is not a change: the next
/// version to appear is.
pub(crate) fn spawn_poll(
    path: PathBuf,
    seen: Option<Identity>,
    every: Duration,
    shutdown: CancellationToken,
    mut reload: impl FnMut() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut seen = seen;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = identity(&path);
            if now.is_some() && now != seen {
                seen = now;
                reload();
            }
        }
    });
}
