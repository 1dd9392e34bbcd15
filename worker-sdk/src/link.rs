//! The worker's end of the link, found from the environment the manager sets
//! (see [`pool_core::transport::env`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use pool_core::protocol::DEFAULT_MAX_FRAME;
use pool_core::transport::env;
use rustix::fs::OFlags;
use tokio::io::AsyncRead;

use crate::fd_writer::FdWriter;
use crate::idle_read::{self, IdleSwitch, PipeReader};

/// The protocol descriptors, before the runtime exists.
#[derive(Debug)]
pub(crate) struct EnvLink {
    /// Frames from the manager.
    pub(crate) reader: OwnedFd,
    /// Frames to the manager (blocking writes, shared by the writers under a lock).
    pub(crate) writer: FdWriter,
    /// `CORTEX_MAX_FRAME`, or the default.
    pub(crate) max_frame: usize,
}

/// Opens the link named by `CORTEX_TRANSPORT`.
///
/// For `stdio` (or no variable) the protocol moves off fd 0 and fd 1 first: both are
/// duplicated to new descriptors, then fd 1 points at stderr and fd 0 at `/dev/null`,
/// so a handler's `println!` lands in the logs instead of corrupting the stream.
///
/// For `fifo` the FIFO to the worker is opened for reading first, then the one from the
/// worker for writing — the order the manager expects. Both opens block until the
/// manager has the other ends open. fd 1 points at stderr here too, so stray output
/// lands in the same logs whatever the transport.
pub(crate) fn from_env() -> io::Result<EnvLink> {
    let max_frame = match std::env::var(env::MAX_FRAME) {
        Err(_) => DEFAULT_MAX_FRAME,
        Ok(text) => text.trim().parse().map_err(|_| {
            invalid(format!(
                "{} must be a number of bytes, got {text:?}",
                env::MAX_FRAME
            ))
        })?,
    };
    let transport = std::env::var(env::TRANSPORT).unwrap_or_default();
    let (reader, writer) = match transport.as_str() {
        "" | "stdio" => take_stdio()?,
        "fifo" => open_fifos()?,
        other => {
            return Err(invalid(format!(
                "{} names an unknown transport {other:?} (expected stdio or fifo)",
                env::TRANSPORT
            )))
        }
    };
    // Frames are written with blocking writes: make sure nobody left O_NONBLOCK set.
    let flags = rustix::fs::fcntl_getfl(&writer)?;
    rustix::fs::fcntl_setfl(&writer, flags.difference(OFlags::NONBLOCK))?;
    Ok(EnvLink {
        reader,
        writer: FdWriter::from(writer),
        max_frame,
    })
}

fn take_stdio() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::stdio;
    let reader = rustix::io::fcntl_dupfd_cloexec(stdio::stdin(), 3)?;
    let writer = rustix::io::fcntl_dupfd_cloexec(stdio::stdout(), 3)?;
    stdio::dup2_stdout(stdio::stderr())?;
    stdio::dup2_stdin(File::open("/dev/null")?)?;
    Ok((reader, writer))
}

fn open_fifos() -> io::Result<(OwnedFd, OwnedFd)> {
    let path = |name: &str| {
        std::env::var_os(name)
            .ok_or_else(|| invalid(format!("the fifo transport needs {name} to be set")))
    };
    let to_worker = path(env::FIFO_TO_WORKER)?;
    let from_worker = path(env::FIFO_FROM_WORKER)?;
    // The opens block until the manager opens its ends. If the manager dies first
    // they would block forever, so they run on a thread of their own while this one
    // watches for the manager's death and a deadline. The manager is gone when our
    // parent changes from the one we have now (we were re-parented), or when its
    // pid (`CORTEX_MANAGER_PID`) names no process: that parent need not be the
    // manager, as a worker may be started through a wrapper (a shell script,
    // `cargo run`), which stays its parent while the manager lives, and a worker
    // orphaned before this line ran has had its new parent from the start.
    let parent = rustix::process::getppid();
    let manager = std::env::var(env::MANAGER_PID)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    let gone = || {
        rustix::process::getppid() != parent
            || manager.is_some_and(|pid| {
                rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
            })
    };
    let (opened_tx, opened) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let open = || -> io::Result<(File, File)> {
            let reader = File::open(&to_worker)?;
            let writer = OpenOptions::new().write(true).open(&from_worker)?;
            Ok((reader, writer))
        };
        let _ = opened_tx.send(open());
    });
    let deadline = Instant::now() + FIFO_OPEN_TIMEOUT;
    let (reader, writer) = loop {
        match opened.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => break result?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the FIFO opener thread died"))
            }
            Err(RecvTimeoutError::Timeout) if gone() => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the manager went away before opening its FIFOs",
                ))
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the manager did not open its FIFOs in time",
                ))
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    rustix::stdio::dup2_stdout(rustix::stdio::stderr())?;
    Ok((reader.into(), writer.into()))
}

/// How long a worker waits for the manager to open its ends of the FIFOs.
const FIFO_OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Wraps the read descriptor for the runtime: a truly async pipe reader when it is a
/// pipe or FIFO, a blocking-pool reader otherwise (a file, a socket).
///
/// When the reader `may_block` its thread, a pipe comes with the [`IdleSwitch`]
/// that lets the dispatcher wait for it with one blocking read when nothing else
/// can run (see [`idle_read`]), unless it cannot be opened a
/// second time.
///
/// Must be called inside the tokio runtime.
pub(crate) fn async_reader(
    fd: OwnedFd,
    may_block: bool,
) -> io::Result<(BoxedReader, Option<IdleSwitch>)> {
    let is_pipe = rustix::fs::fstat(&fd)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo)
        .unwrap_or(false);
    if !is_pipe {
        return Ok((Box::new(tokio::fs::File::from_std(File::from(fd))), None));
    }
    let blocking = may_block
        .then(|| idle_read::reopen_blocking(&fd).ok())
        .flatten();
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    Ok(match blocking {
        Some(blocking) => {
            let (reader, idle) = PipeReader::new(pipe, blocking);
            (Box::new(reader), Some(idle))
        }
        None => (Box::new(pipe), None),
    })
}

/// The link's reader, whatever it is.
pub(crate) type BoxedReader = Box<dyn AsyncRead + Send + Unpin>;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
