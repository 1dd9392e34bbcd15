//! [`WorkerProcess`]: a guard that owns a worker's process, signals its whole
//! process group, reaps it, and keeps a bounded tail of what it wrote on stderr.

use std::collections::VecDeque;
use std::fmt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr};

/// How many stderr lines are kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept, in bytes.
const STDERR_LINE_MAX: usize = 512;

/// A bounded ring of a worker's last stderr lines.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, mut line: String) {
        if line.len() > STDERR_LINE_MAX {
            let mut cut = STDERR_LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == STDERR_TAIL_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }

    /// The kept lines, joined by newlines.
    pub fn text(&self) -> String {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A signal the pool sends to a worker's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupSignal {
    /// SIGTERM: ask to exit.
    Terminate,
    /// SIGKILL: stop now.
    Kill,
}

/// Something to run when the worker is gone (unlink its FIFOs, say).
pub type Cleanup = Box<dyn FnOnce() + Send>;

/// Owns a worker's process: kills its group on drop, reaps it on [`wait`](Self::wait).
pub struct WorkerProcess {
    child: Inner,
    pid: u32,
    stderr: StderrTail,
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
    cleanup: Option<Cleanup>,
}

/// How long [`WorkerProcess::wait`] waits for the last stderr lines after the exit
/// (a grandchild may hold the pipe open).
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(250);

enum Inner {
    Os(Child),
    #[cfg(any(test, feature = "test-util"))]
    Simulated(crate::testing::SimulatedProcess),
}

impl fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerProcess")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl WorkerProcess {
    /// Takes ownership of a spawned child (which must lead its own process group,
    /// as [`WorkerSpec::command`](crate::transport::WorkerSpec::command) arranges) and
    /// starts collecting its stderr, forwarded to `tracing` at debug level.
    pub fn new(mut child: Child, worker_id: &str) -> Self {
        let pid = child.id().unwrap_or(0);
        let stderr = StderrTail::default();
        let stderr_reader = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(collect_stderr(pipe, stderr.clone(), worker_id.to_owned())));
        Self {
            child: Inner::Os(child),
            pid,
            stderr,
            stderr_reader,
            cleanup: None,
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn simulated(process: crate::testing::SimulatedProcess, pid: u32) -> Self {
        Self {
            child: Inner::Simulated(process),
            pid,
            stderr: StderrTail::default(),
            stderr_reader: None,
            cleanup: None,
        }
    }

    /// Adds work to do once the process is gone.
    pub fn on_exit(mut self, cleanup: Cleanup) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// The worker's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines the worker wrote on stderr.
    pub fn stderr_tail(&self) -> StderrTail {
        self.stderr.clone()
    }

    /// Sends `signal` to the worker's whole process group. Does nothing once the
    /// worker has been reaped (so a recycled pid is never hit).
    pub fn signal(&mut self, signal: GroupSignal) {
        // With `test-util` off, `Inner` has one variant.
        #[allow(clippy::infallible_destructuring_match)]
        let child = match &mut self.child {
            Inner::Os(child) => child,
            #[cfg(any(test, feature = "test-util"))]
            Inner::Simulated(sim) => return sim.signal(signal),
        };
        if child.id().is_none() {
            return;
        }
        let Some(pgid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        let sig = match signal {
            GroupSignal::Terminate => rustix::process::Signal::TERM,
            GroupSignal::Kill => rustix::process::Signal::KILL,
        };
        if let Err(e) = rustix::process::kill_process_group(pgid, sig) {
            tracing::debug!(pid = self.pid, error = %e, "signalling worker group failed");
        }
    }

    /// Waits for the worker to exit and reaps it, collects the last of its stderr,
    /// then runs its cleanup.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the process as it was (or reaped,
    /// after which [`signal`](Self::signal) does nothing).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = match &mut self.child {
            Inner::Os(child) => child.wait().await?,
            #[cfg(any(test, feature = "test-util"))]
            Inner::Simulated(sim) => sim.wait().await,
        };
        if let Some(reader) = self.stderr_reader.as_mut() {
            if tokio::time::timeout(STDERR_DRAIN, reader).await.is_ok() {
                self.stderr_reader = None;
            }
        }
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
        Ok(status)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.signal(GroupSignal::Kill);
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

async fn collect_stderr(pipe: ChildStderr, tail: StderrTail, worker_id: String) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(worker.id = %worker_id, "{line}");
        tail.push(line);
    }
}

/// Describes how a process ended, for error messages: `exit code 3` or `signal 9`.
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "unknown exit status".to_owned(),
    }
}
