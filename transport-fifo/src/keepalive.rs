//! [`FifoReader`]: the manager's read end plus a keep-alive write end that hides
//! the spurious EOF a FIFO reader sees before its writer has opened.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe;

/// The manager's own extra write end of a worker → manager FIFO, shared between the
/// reader (which releases it on the first byte) and the worker's exit cleanup
/// (which releases it when the worker is gone without having written).
#[derive(Clone, Default)]
pub(crate) struct KeepAlive(Arc<Mutex<Option<OwnedFd>>>);

impl KeepAlive {
    /// Holds `fd` until [`release`](Self::release).
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self(Arc::new(Mutex::new(Some(fd))))
    }

    /// Closes the keep-alive end (once; later calls do nothing). If the worker holds
    /// no write end either, the reader now sees EOF.
    pub(crate) fn release(&self) {
        let fd = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(fd);
    }

    fn is_held(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("held", &self.is_held())
            .finish()
    }
}

/// Bytes from the worker: the FIFO's read end, unbuffered. Until the first byte
/// arrives it also holds a keep-alive write end, so "no writer yet" does not read
/// as EOF; after that, EOF means the worker closed its end (exited).
#[derive(Debug)]
pub(crate) struct FifoReader {
    inner: pipe::Receiver,
    keepalive: Option<KeepAlive>,
}

impl FifoReader {
    /// Reads from `inner`, holding `keepalive` until the first byte.
    pub(crate) fn new(inner: pipe::Receiver, keepalive: KeepAlive) -> Self {
        Self {
            inner,
            keepalive: Some(keepalive),
        }
    }
}

impl AsyncRead for FifoReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            if let Some(keepalive) = this.keepalive.take() {
                keepalive.release();
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::Mode;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn fifo() -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "transport-fifo-keepalive-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::RUSR | Mode::WUSR).unwrap();
        path
    }

    fn open_pair(path: &std::path::Path) -> (FifoReader, KeepAlive) {
        let parent = path.parent().unwrap();
        let dir = std::fs::File::open(parent).unwrap();
        let at = crate::open::At {
            fd: dir.as_fd(),
            path: parent,
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        let rx = crate::open::receiver(at, name).unwrap();
        let keepalive = KeepAlive::new(crate::open::keepalive(at, name).unwrap());
        (FifoReader::new(rx, keepalive.clone()), keepalive)
    }

    #[tokio::test]
    async fn no_eof_before_the_writer_opens_then_eof_after_it_closes() {
        let path = fifo();
        let (mut reader, keepalive) = open_pair(&path);
        let mut byte = [0u8; 8];
        // No writer yet: a plain non-blocking FIFO would read EOF here.
        let early = tokio::time::timeout(Duration::from_millis(50), reader.read(&mut byte)).await;
        assert!(early.is_err(), "read returned before any writer: {early:?}");

        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all(b"hi").unwrap();
        let n = reader.read(&mut byte).await.unwrap();
        assert_eq!(&byte[..n], b"hi");
        assert!(
            !keepalive.is_held(),
            "the first byte releases the keep-alive"
        );
        drop(writer);
        assert_eq!(
            reader.read(&mut byte).await.unwrap(),
            0,
            "EOF after the writer left"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn releasing_without_a_writer_gives_eof() {
        let path = fifo();
        let (mut reader, keepalive) = open_pair(&path);
        let mut byte = [0u8; 1];
        let read = tokio::spawn(async move { reader.read(&mut byte).await });
        tokio::task::yield_now().await;
        keepalive.release();
        let n = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        std::fs::remove_file(&path).unwrap();
    }
}
