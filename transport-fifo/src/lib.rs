//! A [`Transport`](pool_core::Transport) over a pair of named pipes (FIFOs) per
//! worker. Unix only.
//!
//! Use it when a worker's stdin/stdout must stay free for the worker's own use, or
//! when the worker is started in a way that cannot hand it pipes. Otherwise the
//! stdio transport of `transport-ipc` does the same job with less setup.
//!
//! # How a link is set up
//! Each launch creates two FIFOs with `mkfifo(2)` (no shell), mode 0600, in a
//! private directory (mode 0700) that the transport owns: `w<N>.to.fifo` (manager →
//! worker) and `w<N>.from.fifo` (worker → manager), with a fresh `N` per launch, so
//! a replaced worker never shares a FIFO with its predecessor. The worker finds them
//! in `CORTEX_FIFO_TO_WORKER` and `CORTEX_FIFO_FROM_WORKER` (with
//! `CORTEX_TRANSPORT=fifo`) and opens, with plain blocking opens, **the to-worker
//! FIFO for reading first, then the from-worker FIFO for writing**.
//!
//! The manager never blocks its runtime on an open:
//! 1. before spawning, it opens its read end of the from-worker FIFO
//!    (`O_NONBLOCK` read opens succeed at once), and then a second, *keep-alive*
//!    write end of the same FIFO (a non-blocking write open succeeds once a reader
//!    exists, so no Linux-only `O_RDWR` is needed);
//! 2. it spawns the worker, then opens its write end of the to-worker FIFO with
//!    `O_NONBLOCK`, which fails with `ENXIO` until the worker has opened its read
//!    end; it retries with backoff (1 ms doubling to 25 ms) within an open timeout
//!    ([`FifoTransport::with_open_timeout`]), and fails at once if the worker exits
//!    first, with its exit status and stderr tail.
//!
//! # EOF means the worker is gone
//! A non-blocking FIFO reader with no writer reads EOF, which before the worker has
//! opened its write end would look like a dead worker. The keep-alive write end
//! prevents that: while it is open the FIFO always has a writer. It is closed when
//! the first byte from the worker arrives (the worker then surely holds its own
//! write end) or when the worker process is gone
//! ([`WorkerProcess::on_exit`](pool_core::process::WorkerProcess::on_exit)),
//! whichever comes first. From then on EOF on the reader means the worker closed its
//! end, and a write to a worker that is gone fails with `BrokenPipe`. Every
//! descriptor is opened `O_CLOEXEC`, so no other worker inherits an end that would
//! hide that EOF. The ends are unbuffered (`tokio::net::unix::pipe`): a worker that
//! stops reading makes the manager's writes wait, and the transport holds no data.
//!
//! # Files and their cleanup
//! The directory is `BASE/cortex-fifo-<pid>-<16 hex digits>`, where `BASE` is the
//! directory given to [`FifoTransport::in_dir`], or `$XDG_RUNTIME_DIR` when set, or
//! the system temp dir. It holds a lock file `pool.lock`, locked with `flock(2)`
//! while the transport lives (the directory is set up and locked under a staging
//! name, then renamed, so no sweep ever sees a live pool's directory unlocked),
//! and the FIFOs of live workers, which are unlinked when
//! their worker is gone. The directory is removed when the transport (all its
//! clones) and its last worker are gone. Every FIFO is opened relative to the
//! directory with `O_NOFOLLOW` and checked to be a FIFO: a symlink or any other
//! kind of file is refused.
//!
//! When a transport starts it removes stale directories of crashed pools under
//! `BASE`, but only a directory that has our name scheme, is a real directory
//! (not a symlink) owned by the current user, whose lock can be taken (its owner is
//! gone; without a lock file, whose pid is not alive) and which holds nothing but a
//! regular `pool.lock` and FIFOs named `w<N>.to.fifo`/`w<N>.from.fifo`; and, on the
//! same terms, a staging directory `.cortex-fifo-staging-<pid>-<16 hex digits>` whose
//! process is dead (killed while setting one up). Anything else is left as it is: the
//! pool never deletes what it did not create. [`sweep_stale`] runs the same sweep on
//! its own (no transport is made) and returns the paths it removed.
//!
//! # Examples
//! A worker written in shell that echoes bytes back, opening its FIFOs in the
//! required order:
//! ```
//! use pool_core::transport::{Transport, WorkerSpec};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use transport_fifo::FifoTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = FifoTransport::new()?;
//! assert_eq!(transport.name(), "fifo");
//!
//! let spec = WorkerSpec::new("worker-0", "sh").args([
//!     "-c",
//!     r#"exec 3<"$CORTEX_FIFO_TO_WORKER" 4>"$CORTEX_FIFO_FROM_WORKER"; exec cat <&3 >&4"#,
//! ]);
//! let mut link = transport.launch(&spec).await?;
//! link.writer.write_all(b"ping").await?;
//! let mut echo = [0u8; 4];
//! link.reader.read_exact(&mut echo).await?;
//! assert_eq!(&echo, b"ping");
//!
//! drop(link.writer); // the worker reads EOF and exits
//! assert!(link.process.wait().await?.success());
//! assert_eq!(link.reader.read(&mut echo).await?, 0); // EOF: the worker is gone
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(clippy::unwrap_used)]

#[cfg(not(unix))]
compile_error!(
    "transport-fifo works only on unix (it needs named pipes); \
     leave the `fifo` feature off or use the stdio transport on this target"
);

#[cfg(unix)]
mod base;
#[cfg(unix)]
mod dir;
#[cfg(unix)]
mod fifo;
#[cfg(unix)]
mod keepalive;
#[cfg(unix)]
mod open;
#[cfg(unix)]
mod paths;
#[cfg(unix)]
mod stale;

#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub use fifo::{FifoTransport, DEFAULT_OPEN_TIMEOUT, DEFAULT_PIPE_SIZE};
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub use stale::sweep_stale;
