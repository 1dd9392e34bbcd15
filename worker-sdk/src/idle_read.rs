//! Waiting for the manager's next frame with one blocking read while the worker
//! has nothing else to do.
//!
//! The runtime waits for a readable pipe with `epoll_wait` and then reads it: two
//! system calls and a turn of the runtime's scheduler and driver per wait. A worker
//! that answers one task at a time waits like that before every task, so a round
//! trip pays for it. When nothing else can run on the runtime — no tokio task is
//! alive, and a handler that waits for something is one — the dispatcher turns
//! the [`IdleSwitch`] on, and the reader's next read is one blocking `read` on a
//! second, blocking open file description of the same pipe (`/proc/self/fd/N`
//! opened again), as a plain blocking program waits. The switch turns itself off
//! with that read, so every other read goes through the runtime as before.
//!
//! [`Worker::run`](crate::Worker::run) uses it on its single-threaded runtime,
//! where the dispatcher's thread is the only one; `serve` runs on someone else's
//! runtime and never blocks it. The one thing that waits for the next frame
//! while the thread reads is work handed to the runtime from another thread
//! (`Handle::spawn` from a thread of the handler's own); `Worker::run`'s
//! documentation says so.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::fs::OFlags;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe::Receiver;

/// The most bytes one blocking read takes: a batch of small frames (the read
/// buffer's first size). A larger frame's rest is read through the runtime.
/// The room is zeroed before the read (safe code; about 100 ns, not seen
/// beside a round trip's 9 µs).
const BLOCKING_READ_MAX: usize = 8 * 1024;

/// Tells a [`PipeReader`] that its next read may block the thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdleSwitch(Arc<AtomicBool>);

impl IdleSwitch {
    /// Allows (or, with `false`, forbids) one blocking read.
    pub(crate) fn set(&self, idle: bool) {
        self.0.store(idle, Ordering::Relaxed);
    }

    /// Whether a blocking read is allowed, turning the switch off.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// A pipe read through the runtime, or with one blocking read when its
/// [`IdleSwitch`] is on.
#[derive(Debug)]
pub(crate) struct PipeReader {
    pipe: Receiver,
    /// The same pipe, opened again without `O_NONBLOCK`.
    blocking: File,
    idle: IdleSwitch,
}

impl PipeReader {
    /// Reads `pipe` through the runtime, or through `blocking` (the same pipe,
    /// see [`reopen_blocking`]) when the returned switch is on.
    pub(crate) fn new(pipe: Receiver, blocking: File) -> (Self, IdleSwitch) {
        let idle = IdleSwitch::default();
        let reader = Self {
            pipe,
            blocking,
            idle: idle.clone(),
        };
        (reader, idle)
    }
}

/// A second open file description of the pipe behind `fd`, in blocking mode
/// (`O_NONBLOCK` belongs to a description, and the runtime sets it on `fd`'s).
///
/// # Errors
/// When `/proc/self/fd` cannot be opened (not mounted, say).
///
/// Opened without waiting for a writer (a FIFO's `open` for reading would wait
/// for one), then switched to blocking reads.
pub(crate) fn reopen_blocking(fd: &impl AsFd) -> io::Result<File> {
    let raw = fd.as_fd().as_raw_fd();
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(format!("/proc/self/fd/{raw}"))?;
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags.difference(OFlags::NONBLOCK))?;
    Ok(file)
}

impl AsyncRead for PipeReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.take() {
            let room = buf.remaining().min(BLOCKING_READ_MAX);
            let into = buf.initialize_unfilled_to(room);
            loop {
                match this.blocking.read(into) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        Pin::new(&mut this.pipe).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::task::Waker;

    use super::*;

    /// A reader on a new pipe, and the pipe's write end.
    fn pipe_reader() -> (PipeReader, IdleSwitch, File) {
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        let blocking = reopen_blocking(&read).expect("reopen through /proc");
        let pipe = Receiver::from_owned_fd(read).expect("register the pipe");
        let (reader, idle) = PipeReader::new(pipe, blocking);
        (reader, idle, File::from(write))
    }

    /// One poll of `reader`, with a waker that nobody hears.
    fn poll_once(reader: &mut PipeReader) -> Poll<io::Result<Vec<u8>>> {
        let mut room = [0u8; 64];
        let mut buf = ReadBuf::new(&mut room);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(reader)
            .poll_read(&mut cx, &mut buf)
            .map_ok(|()| buf.filled().to_vec())
    }

    #[tokio::test]
    async fn the_switch_allows_one_read_that_waits_for_the_bytes_itself() {
        let (mut reader, idle, mut write) = pipe_reader();
        write.write_all(b"frame").expect("write");
        // Off: the read goes through the runtime, which has not yet seen the
        // pipe become readable.
        assert!(poll_once(&mut reader).is_pending());
        idle.set(true);
        let Poll::Ready(read) = poll_once(&mut reader) else {
            panic!("the blocking read waited for the runtime");
        };
        assert_eq!(read.expect("read"), b"frame");
        // The switch turned itself off with that read.
        write.write_all(b"more").expect("write");
        assert!(poll_once(&mut reader).is_pending());
    }

    #[tokio::test]
    async fn a_blocking_read_sees_the_end_of_the_pipe() {
        let (mut reader, idle, write) = pipe_reader();
        drop(write);
        idle.set(true);
        let Poll::Ready(read) = poll_once(&mut reader) else {
            panic!("the blocking read waited for the runtime");
        };
        assert_eq!(read.expect("end of file"), b"");
    }
}
