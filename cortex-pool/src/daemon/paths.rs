//! Where the daemon keeps its files: one runtime directory holding `daemon.sock`,
//! `daemon.pid`, `daemon.log` and `fifo/`, each of which can be configured apart.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The daemon's file locations, resolved from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paths {
    /// The runtime directory (created 0700).
    pub(crate) dir: PathBuf,
    /// The control socket.
    pub(crate) socket: PathBuf,
    /// The PID file (locked while the daemon lives).
    pub(crate) pid: PathBuf,
    /// The log file `daemon start` appends to.
    pub(crate) log: PathBuf,
    /// The base directory of the fifo transport's private directories.
    pub(crate) fifo: PathBuf,
}

/// The default runtime directory: `$CORTEX_POOL_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/cortex-pool`, else `/tmp/cortex-pool-<uid>`.
pub(crate) fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORTEX_POOL_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("cortex-pool");
    }
    PathBuf::from(format!("/tmp/cortex-pool-{}", uid()))
}

/// This process's real user id.
pub(crate) fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

impl Paths {
    /// The locations under `dir`, each replaced by its override when given.
    pub(crate) fn new(
        dir: PathBuf,
        socket: Option<PathBuf>,
        pid: Option<PathBuf>,
        log: Option<PathBuf>,
        fifo: Option<PathBuf>,
    ) -> Self {
        Self {
            socket: socket.unwrap_or_else(|| dir.join("daemon.sock")),
            pid: pid.unwrap_or_else(|| dir.join("daemon.pid")),
            log: log.unwrap_or_else(|| dir.join("daemon.log")),
            fifo: fifo.unwrap_or_else(|| dir.join("fifo")),
            dir,
        }
    }

    /// Whether the fifo base is the runtime directory's own `fifo/` (which the
    /// daemon creates and removes) rather than one the user configured.
    pub(crate) fn owns_fifo_dir(&self) -> bool {
        self.fifo == self.dir.join("fifo")
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or checks an existing one:
/// it must be a directory owned by us; group and other bits are removed.
///
/// # Errors
/// When it cannot be created, is not a directory, or belongs to another user; every
/// error names the path.
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    let not_a_dir = || {
        io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{}: is not a directory", dir.display()),
        )
    };
    if std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(not_a_dir());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| with_path(dir, &e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| with_path(dir, &e))?;
    if !meta.is_dir() {
        return Err(not_a_dir());
    }
    if meta.uid() != uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to us (uid {})",
                dir.display(),
                meta.uid(),
                uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(dir, &e))?;
    }
    Ok(())
}

/// `e`, with the path it concerns in front of its message.
pub(crate) fn with_path(path: &Path, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Opens a file of the runtime directory with `options` plus `O_NOFOLLOW`, then
/// checks what was opened: a regular file owned by us (group and other bits are
/// removed). A planted symlink, a foreign file or a non-file is refused with an
/// error naming the path.
///
/// # Errors
/// The open's error, or the refusal.
pub(crate) fn open_private(
    path: &Path,
    options: &mut std::fs::OpenOptions,
) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: {why}; refusing to use it", path.display()),
        )
    };
    let file = options
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| match rustix::io::Errno::from_io_error(&e) {
            Some(rustix::io::Errno::LOOP) => refuse("is a symbolic link".into()),
            _ => io::Error::new(e.kind(), format!("{}: {e}", path.display())),
        })?;
    let meta = file.metadata().map_err(|e| with_path(path, &e))?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(refuse(format!("belongs to uid {}, not to us", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o700))
            .map_err(|e| with_path(path, &e))?;
    }
    Ok(file)
}

/// Makes sure the parent directory of `file` exists (0700 when we create it).
///
/// # Errors
/// When it cannot be created; the error names the parent.
pub(crate) fn ensure_parent(file: &Path) -> io::Result<()> {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| with_path(parent, &e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_live_in_the_runtime_dir_unless_configured() {
        let p = Paths::new("/r".into(), None, Some("/x/p.pid".into()), None, None);
        assert_eq!(p.socket, PathBuf::from("/r/daemon.sock"));
        assert_eq!(p.pid, PathBuf::from("/x/p.pid"));
        assert_eq!(p.log, PathBuf::from("/r/daemon.log"));
        assert!(p.owns_fifo_dir());
        let p = Paths::new("/r".into(), None, None, None, Some("/f".into()));
        assert!(!p.owns_fifo_dir());
    }

    #[test]
    fn a_planted_symlink_is_refused_and_the_victim_left_alone() {
        let base = std::env::temp_dir().join(format!("cp-open-{}", std::process::id()));
        ensure_private_dir(&base).unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = base.join("daemon.pid");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = open_private(
            &link,
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(err.to_string().contains("daemon.pid"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let own = base.join("own.log");
        std::fs::write(&own, "").unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_private(&own, std::fs::OpenOptions::new().append(true)).unwrap();
        assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_private_dir_is_created_0700_and_tightened() {
        let base = std::env::temp_dir().join(format!("cp-paths-{}", std::process::id()));
        let dir = base.join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
