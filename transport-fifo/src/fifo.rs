//! [`FifoTransport`]: a pair of named pipes per worker as the link.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pool_core::process::{describe_exit, WorkerProcess};
use pool_core::transport::{env, LaunchError, Link, Transport, WorkerSpec};
use tokio::net::unix::pipe;
use tokio::time::Instant;

use crate::dir::{FifoPair, PoolDir};
use crate::keepalive::{FifoReader, KeepAlive};
use crate::{open, paths};

/// The pipe size asked for by default: 1 MiB (as for the stdio transport).
pub const DEFAULT_PIPE_SIZE: usize = 1024 * 1024;
/// How long a worker has, by default, to open its FIFOs after it was spawned.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// First pause between two tries to open the worker's read end.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
/// Longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_millis(25);

/// Launches workers that talk over a fresh pair of FIFOs each.
///
/// Owns a private directory (mode 0700, see the [crate docs](crate)) that holds the
/// FIFOs of its live workers. Clones share it; it is removed when the last clone
/// and the last of its workers are gone.
#[derive(Debug, Clone)]
pub struct FifoTransport {
    dir: Arc<PoolDir>,
    open_timeout: Duration,
    pipe_size: usize,
}

impl FifoTransport {
    /// A transport whose directory is under `$XDG_RUNTIME_DIR` when set, else under
    /// the system temp dir.
    ///
    /// # Errors
    /// When the directory cannot be created (see [`in_dir`](Self::in_dir)).
    pub fn new() -> io::Result<Self> {
        Self::in_dir(paths::default_base())
    }

    /// A transport whose directory is created under `base`. A missing `base` is
    /// created, mode 0700, with its missing parents (a directory created so that
    /// turns out to be a symlink or another user's is refused). Stale directories of
    /// crashed pools under `base` are removed first (only those whose owner is gone
    /// and which hold nothing but what a pool creates).
    ///
    /// # Errors
    /// When `base` cannot be created or is not a directory, or the private
    /// directory cannot be created, set to mode 0700 or locked there; the message
    /// names the path.
    pub fn in_dir(base: impl AsRef<Path>) -> io::Result<Self> {
        let base = base.as_ref();
        crate::base::ensure(base)?;
        let dir = PoolDir::create(base).map_err(|e| crate::base::with_path(base, &e))?;
        Ok(Self {
            dir: Arc::new(dir),
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            pipe_size: DEFAULT_PIPE_SIZE,
        })
    }

    /// How long a launched worker may take to open its read end before the launch
    /// fails (the launch fails at once if the worker exits first).
    pub fn with_open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Asks for FIFO buffers of `bytes` (0 keeps the OS default). Linux caps the size
    /// at `/proc/sys/fs/pipe-max-size`; a refused size is logged and the default kept.
    pub fn with_pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }

    /// The private directory holding this transport's FIFOs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Opens the manager's write end once the worker has opened its read end,
    /// retrying `ENXIO` with backoff, and failing early when the worker exits.
    async fn open_sender(
        &self,
        pair: &FifoPair,
        process: &mut WorkerProcess,
        worker_id: &str,
    ) -> Result<pipe::Sender, LaunchError> {
        let name = pair.names().to_worker.as_str();
        let deadline = Instant::now() + self.open_timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(sender) =
                open::try_sender(pair.dir().at(), name).map_err(LaunchError::Setup)?
            {
                return Ok(sender);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LaunchError::Setup(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "worker {worker_id} did not open its FIFO within {:?}",
                        self.open_timeout
                    ),
                )));
            }
            tokio::select! {
                exited = process.wait() => {
                    let status = exited.map_err(LaunchError::Setup)?;
                    return Err(LaunchError::Setup(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!(
                            "worker {worker_id} exited ({}) before opening its FIFO; stderr: {}",
                            describe_exit(&status),
                            process.stderr_tail().text(),
                        ),
                    )));
                }
                () = tokio::time::sleep(backoff.min(deadline - now)) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[async_trait]
impl Transport for FifoTransport {
    fn name(&self) -> &'static str {
        "fifo"
    }

    async fn launch(&self, spec: &WorkerSpec) -> Result<Link, LaunchError> {
        let pair = FifoPair::create(Arc::clone(&self.dir)).map_err(LaunchError::Setup)?;
        let names = pair.names().clone();
        // Our read end and its keep-alive writer first: neither blocks, and with a
        // reader present the worker's own write open will not block either.
        let receiver =
            open::receiver(self.dir.at(), &names.from_worker).map_err(LaunchError::Setup)?;
        let keepalive = KeepAlive::new(
            open::keepalive(self.dir.at(), &names.from_worker).map_err(LaunchError::Setup)?,
        );

        let mut cmd = spec.command(self.name());
        cmd.env(env::FIFO_TO_WORKER, self.dir().join(&names.to_worker))
            .env(env::FIFO_FROM_WORKER, self.dir().join(&names.from_worker));
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        let on_exit = keepalive.clone();
        let mut process = WorkerProcess::new(child, &spec.worker_id);
        let sender = self
            .open_sender(&pair, &mut process, &spec.worker_id)
            .await?;
        let process = process.on_exit(Box::new(move || {
            on_exit.release();
            drop(pair);
        }));

        if self.pipe_size > 0 {
            pool_core::transport::grow_pipe(&sender, self.pipe_size);
            pool_core::transport::grow_pipe(&receiver, self.pipe_size);
        }
        Ok(Link {
            reader: Box::pin(FifoReader::new(receiver, keepalive)),
            writer: Box::pin(sender),
            process,
        })
    }
}
