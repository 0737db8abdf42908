//! One process per directory: an exclusive `flock(2)` on `<dir>/LOCK`,
//! which the kernel releases when the process ends however it ends
//! (SIGKILL included), so a restart never finds a stale lock. The holder
//! writes its pid into the file so that the one refused can say who holds
//! it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

/// The lock file's name inside the locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "storage directory {} is in use by another process ({holder}); two processes \
         must not share a storage directory: give each its own `directory`",
        dir.display()
    )]
    Held {
        dir: PathBuf,
        /// Who holds it, as its lock file says (`pid 1234`), or `unknown`.
        holder: String,
    },
    #[error("cannot lock storage directory {}: {source}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

impl DirLock {
    /// Locks `dir` (which must exist), waiting up to `timeout` for another
    /// holder to let go.
    pub fn acquire(dir: &Path, timeout: Duration) -> Result<DirLock, LockError> {
        let io_error = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io_error)?;
        let deadline = Instant::now() + timeout;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    if Instant::now() >= deadline {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(LockError::Held {
                            dir: dir.to_path_buf(),
                            holder: if holder.is_empty() {
                                "unknown".to_string()
                            } else {
                                holder.to_string()
                            },
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10).min(timeout));
                }
                Err(e) => return Err(io_error(e.into())),
            }
        }
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        writeln!(file, "pid {}", std::process::id()).map_err(io_error)?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
