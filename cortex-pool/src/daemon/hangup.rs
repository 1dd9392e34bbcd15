//! Telling that a control connection's peer hung up without reading what it
//! sent first. A connection whose `wait` is answered stops being read once
//! it has sent as many requests ahead as it may ([`server`](super::server)):
//! the end of its stream then lies behind requests not yet read. The socket
//! says it is closed all the same (`EPOLLRDHUP`): a duplicate of the
//! connection's descriptor, registered apart, is watched for that alone, so
//! the connection's own reads are left as they are.

use std::io;
use std::os::fd::BorrowedFd;

use tokio::io::Interest;
use tokio::net::UnixStream;

/// A watch on one connection for its peer hanging up: the connection's
/// socket under a second descriptor, never read.
#[derive(Debug)]
pub(crate) struct HangUp(UnixStream);

impl HangUp {
    /// Watches the connection `fd`.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated (no descriptor left) or
    /// registered with the runtime.
    pub(crate) fn watch(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let socket = std::os::unix::net::UnixStream::from(fd.try_clone_to_owned()?);
        socket.set_nonblocking(true)?;
        UnixStream::from_std(socket).map(Self)
    }

    /// Resolves once the peer closed the connection or shut down its writing
    /// side, whatever it sent before; never, when the watch itself fails.
    pub(crate) async fn hung_up(&self) {
        loop {
            let Ok(ready) = self.0.ready(Interest::READABLE).await else {
                return std::future::pending().await;
            };
            if ready.is_read_closed() {
                return;
            }
            // Only more data came: its readiness is let go (nothing is read),
            // to wait for the next change.
            let _ = self.0.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }
}
