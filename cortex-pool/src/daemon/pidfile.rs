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
        // A probe or a clean-up holds the lock for a moment only: a lock
        // that stays taken for `BUSY_FOR` is a live daemon's.
        let started = std::time::Instant::now();
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
                    if started.elapsed() < BUSY_FOR {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                    return Err(PidFileError::AlreadyRunning {
                        pid: read_pid(&mut file).unwrap_or(0),
                    });
                }
                Err(e) => return Err(io_err(e.into())),
            }
            // The previous owner (or a clean-up) may have unlinked the file between our open and
            // our lock: then we locked an orphan inode; start over.
            if !still_at(&file, path) {
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

/// How long [`PidFile::acquire`] keeps trying a lock that is taken before it
/// calls the holder a live daemon: a [`probe`] or [`remove_if_stale`] holds it
/// for a moment only.
const BUSY_FOR: std::time::Duration = std::time::Duration::from_millis(500);

/// Removes the PID file at `path` when its daemon is gone, under the file's
/// lock, after `before_unlink` (what the dead daemon left beside it: its
/// socket): a daemon starting meanwhile waits for the lock and then finds the
/// file unlinked (and makes a new one), or holds the lock, and its file and
/// socket are left alone. `Ok(true)` when it was removed.
pub(crate) fn remove_if_stale(path: &Path, before_unlink: impl FnOnce()) -> io::Result<bool> {
    let file = match super::paths::open_private(path, std::fs::OpenOptions::new().read(true)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Still the file at `path` (not one a clean-up beside this one unlinked
    // and a daemon made anew)?
    if !still_at(&file, path) {
        return Ok(false);
    }
    before_unlink();
    std::fs::remove_file(path)?;
    Ok(true)
}

/// Whether `file` is still the file at `path` (not one unlinked meanwhile,
/// whose lock no one else will look at).
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
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

    /// A clean-up removes a stale file only, under its lock; a daemon that
    /// holds the file keeps it; a start that meets a lock held for a moment
    /// (a probe's, a clean-up's) waits for it instead of saying a daemon
    /// runs.
    #[test]
    fn a_stale_file_is_removed_under_its_lock_and_a_held_one_kept() {
        let path = temp("remove");
        std::fs::write(&path, "999999\n").unwrap();
        let mut beside = false;
        assert!(remove_if_stale(&path, || beside = true).unwrap());
        assert!(beside, "what the daemon left beside it went first");
        assert_eq!(probe(&path).unwrap(), Probe::Absent);
        assert!(!remove_if_stale(&path, || {}).unwrap());
        let held = PidFile::acquire(&path).unwrap();
        assert!(!remove_if_stale(&path, || panic!("a live daemon's files are kept")).unwrap());
        assert_eq!(probe(&path).unwrap(), Probe::Running(std::process::id()));
        drop(held);

        std::fs::write(&path, "999999\n").unwrap();
        let probing = File::open(&path).unwrap();
        flock(&probing, FlockOperation::NonBlockingLockShared).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(probing);
        });
        let taken = PidFile::acquire(&path).expect("a start waits out a probe's lock");
        release.join().unwrap();
        drop(taken);
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
