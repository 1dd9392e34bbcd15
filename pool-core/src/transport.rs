//! How the manager starts a worker and reaches it: the [`Transport`] trait.
//!
//! A transport moves bytes and nothing else; framing lives in [`crate::protocol`].
//! The worker side of the contract is the set of environment variables in [`env`](mod@env).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::process::WorkerProcess;

/// Environment variables the manager sets for each worker, read by `worker-sdk`
/// (and by workers written in other languages, see `docs/PROTOCOL.md`).
pub mod env {
    /// The manager's name for the worker (`worker-N`).
    pub const WORKER_ID: &str = "CORTEX_WORKER_ID";
    /// Which transport carries the protocol: `stdio` or `fifo`.
    pub const TRANSPORT: &str = "CORTEX_TRANSPORT";
    /// The largest frame body either side may send, in bytes.
    pub const MAX_FRAME: &str = "CORTEX_MAX_FRAME";
    /// For the `fifo` transport: the FIFO the worker reads (manager → worker).
    pub const FIFO_TO_WORKER: &str = "CORTEX_FIFO_TO_WORKER";
    /// For the `fifo` transport: the FIFO the worker writes (worker → manager).
    pub const FIFO_FROM_WORKER: &str = "CORTEX_FIFO_FROM_WORKER";
    /// The manager's process id. It need not be the worker's parent (a wrapper
    /// may start the worker): a worker whose parent changes from what it was at
    /// start, or whose manager pid names no process (it was orphaned before it
    /// could look), was orphaned.
    pub const MANAGER_PID: &str = "CORTEX_MANAGER_PID";
}

/// The reading half of a link.
pub type LinkReader = Pin<Box<dyn AsyncRead + Send>>;
/// The writing half of a link.
pub type LinkWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// What to launch: the worker program and the identity the manager gives it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerSpec {
    /// The manager's name for this worker (`worker-N`), never reused in a pool.
    pub worker_id: String,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables (the parent's environment is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The largest frame body either side may send.
    pub max_frame: usize,
}

impl WorkerSpec {
    /// A spec for `program` with no arguments.
    pub fn new(worker_id: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            worker_id: worker_id.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            max_frame: crate::protocol::DEFAULT_MAX_FRAME,
        }
    }

    /// Sets the arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// A command for this spec with the contract every transport shares: its own
    /// process group, killed on drop, stdin/stdout closed, stderr captured, and the
    /// worker id, transport name and frame limit in its environment. A transport
    /// adds its own descriptors and variables before spawning it.
    pub fn command(&self, transport: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(env::WORKER_ID, &self.worker_id)
            .env(env::TRANSPORT, transport)
            .env(env::MAX_FRAME, self.max_frame.to_string())
            .env(env::MANAGER_PID, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }
}

/// One worker's byte link plus the process behind it.
pub struct Link {
    /// Bytes from the worker.
    pub reader: LinkReader,
    /// Bytes to the worker.
    pub writer: LinkWriter,
    /// The worker process (kills its group when dropped).
    pub process: WorkerProcess,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// Why a worker could not be launched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program could not be started at all (missing, not executable, …).
    #[error("cannot start worker program {program}: {source}")]
    Spawn {
        /// The program that was asked for.
        program: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The transport could not set up its channel (FIFO creation, open, …).
    #[error("transport setup failed: {0}")]
    Setup(#[source] std::io::Error),
}

/// How the manager starts a worker and gets a byte link to it.
///
/// Object safe (the pool holds a `Box<dyn Transport>` chosen at run time).
///
/// # Examples
///
/// A transport that runs the worker with its stdin/stdout as the link:
/// ```
/// use async_trait::async_trait;
/// use pool_core::process::WorkerProcess;
/// use pool_core::transport::{LaunchError, Link, Transport, WorkerSpec};
/// use std::process::Stdio;
///
/// #[derive(Debug)]
/// struct Pipes;
///
/// #[async_trait]
/// impl Transport for Pipes {
///     fn name(&self) -> &'static str { "pipes" }
///
///     async fn launch(&self, spec: &WorkerSpec) -> Result<Link, LaunchError> {
///         let mut cmd = spec.command(self.name());
///         cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
///         let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
///             program: spec.program.clone(),
///             source,
///         })?;
///         let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
///             return Err(LaunchError::Setup(std::io::ErrorKind::BrokenPipe.into()));
///         };
///         Ok(Link {
///             reader: Box::pin(stdout),
///             writer: Box::pin(stdin),
///             process: WorkerProcess::new(child, &spec.worker_id),
///         })
///     }
/// }
/// let transport: Box<dyn Transport> = Box::new(Pipes);
/// assert_eq!(transport.name(), "pipes");
/// ```
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Stable short name used in config, logs and metrics (`stdio`, `fifo`).
    fn name(&self) -> &'static str;

    /// Spawns one worker described by `spec` and returns the byte link to it.
    ///
    /// # Errors
    /// [`LaunchError`] when the process or its channel cannot be set up.
    async fn launch(&self, spec: &WorkerSpec) -> Result<Link, LaunchError>;
}

#[cfg(test)]
fn _object_safe(_: Box<dyn Transport>) {}

/// Asks the kernel for a pipe (or FIFO) buffer of `bytes`, as the bundled
/// transports do for each worker's link. A refusal keeps the default size and
/// is logged once a process at `warn`: past the user's
/// `/proc/sys/fs/pipe-user-pages-soft` (16 384 pages, about 31 workers at
/// 1 MiB for both pipes) Linux refuses larger pipes, and every new pipe of
/// that user, in any program, then gets two pages only.
#[cfg(target_os = "linux")]
pub fn grow_pipe(pipe: &impl std::os::fd::AsFd, bytes: usize) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(pipe, bytes) {
        WARNED.call_once(|| {
            tracing::warn!(
                bytes,
                error = %e,
                "a worker link's pipe could not be grown (see /proc/sys/fs/pipe-user-pages-soft \
                 and pipe-max-size); keeping the default size"
            );
        });
        tracing::debug!(bytes, error = %e, "F_SETPIPE_SZ refused; keeping the default pipe size");
    }
}

/// Does nothing where pipes cannot be grown.
#[cfg(not(target_os = "linux"))]
pub fn grow_pipe(_pipe: &impl std::os::fd::AsFd, _bytes: usize) {}
