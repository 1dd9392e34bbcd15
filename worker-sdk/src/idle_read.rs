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
//! runtime and never blocks it.
//!
//! While the thread reads, it drives nothing else. What waits for the next
//! frame then is what other threads hand the runtime: a task spawned through a
//! `Handle` from a thread of the handler's own, a `Handle::block_on` there,
//! child processes the runtime reaps; `Worker::run`'s documentation says so.
//! The one other thread that can learn something the dispatcher must act on
//! is the heartbeat thread: a heartbeat that cannot be written means the
//! manager stopped listening, and with the dispatcher blocked here the
//! heartbeat thread ends the process itself, as the dispatcher would have
//! (`heartbeat.rs`, [`IdleSwitch::is_blocked`]).

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
use tokio::runtime::{Handle, RuntimeMetrics};

/// The most bytes one blocking read takes: a batch of small frames (the read
/// buffer's first size). A larger frame's rest is read through the runtime.
/// The room is zeroed before the read (safe code; about 100 ns, not seen
/// beside a round trip's 9 µs).
const BLOCKING_READ_MAX: usize = 8 * 1024;

/// Tells a [`PipeReader`] that its next read may block the thread, and tells
/// others whether a read is blocked now.
#[derive(Debug, Clone)]
pub(crate) struct IdleSwitch(Arc<SwitchState>);

#[derive(Debug)]
struct SwitchState {
    /// One blocking read is allowed.
    allowed: AtomicBool,
    /// A blocking read is under way (or about to be).
    blocked: AtomicBool,
    /// The runtime the reader was made on: whether any task is alive there.
    runtime: RuntimeMetrics,
}

impl IdleSwitch {
    /// A switch for a reader on the current runtime; must be called inside it.
    fn new() -> Self {
        Self(Arc::new(SwitchState {
            allowed: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            runtime: Handle::current().metrics(),
        }))
    }

    /// Allows one blocking read when no tokio task is alive on the reader's
    /// runtime (a running handler is one, and a task waits only while one
    /// runs: then nothing but a frame can come next); forbids it otherwise.
    pub(crate) fn allow_if_alone(&self) {
        let alone = self.0.runtime.num_alive_tasks() == 0;
        self.0.allowed.store(alone, Ordering::Relaxed);
    }

    /// Forbids a blocking read.
    pub(crate) fn forbid(&self) {
        self.0.allowed.store(false, Ordering::Relaxed);
    }

    /// Whether a blocking read is allowed, turning the switch off.
    fn take(&self) -> bool {
        let allowed = &self.0.allowed;
        allowed.load(Ordering::Relaxed) && allowed.swap(false, Ordering::Relaxed)
    }

    /// Whether the reader waits in a blocking read now: nothing else runs,
    /// and only a frame or the end of the input wakes it.
    pub(crate) fn is_blocked(&self) -> bool {
        self.0.blocked.load(Ordering::Acquire)
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
    /// Must be called inside the runtime the reader is read on.
    pub(crate) fn new(pipe: Receiver, blocking: File) -> (Self, IdleSwitch) {
        let idle = IdleSwitch::new();
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
/// Opened without waiting for a writer (a FIFO's `open` for reading would wait
/// for one), then switched to blocking reads.
///
/// # Errors
/// When `/proc/self/fd` cannot be opened (not mounted, say).
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
        // A read into no room would read as the end of the input.
        if buf.remaining() > 0 && this.idle.take() {
            let room = buf.remaining().min(BLOCKING_READ_MAX);
            let into = buf.initialize_unfilled_to(room);
            let state = &this.idle.0;
            state.blocked.store(true, Ordering::Release);
            let read = loop {
                match this.blocking.read(into) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    read => break read,
                }
            };
            state.blocked.store(false, Ordering::Release);
            return Poll::Ready(read.map(|n| buf.advance(n)));
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
        idle.allow_if_alone();
        // The bytes are written only once the read is blocked waiting for them.
        let watch = idle.clone();
        let writer = std::thread::spawn(move || {
            while !watch.is_blocked() {
                std::thread::yield_now();
            }
            write.write_all(b"frame").expect("write");
            write
        });
        let Poll::Ready(read) = poll_once(&mut reader) else {
            panic!("the read went through the runtime");
        };
        assert_eq!(read.expect("read"), b"frame");
        assert!(!idle.is_blocked());
        // The switch turned itself off with that read: the next one goes
        // through the runtime, which has not seen the pipe become readable.
        let mut write = writer.join().expect("the writer");
        write.write_all(b"more").expect("write");
        assert!(poll_once(&mut reader).is_pending());
    }

    #[tokio::test]
    async fn no_blocking_read_while_a_task_is_alive() {
        let (mut reader, idle, mut write) = pipe_reader();
        let task = tokio::spawn(std::future::pending::<()>());
        write.write_all(b"frame").expect("write");
        idle.allow_if_alone();
        assert!(
            poll_once(&mut reader).is_pending(),
            "a blocking read was allowed"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_blocking_read_sees_the_end_of_the_pipe() {
        let (mut reader, idle, write) = pipe_reader();
        drop(write);
        idle.allow_if_alone();
        let Poll::Ready(read) = poll_once(&mut reader) else {
            panic!("the read went through the runtime");
        };
        assert_eq!(read.expect("end of file"), b"");
    }
}
