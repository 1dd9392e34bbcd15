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
//! (`heartbeat.rs`, [`IdleSwitch::claim_exit`]); a read that returns meanwhile
//! starts nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use rustix::fs::OFlags;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::unix::pipe::Receiver;
use tokio::runtime::{Handle, RuntimeMetrics};

/// The most bytes one blocking read takes: a batch of small frames (the read
/// buffer's first size). A larger frame's rest is read through the runtime.
/// The read lands in the reader's own zeroed room and is copied out: safe
/// code can read only into initialized bytes, and zeroing the caller's room
/// before every read cost more than the round trip's other work in the
/// worker (8 KiB a read, whatever the frame's size, and as much cache).
const BLOCKING_READ_MAX: usize = 8 * 1024;

/// Tells a [`PipeReader`] that its next read may block the thread, and tells
/// others whether a read is blocked now.
#[derive(Debug, Clone)]
pub(crate) struct IdleSwitch(Arc<SwitchState>);

#[derive(Debug)]
struct SwitchState {
    /// One blocking read is allowed.
    allowed: AtomicBool,
    /// Where the reader is: a [`ReadState`].
    read: AtomicU8,
    /// The last blocking read took less than it had room for: the pipe held
    /// nothing more then.
    emptied: AtomicBool,
    /// The runtime the reader was made on: whether any task is alive there.
    runtime: RuntimeMetrics,
}

/// Where the reader is, as far as a blocking read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum ReadState {
    /// Not in a blocking read.
    Free = 0,
    /// In a blocking read (or about to enter it).
    Blocked = 1,
    /// Was blocked when the process began to end ([`IdleSwitch::claim_exit`]):
    /// the read, once it returns, must start nothing.
    Exiting = 2,
}

