//! The PID file: held under an exclusive `flock` for the daemon's whole life, so
//! two daemons can never share one, and a stale file (its daemon is gone, so is
//! its lock) is told from a live one by the lock, not by guessing from the pid.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Why the PID file could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PidFileError {
    /// Another daemon holds it.
    #[error("already running (pid {pid})")]
    AlreadyRunning {
        /// The pid written in the file.
        pid: u32,
    },
    /// The file could not be opened (the cause names it).
    #[error("cannot use the PID file: {0}")]
    Open(io::Error),
    /// The file could not be locked or written.
    #[error("cannot use the PID file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A locked PID file holding this process's pid; removed when dropped.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    file: File,
}

impl PidFile {
    /// Opens (or creates, mode 0600) `path`, locks it exclusively without waiting,
    /// and writes our pid.
    ///
    /// # Errors
    /// [`PidFileError::AlreadyRunning`] when a live daemon holds the lock.
    pub(crate) fn acquire(path: &Path) -> Result<Self, PidFileError> {
        let io_err = |source| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        loop {
            let mut file = super::paths::open_private(
                path,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600),
            )
            .map_err(PidFileError::Open)?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Err(PidFileError::AlreadyRunning {
                        pid: read_pid(&mut file).unwrap_or(0),
                    })
                }
                Err(e) => return Err(io_err(e.into())),
            }
            // The previous owner may have unlinked the file between our open and
            // our lock: then we locked an orphan inode; start over.
            let same = match (file.metadata(), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0).map_err(io_err)?;
            file.rewind().map_err(io_err)?;
            writeln!(file, "{}", std::process::id()).map_err(io_err)?;
            file.flush().map_err(io_err)?;
            return Ok(Self {
                path: path.to_owned(),
                file,
            });
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Unlinked while still locked; the lock goes with the descriptor.
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

/// What the PID file at a path says about its daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No PID file.
    Absent,
    /// A file nobody holds: its daemon is gone.
    Stale,
    /// A live daemon holds it.
    Running(u32),
}

/// Looks at the PID file without disturbing a live daemon: a lock that can be
/// taken (and is released at once) means the file is stale.
pub(crate) fn probe(path: &Path) -> io::Result<Probe> {
    let mut file = match super::paths::open_private(path, std::fs::OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Absent),
        Err(e) => return Err(e),
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = flock(&file, FlockOperation::Unlock);
            Ok(Probe::Stale)
        }
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            Ok(Probe::Running(read_pid(&mut file).unwrap_or(0)))
        }
        Err(e) => Err(e.into()),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cp-pid-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let path = temp("second");
        let held = PidFile::acquire(&path).unwrap();
        assert_eq!(probe(&path).unwrap(), Probe::Running(std::process::id()));
        match PidFile::acquire(&path) {
            Err(PidFileError::AlreadyRunning { pid }) => assert_eq!(pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        drop(held);
        assert_eq!(probe(&path).unwrap(), Probe::Absent);
    }

    #[test]
    fn an_unlocked_file_is_stale_and_can_be_taken_over() {
        let path = temp("stale");
        std::fs::write(&path, "999999\n").unwrap();
        assert_eq!(probe(&path).unwrap(), Probe::Stale);
        let held = PidFile::acquire(&path).unwrap();
        let text = std::fs::read_to_string(&held.path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
