//! Safe removal of pool directories: our own on drop, and those a crashed pool
//! left behind, found when a transport starts.
//!
//! A directory is removed only when every entry in it is ours by name *and* type
//! (the lock file as a regular file, FIFOs of the scheme as FIFOs); anything else
//! keeps the whole directory where it is. Nothing is followed through a symlink.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::base::with_path;
use crate::paths::{is_fifo_name, parse_pool_dir_name, parse_staging_dir_name, LOCK_FILE};

/// Flags to open a directory we may delete from, without following a symlink.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Removes the stale FIFO directories under `base` that crashed pools left behind,
/// and returns the paths it removed (`base` joined with each directory's name).
///
/// This is the sweep a transport runs when it starts, on the same terms: only a
/// directory of the pool's name scheme, a real directory (not a symlink) owned by
/// the current user, whose owner is gone (its `pool.lock` can be locked; without a
/// lock file, its process is dead) and which holds nothing but the lock file and
/// FIFOs of the scheme; and a staging directory whose process is dead, on the same
/// terms. A live pool's directory is never touched. A missing `base` has nothing
/// to sweep.
///
/// # Errors
/// When `base` cannot be read, or is in a place another user could change (the
/// same check [`FifoTransport::in_dir`](crate::FifoTransport::in_dir) makes); the
/// message names the path. A directory that cannot be removed is left in place
/// and not reported.
pub fn sweep_stale(base: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
    let base = base.as_ref();
    match std::fs::symlink_metadata(base) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(with_path(base, &e)),
    }
    crate::base::check_trusted(base)?;
    let real = base.canonicalize().map_err(|e| with_path(base, &e))?;
    let base_fd = open_base(&real).map_err(|e| with_path(base, &e))?;
    let removed = sweep(base_fd.as_fd(), &real).map_err(|e| with_path(base, &e))?;
    Ok(removed.into_iter().map(|name| base.join(name)).collect())
}

/// Opens the base directory the sweep and a pool's directory work relative to.
pub(crate) fn open_base(base: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        rustix::fs::CWD,
        base,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Removes the pool directories under `base` whose owner is gone, and the
/// staging directories of processes that died while setting one up (a live
/// process's staging directory may not be locked yet: only its process's
/// death tells); returns the names of those it removed. Errors on one
/// directory are logged and skipped: a stale directory left in place is
/// harmless.
pub(crate) fn sweep(base_fd: BorrowedFd<'_>, base: &Path) -> io::Result<Vec<OsString>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(base)?.flatten() {
        let name = entry.file_name();
        let pid = match (parse_pool_dir_name(&name), parse_staging_dir_name(&name)) {
            (Some(pid), _) => pid,
            (None, Some(pid)) if !process_alive(pid) => pid,
            _ => continue,
        };
        match sweep_one(base_fd, &name, pid) {
            Ok(true) => {
                tracing::info!(dir = ?name, "removed a stale FIFO dir");
                removed.push(name);
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(dir = ?name, error = %e, "left a FIFO dir in place"),
        }
    }
    Ok(removed)
}

/// Removes one pool directory when its owner is gone; `Ok(false)` when it is kept.
fn sweep_one(base_fd: BorrowedFd<'_>, name: &OsStr, pid: u32) -> io::Result<bool> {
    let dir = match rustix::fs::openat(base_fd, name, DIR_FLAGS, Mode::empty()) {
        Ok(dir) => dir,
        // A symlink (ELOOP) or a non-directory of our name: not ours to touch.
        Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT | Errno::ACCESS) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if rustix::fs::fstat(&dir)?.st_uid != rustix::process::geteuid().as_raw() {
        return Ok(false);
    }
    // The lock stays held until the directory is gone.
    let Owner::Gone(_lock) = owner(&dir, pid)? else {
        return Ok(false);
    };
    if !clear_entries(dir.as_fd())? {
        return Ok(false);
    }
    remove_dir(base_fd, name)
}

/// Whether a pool directory's owner still lives.
enum Owner {
    /// Its lock is held, or (no lock file yet) its process exists.
    Alive,
    /// Gone; we now hold its lock (when it had one).
    Gone(Option<OwnedFd>),
}

/// Finds out whether the owner of pool directory `dir` (made by process `pid`) lives,
/// taking its lock when it does not.
fn owner(dir: &OwnedFd, pid: u32) -> io::Result<Owner> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    match rustix::fs::openat(dir, LOCK_FILE, flags, Mode::empty()) {
        Ok(lock) => {
            if FileType::from_raw_mode(rustix::fs::fstat(&lock)?.st_mode) != FileType::RegularFile {
                return Ok(Owner::Alive);
            }
            match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => Ok(Owner::Gone(Some(lock))),
                Err(Errno::WOULDBLOCK) => Ok(Owner::Alive),
                Err(e) => Err(e.into()),
            }
        }
        Err(Errno::NOENT) if !process_alive(pid) => Ok(Owner::Gone(None)),
        Err(Errno::NOENT | Errno::LOOP) => Ok(Owner::Alive),
        Err(e) => Err(e.into()),
    }
}

/// Whether process `pid` exists (or might: any doubt counts as alive).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH))
}

/// Unlinks every entry of `dir` when all of them are ours by name and type.
/// Returns `Ok(false)`, having deleted nothing, when something foreign is inside.
pub(crate) fn clear_entries(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let mut ours: Vec<CString> = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        if !is_ours(dir, name)? {
            tracing::warn!(entry = ?name, "a FIFO dir holds something the pool did not create; keeping it");
            return Ok(false);
        }
        ours.push(name.to_owned());
    }
    for name in ours {
        match rustix::fs::unlinkat(dir, name.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Whether `name` in `dir` is the lock file or a FIFO of our scheme, by name and type.
fn is_ours(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<bool> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    let kind = FileType::from_raw_mode(stat.st_mode);
    let bytes = name.to_bytes();
    Ok(
        (bytes == LOCK_FILE.as_bytes() && kind == FileType::RegularFile)
            || (is_fifo_name(bytes) && kind == FileType::Fifo),
    )
}

/// Removes the (empty) directory `name` of `base_fd`; `Ok(false)` when it is not empty.
pub(crate) fn remove_dir(base_fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match rustix::fs::unlinkat(base_fd, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(true),
        Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
