//! [`PoolDir`]: the private directory one transport owns, and [`FifoPair`], the two
//! FIFOs of one worker inside it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::paths::{fifo_names, pool_dir_name, staging_dir_name, FifoNames, LOCK_FILE};
use crate::stale;

/// How many random names are tried before giving up on creating a directory.
const NAME_ATTEMPTS: usize = 16;

/// A 0700 directory of our own under a base directory, locked while it lives and
/// removed (with what we created in it, nothing else) when dropped.
pub(crate) struct PoolDir {
    base_fd: OwnedFd,
    name: OsString,
    path: PathBuf,
    fd: OwnedFd,
    /// Held with `flock` so that other pools' stale sweeps see us alive.
    _lock: OwnedFd,
    next_seq: AtomicU64,
}

impl fmt::Debug for PoolDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolDir")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PoolDir {
    /// Sweeps stale pool directories under `base`, then creates ours there.
    ///
    /// The directory is made and locked under a staging name the sweep ignores, and
    /// only then renamed to its scheme name: no other pool's sweep can ever see an
    /// unlocked directory of a live pool.
    pub(crate) fn create(base: &Path) -> io::Result<Self> {
        let base = base.canonicalize()?;
        let base_fd = stale::open_base(&base)?;
        if let Err(e) = stale::sweep(base_fd.as_fd(), &base) {
            tracing::debug!(base = %base.display(), error = %e, "cannot list the FIFO base dir");
        }
        let staging = make_staging_dir(base_fd.as_fd())?;
        let published = set_up(base_fd.as_fd(), &staging).and_then(|(fd, lock)| {
            let name = publish(base_fd.as_fd(), &staging)?;
            Ok((name, fd, lock))
        });
        match published {
            Ok((name, fd, lock)) => Ok(Self {
                path: base.join(&name),
                base_fd,
                name: name.into(),
                fd,
                _lock: lock,
                next_seq: AtomicU64::new(0),
            }),
            Err(e) => {
                if let Ok(fd) =
                    rustix::fs::openat(&base_fd, &staging, stale::DIR_FLAGS, Mode::empty())
                {
                    let _ = stale::clear_entries(fd.as_fd());
                }
                let _ = stale::remove_dir(base_fd.as_fd(), OsStr::new(&staging));
                Err(e)
            }
        }
    }

    /// The directory's path (what workers are told, joined with a FIFO name).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, for `*at` calls.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory to open FIFOs in (descriptor and path).
    pub(crate) fn at(&self) -> crate::open::At<'_> {
        crate::open::At {
            fd: self.fd(),
            path: self.path(),
        }
    }
}

impl Drop for PoolDir {
    fn drop(&mut self) {
        match stale::clear_entries(self.fd.as_fd()) {
            Ok(true) => match stale::remove_dir(self.base_fd.as_fd(), &self.name) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(dir = %self.path.display(), "FIFO dir not empty; left in place")
                }
                Err(e) => {
                    tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove the FIFO dir")
                }
            },
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(dir = %self.path.display(), error = %e, "cannot clear the FIFO dir")
            }
        }
        // `_lock` closes after this, so the lock is held until the directory is gone.
    }
}

/// Makes a new 0700 directory with a fresh staging name under `base_fd`.
fn make_staging_dir(base_fd: BorrowedFd<'_>) -> io::Result<String> {
    for _ in 0..NAME_ATTEMPTS {
        let name = staging_dir_name(std::process::id(), fastrand::u64(..));
        match rustix::fs::mkdirat(base_fd, &name, Mode::RWXU) {
            Ok(()) => return Ok(name),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a FIFO dir",
    ))
}

/// Opens the staging directory, makes its mode exactly 0700 (mkdir applied the
/// umask), and creates and locks its lock file.
fn set_up(base_fd: BorrowedFd<'_>, staging: &str) -> io::Result<(OwnedFd, OwnedFd)> {
    let fd = rustix::fs::openat(base_fd, staging, stale::DIR_FLAGS, Mode::empty())?;
    rustix::fs::fchmod(&fd, Mode::RWXU)?;
    let lock = rustix::fs::openat(
        &fd,
        LOCK_FILE,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?;
    rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)?;
    Ok((fd, lock))
}

