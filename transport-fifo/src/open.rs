//! Non-blocking opens of one FIFO end, relative to the pool directory, refusing
//! symlinks (`O_NOFOLLOW`) and anything that is not a FIFO.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use tokio::net::unix::pipe;

/// Flags common to every open: never block, never follow a symlink, never leak
/// into a child (a sibling worker holding a write end would hide EOF).
const COMMON: OFlags = OFlags::NONBLOCK
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// A directory FIFOs are opened in: its descriptor for the `*at` calls, its path
/// for the messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) path: &'a Path,
}

/// Opens `name` in `dir` with `access`, checking that it is a FIFO.
fn open_fifo(dir: BorrowedFd<'_>, name: &str, access: OFlags) -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::openat(dir, name, access | COMMON, Mode::empty())?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::Fifo {
        return Err(Errno::INVAL);
    }
    Ok(fd)
}

/// Maps an open error to an `io::Error` that names the FIFO by its full path.
fn named(dir: At<'_>, name: &str, e: Errno) -> io::Error {
    let kind = io::Error::from(e).kind();
    let why = match e {
        Errno::LOOP => "is a symlink".to_owned(),
        Errno::INVAL => "is not a FIFO".to_owned(),
        other => other.to_string(),
    };
    let path = dir.path.join(name);
    io::Error::new(kind, format!("cannot open FIFO {}: {why}", path.display()))
}

/// The manager's read end. A non-blocking open for reading succeeds at once.
pub(crate) fn receiver(dir: At<'_>, name: &str) -> io::Result<pipe::Receiver> {
    let fd = open_fifo(dir.fd, name, OFlags::RDONLY).map_err(|e| named(dir, name, e))?;
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// An extra write end of a FIFO we already read from (so it opens at once, with no
/// `O_RDWR` needed): it keeps the reader from seeing EOF before the worker has
/// opened its own write end.
pub(crate) fn keepalive(dir: At<'_>, name: &str) -> io::Result<OwnedFd> {
    open_fifo(dir.fd, name, OFlags::WRONLY).map_err(|e| named(dir, name, e))
}

/// The manager's write end, or `Ok(None)` while no reader has the FIFO open
/// (`ENXIO`): the caller retries until the worker has opened its read end.
pub(crate) fn try_sender(dir: At<'_>, name: &str) -> io::Result<Option<pipe::Sender>> {
    match open_fifo(dir.fd, name, OFlags::WRONLY) {
        Ok(fd) => pipe::Sender::from_owned_fd_unchecked(fd).map(Some),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(named(dir, name, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn scratch() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "transport-fifo-open-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn refuses_symlinks_and_regular_files() {
        let dir = scratch();
        std::fs::write(dir.join("plain"), b"").unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.join("real"), Mode::RUSR | Mode::WUSR).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let dir_fd = std::fs::File::open(&dir).unwrap();
        let at = At {
            fd: dir_fd.as_fd(),
            path: &dir,
        };

        let plain = receiver(at, "plain").unwrap_err();
        let expected = format!(
            "cannot open FIFO {}: is not a FIFO",
            dir.join("plain").display()
        );
        assert_eq!(plain.to_string(), expected);
        let link = receiver(at, "link").unwrap_err();
        assert!(link.to_string().contains("symlink"), "{link}");
        assert!(try_sender(at, "link").is_err());
        // The real FIFO: no reader yet, so the sender is not available; then it is.
        assert!(try_sender(at, "real").unwrap().is_none());
        let _rx = receiver(at, "real").unwrap();
        assert!(try_sender(at, "real").unwrap().is_some());

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
