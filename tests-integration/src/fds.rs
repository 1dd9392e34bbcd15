//! Counting what a test could leak: open pipe/FIFO/file descriptors of this process,
//! entries of a directory; and unique scratch directories for tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Open descriptors of this process that are pipes, FIFOs or files (on Linux, by
/// `/proc/self/fd` link target). Descriptors of the async runtime itself (epoll,
/// eventfd, sockets) are left out, so tests running in parallel threads do not
/// disturb the count by starting runtimes.
///
/// # Errors
/// When the descriptor table cannot be listed.
#[cfg(target_os = "linux")]
pub fn open_pipes_and_files() -> io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        // The descriptor of the listing itself is gone by the time it is read.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if target.starts_with("pipe:") || target.starts_with('/') {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Open descriptors of this process (all kinds: `/dev/fd` shows no targets here).
///
/// # Errors
/// When the descriptor table cannot be listed.
#[cfg(not(target_os = "linux"))]
pub fn open_pipes_and_files() -> io::Result<usize> {
    Ok(std::fs::read_dir("/dev/fd")?.count())
}

/// How many entries `dir` holds.
///
/// # Errors
/// When `dir` cannot be listed.
pub fn entries(dir: &Path) -> io::Result<usize> {
    Ok(std::fs::read_dir(dir)?.count())
}

/// A fresh empty directory under the system temp dir, removed with its contents
/// when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates one; `tag` goes into its name.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn new(tag: &str) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "cortex-test-{tag}-{}-{}-{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        ));
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