/// Renames the staging directory to a fresh name of our scheme, never replacing
/// anything.
fn publish(base_fd: BorrowedFd<'_>, staging: &str) -> io::Result<String> {
    for _ in 0..NAME_ATTEMPTS {
        let name = pool_dir_name(std::process::id(), fastrand::u64(..));
        match rename_noreplace(base_fd, staging, &name) {
            Ok(()) => return Ok(name),
            Err(Errno::EXIST | Errno::NOTEMPTY) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a FIFO dir",
    ))
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn rename_noreplace(dir: BorrowedFd<'_>, from: &str, to: &str) -> Result<(), Errno> {
    rustix::fs::renameat_with(dir, from, dir, to, rustix::fs::RenameFlags::NOREPLACE)
}

/// Without an atomic no-replace rename, checks first (the random name makes a
/// collision in the gap all but impossible).
#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
fn rename_noreplace(dir: BorrowedFd<'_>, from: &str, to: &str) -> Result<(), Errno> {
    match rustix::fs::statat(dir, to, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Err(Errno::EXIST),
        Err(Errno::NOENT) => rustix::fs::renameat(dir, from, dir, to),
        Err(e) => Err(e),
    }
}

/// The two FIFOs of one worker; unlinked when dropped.
pub(crate) struct FifoPair {
    dir: Arc<PoolDir>,
    names: FifoNames,
    /// Which of (to-worker, from-worker) we created, hence may unlink.
    created: [bool; 2],
}

impl fmt::Debug for FifoPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FifoPair")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl FifoPair {
    /// Creates a fresh pair (mode 0600) in `dir`.
    pub(crate) fn create(dir: Arc<PoolDir>) -> io::Result<Self> {
        let seq = dir.next_seq.fetch_add(1, Ordering::Relaxed);
        let names = fifo_names(seq);
        let fifo_mode = Mode::RUSR | Mode::WUSR;
        let order = [names.to_worker.clone(), names.from_worker.clone()];
        // Dropping `pair` unlinks what was created, should a later step fail.
        let mut pair = Self {
            dir,
            names,
            created: [false; 2],
        };
        for (i, name) in order.iter().enumerate() {
            let named = |e: Errno| {
                let path = pair.dir.path().join(name);
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("cannot make the FIFO {}: {e}", path.display()),
                )
            };
            rustix::fs::mkfifoat(pair.dir.fd(), name.as_str(), fifo_mode).map_err(named)?;
            pair.created[i] = true;
            // mkfifo applied the umask; make the mode exactly 0600.
            rustix::fs::chmodat(pair.dir.fd(), name.as_str(), fifo_mode, AtFlags::empty())
                .map_err(named)?;
        }
        Ok(pair)
    }

    /// The directory the pair lives in.
    pub(crate) fn dir(&self) -> &PoolDir {
        &self.dir
    }

    /// The pair's names.
    pub(crate) fn names(&self) -> &FifoNames {
        &self.names
    }
}

impl Drop for FifoPair {
    fn drop(&mut self) {
        let names = [&self.names.to_worker, &self.names.from_worker];
        for (name, _) in names.into_iter().zip(self.created).filter(|(_, c)| *c) {
            match rustix::fs::unlinkat(self.dir.fd(), name.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => tracing::warn!(fifo = %name, error = %e, "cannot unlink a FIFO"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_that_cannot_be_made_is_named_by_its_path() {
        let base = std::env::temp_dir().join(format!("fifo-dir-named-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dir = Arc::new(PoolDir::create(&base).unwrap());
        let planted = dir.path().join(fifo_names(0).to_worker);
        std::fs::write(&planted, b"in the way").unwrap();
        let err = FifoPair::create(Arc::clone(&dir)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("cannot make the FIFO {}", planted.display())),
            "{err}"
        );
        std::fs::remove_file(&planted).unwrap();
        drop(dir);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