impl IdleSwitch {
    /// A switch for a reader on the current runtime; must be called inside it.
    fn new() -> Self {
        Self(Arc::new(SwitchState {
            allowed: AtomicBool::new(false),
            read: AtomicU8::new(ReadState::Free as u8),
            emptied: AtomicBool::new(false),
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

    /// Whether the last blocking read emptied the pipe (it took less than it
    /// had room for), forgetting it. The dispatcher then knows that a poll
    /// through the runtime would find nothing (the runtime has not seen the
    /// pipe readable since) and goes back to its loop instead, whose next
    /// read is a blocking one again.
    pub(crate) fn take_emptied(&self) -> bool {
        let emptied = &self.0.emptied;
        emptied.load(Ordering::Relaxed) && emptied.swap(false, Ordering::Relaxed)
    }

    /// Notes whether the read just made emptied the pipe (see
    /// [`take_emptied`](Self::take_emptied)).
    fn note_emptied(&self, emptied: bool) {
        self.0.emptied.store(emptied, Ordering::Relaxed);
    }

    /// Whether the reader waits in a blocking read now: nothing else runs,
    /// and only a frame or the end of the input wakes it.
    #[cfg(test)]
    fn is_blocked(&self) -> bool {
        self.0.read.load(Ordering::Acquire) == ReadState::Blocked as u8
    }

    /// Claims the end of the process for a reader blocked in its read: `true`
    /// when it was blocked, and then its read, once it returns, starts nothing
    /// (its thread parks until the process ends). `false` when it is not.
    pub(crate) fn claim_exit(&self) -> bool {
        self.0
            .read
            .compare_exchange(
                ReadState::Blocked as u8,
                ReadState::Exiting as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The reader enters a blocking read.
    fn enter_read(&self) {
        self.0
            .read
            .store(ReadState::Blocked as u8, Ordering::Release);
    }

    /// The reader's blocking read returned. When the process is ending
    /// ([`claim_exit`](Self::claim_exit)), nothing more is done on this
    /// thread: it parks until the exit takes it.
    fn leave_read(&self) {
        let was = self.0.read.swap(ReadState::Free as u8, Ordering::AcqRel);
        if was == ReadState::Exiting as u8 {
            loop {
                std::thread::park();
            }
        }
    }
}

/// A pipe read through the runtime, or with one blocking read when its
/// [`IdleSwitch`] is on.
#[derive(Debug)]
pub(crate) struct PipeReader {
    pipe: Receiver,
    /// The same pipe, opened again without `O_NONBLOCK`.
    blocking: File,
    /// Where a blocking read lands ([`BLOCKING_READ_MAX`] bytes, zeroed once).
    room: Box<[u8]>,
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
            room: vec![0; BLOCKING_READ_MAX].into_boxed_slice(),
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
            let into = &mut this.room[..buf.remaining().min(BLOCKING_READ_MAX)];
            this.idle.enter_read();
            let read = loop {
                match this.blocking.read(into) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    read => break read,
                }
            };
            this.idle.leave_read();
            this.idle
                .note_emptied(read.as_ref().is_ok_and(|&n| n > 0 && n < into.len()));
            return Poll::Ready(read.map(|n| buf.put_slice(&this.room[..n])));
        }
        this.idle.note_emptied(false);
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
        // The bytes are written once the read is blocked waiting for them (or
        // after a while, so that a read that never says so fails, not hangs).
        let watch = idle.clone();
        let writer = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !watch.is_blocked() && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            let saw_blocked = watch.is_blocked();
            write.write_all(b"frame").expect("write");
            (write, saw_blocked)
        });
        let Poll::Ready(read) = poll_once(&mut reader) else {
            panic!("the read went through the runtime");
        };
        assert_eq!(read.expect("read"), b"frame");
        assert!(!idle.is_blocked());
        let (mut write, saw_blocked) = writer.join().expect("the writer");
        assert!(saw_blocked, "the read did not say it was blocked");
        // The switch turned itself off with that read: the next one goes
        // through the runtime, which has not seen the pipe become readable.
        write.write_all(b"more").expect("write");
        assert!(poll_once(&mut reader).is_pending());
    }

    #[tokio::test]
    async fn a_blocking_read_says_once_whether_it_emptied_the_pipe() {
        let (mut reader, idle, mut write) = pipe_reader();
        // 100 bytes waiting, 64 of room: the pipe still holds some after it.
        write.write_all(&[7; 100]).expect("write");
        idle.allow_if_alone();
        assert!(matches!(poll_once(&mut reader), Poll::Ready(Ok(read)) if read.len() == 64));
        assert!(
            !idle.take_emptied(),
            "a full read cannot know the pipe is empty"
        );
        idle.allow_if_alone();
        assert!(matches!(poll_once(&mut reader), Poll::Ready(Ok(read)) if read.len() == 36));
        assert!(idle.take_emptied(), "a short read emptied the pipe");
        assert!(!idle.take_emptied(), "said once");
        // A read through the runtime forgets an emptying read before it.
        write.write_all(b"x").expect("write");
        idle.allow_if_alone();
        assert!(matches!(poll_once(&mut reader), Poll::Ready(Ok(read)) if read == b"x"));
        let _ = poll_once(&mut reader);
        assert!(!idle.take_emptied());
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
    async fn a_read_into_no_room_leaves_the_switch_on() {
        let (mut reader, idle, mut write) = pipe_reader();
        write.write_all(b"frame").expect("write");
        idle.allow_if_alone();
        let mut cx = Context::from_waker(Waker::noop());
        let mut none = ReadBuf::new(&mut []);
        // Not a blocking read of nothing, which would read as the end.
        let _ = Pin::new(&mut reader).poll_read(&mut cx, &mut none);
        let Poll::Ready(read) = poll_once(&mut reader) else {
            panic!("the switch was spent on a read into no room");
        };
        assert_eq!(read.expect("read"), b"frame");
    }

    #[test]
    fn an_exit_is_claimed_only_for_a_blocked_read() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let idle = runtime.block_on(async { IdleSwitch::new() });
        assert!(!idle.claim_exit(), "no read is blocked");
        idle.enter_read();
        assert!(idle.claim_exit());
        assert!(!idle.claim_exit(), "claimed once");
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
