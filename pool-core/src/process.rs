//! [`WorkerProcess`]: a guard that owns a worker's process, signals its whole
//! process group, reaps it, and keeps a bounded tail of what it wrote on stderr.

use std::collections::VecDeque;
use std::fmt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr};

/// How many stderr lines are kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept, in bytes.
const STDERR_LINE_MAX: usize = 512;

/// A bounded ring of a worker's last stderr lines.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
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
    stderr_reading: StderrReading,
    cleanup: Option<Cleanup>,
}

/// How long [`WorkerProcess::wait`] waits for the last stderr lines after the exit
/// (a grandchild may hold the pipe open), in all: however often it is called.
const STDERR_DRAIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The task that reads a worker's stderr, through the worker's life.
enum StderrReading {
    /// Reading while the worker runs.
    Open(tokio::task::JoinHandle<()>),
    /// The worker exited: its last lines are waited for until `until`. A
    /// `wait` dropped meanwhile (a launch polls it between its own tries)
    /// does not start the wait over.
    Draining {
        reader: tokio::task::JoinHandle<()>,
        until: tokio::time::Instant,
    },
    /// Read to its end, given up on, or never there.
    Done,
}

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
    /// starts collecting its stderr: read as bytes, decoded lossily, kept as a tail of
    /// bounded lines and forwarded to `tracing` at `info` (rate-limited).
    pub fn new(mut child: Child, worker_id: &str) -> Self {
        let pid = child.id().unwrap_or(0);
        let stderr = StderrTail::default();
        let stderr_reading = match child.stderr.take() {
            Some(pipe) => StderrReading::Open(tokio::spawn(collect_stderr(
                pipe,
                stderr.clone(),
                worker_id.to_owned(),
            ))),
            None => StderrReading::Done,
        };
        Self {
            child: Inner::Os(child),
            pid,
            stderr,
            stderr_reading,
            cleanup: None,
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn simulated(process: crate::testing::SimulatedProcess, pid: u32) -> Self {
        Self {
            child: Inner::Simulated(process),
            pid,
            stderr: StderrTail::default(),
            stderr_reading: StderrReading::Done,
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

    /// Waits for the worker to exit, kills what is left of its process group,
    /// reaps it, collects the last of its stderr, then runs its cleanup.
    ///
    /// The group is killed between the exit and the reap: while the worker is
    /// an unreaped zombie its pid, the group's id, cannot be given to another
    /// process, so the signal reaches only what the worker left running (a
    /// child in the background), which would otherwise outlive the pool. The
    /// exit is seen without reaping (`waitid` with `WNOWAIT`, looked at on
    /// each `SIGCHLD`); where that cannot be done the worker is reaped as it
    /// exits and its leftovers are not killed.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the process as it was (or reaped,
    /// after which [`signal`](Self::signal) does nothing).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = match &mut self.child {
            Inner::Os(child) => {
                if child.id().is_some() {
                    if let Some(pid) = i32::try_from(self.pid)
                        .ok()
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        if exited_unreaped(pid).await {
                            // None left is the usual case (ESRCH).
                            let _ = rustix::process::kill_process_group(
                                pid,
                                rustix::process::Signal::KILL,
                            );
                        }
                    }
                }
                child.wait().await?
            }
            #[cfg(any(test, feature = "test-util"))]
            Inner::Simulated(sim) => sim.wait().await,
        };
        if matches!(self.stderr_reading, StderrReading::Open(_)) {
            if let StderrReading::Open(reader) =
                std::mem::replace(&mut self.stderr_reading, StderrReading::Done)
            {
                self.stderr_reading = StderrReading::Draining {
                    reader,
                    until: tokio::time::Instant::now() + STDERR_DRAIN,
                };
            }
        }
        if let StderrReading::Draining { reader, until } = &mut self.stderr_reading {
            // Past `until` the reader goes on alone (it ends with the pipe).
            let _ = tokio::time::timeout_at(*until, reader).await;
            self.stderr_reading = StderrReading::Done;
        }
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
        Ok(status)
    }
}

/// Waits until child `pid` has exited, without reaping it: `true` then,
/// `false` when that cannot be watched (no `SIGCHLD` stream, or `waitid`
/// refused: the caller reaps as usual).
async fn exited_unreaped(pid: rustix::process::Pid) -> bool {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    let Ok(mut children) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        return false;
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    loop {
        // Looked at after the stream exists, so an exit before it is not missed.
        match waitid(WaitId::Pid(pid), options) {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(_) => return false,
        }
        if children.recv().await.is_none() {
            return false;
        }
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

async fn collect_stderr(mut pipe: ChildStderr, tail: StderrTail, worker_id: String) {
    let mut lines = StderrLines::default();
    let mut forward = Forwarder::default();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in lines.feed(&buf[..n]) {
            forward.line(&worker_id, &line);
            tail.push(line);
        }
    }
    if let Some(line) = lines.finish() {
        forward.line(&worker_id, &line);
        tail.push(line);
    }
    forward.flush(&worker_id);
}

/// Splits a worker's stderr bytes into lines, decoded lossily (a byte that is not
/// UTF-8 becomes U+FFFD and spoils nothing else). At most [`STDERR_LINE_MAX`] bytes
/// of a line are kept, so stderr without newlines costs bounded memory.
#[derive(Debug, Default)]
struct StderrLines {
    partial: Vec<u8>,
    /// Bytes of the current line dropped past the cap.
    dropped: usize,
}

impl StderrLines {
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (part, rest, end) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = STDERR_LINE_MAX.saturating_sub(self.partial.len());
            let keep = part.len().min(room);
            self.partial.extend_from_slice(&part[..keep]);
            self.dropped += part.len() - keep;
            if end {
                out.push(self.take());
            }
            bytes = rest;
        }
        out
    }

    fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty() || self.dropped > 0).then(|| self.take())
    }

    fn take(&mut self) -> String {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let mut line = String::from_utf8_lossy(&self.partial).into_owned();
        if self.dropped > 0 {
            line.push_str(&format!("… ({} more bytes)", self.dropped));
        }
        self.partial.clear();
        self.dropped = 0;
        line
    }
}

/// Forwards stderr lines to `tracing` at `info`, at most [`FORWARD_PER_SECOND`] a
/// second per worker; the rest are counted and reported once the second is over.
#[derive(Debug)]
struct Forwarder {
    window: std::time::Instant,
    sent: u32,
    suppressed: u64,
}

/// Stderr lines per second and worker forwarded to the log.
const FORWARD_PER_SECOND: u32 = 50;

impl Default for Forwarder {
    fn default() -> Self {
        Self {
            window: std::time::Instant::now(),
            sent: 0,
            suppressed: 0,
        }
    }
}

impl Forwarder {
    fn line(&mut self, worker_id: &str, line: &str) {
        if self.window.elapsed() >= std::time::Duration::from_secs(1) {
            self.flush(worker_id);
            self.window = std::time::Instant::now();
            self.sent = 0;
        }
        if self.sent < FORWARD_PER_SECOND {
            self.sent += 1;
            tracing::info!(worker.id = %worker_id, "{line}");
        } else {
            self.suppressed += 1;
        }
    }

    fn flush(&mut self, worker_id: &str) {
        if self.suppressed > 0 {
            tracing::info!(
                worker.id = %worker_id,
                suppressed = self.suppressed,
                "worker stderr lines not logged (more than {FORWARD_PER_SECOND} a second)"
            );
            self.suppressed = 0;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_without_newlines_is_held_up_to_the_cap_only() {
        let mut lines = StderrLines::default();
        for _ in 0..1000 {
            assert!(lines.feed(&[b'x'; 8192]).is_empty());
            assert!(lines.partial.len() <= STDERR_LINE_MAX);
        }
        let out = lines.feed(b"\nnext\n");
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with(&"x".repeat(STDERR_LINE_MAX)));
        assert!(out[0].ends_with(&format!("… ({} more bytes)", 8192 * 1000 - STDERR_LINE_MAX)));
        assert_eq!(out[1], "next");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_and_reading_goes_on() {
        let mut lines = StderrLines::default();
        let out = lines.feed(b"bad \xff byte\r\nafter\nunfinished");
        assert_eq!(out, ["bad \u{fffd} byte", "after"]);
        assert_eq!(lines.finish().as_deref(), Some("unfinished"));
        assert_eq!(lines.finish(), None);
    }

    /// Kills the process whose pid a test's worker wrote to a file, however
    /// the test ends, and removes the file.
    struct KillPidFile(std::path::PathBuf);

    impl Drop for KillPidFile {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.0) {
                if let Some(pid) = pid
                    .trim()
                    .parse()
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A worker that exits while a process outside its group (a `setsid`
    /// child) holds its stderr: a caller that polls `wait` between its own
    /// short sleeps, as a FIFO launch does, sees the exit once the drain's
    /// one deadline has passed. It used to start the drain over on every
    /// call, so such a launch waited its whole open timeout.
    #[tokio::test]
    async fn a_wait_polled_between_short_sleeps_ends_once_the_drain_s_deadline_passed() {
        let pid_file = KillPidFile(
            std::env::temp_dir().join(format!("process-drain-{}.pid", std::process::id())),
        );
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args([
            "-c",
            // The child writes its pid once it leads a session of its own
            // (out of the worker's group); the worker exits after that.
            &format!(
                "f={}; setsid sh -c 'echo $$ > \"$0\"; exec sleep 30' \"$f\" & \
                 while [ ! -s \"$f\" ]; do sleep 0.01; done; exit 3",
                pid_file.0.display()
            ),
        ])
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut worker = WorkerProcess::new(cmd.spawn().unwrap(), "worker-test");
        // Each poll sleeps at least 10 ms, so a drain of 250 ms in all ends
        // within 26 polls, however slow the machine.
        let mut polls = 0;
        let status = loop {
            polls += 1;
            assert!(polls <= 100, "the drain started over at every poll");
            tokio::select! {
                exited = worker.wait() => break exited.unwrap(),
                () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            }
        };
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_real_process_flooding_stderr_keeps_a_tail_with_its_last_line() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args([
            "-c",
            "head -c 4000000 /dev/zero | tr '\\0' y >&2; printf '\\n\\377 then the last line\\n' >&2",
        ])
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut worker = WorkerProcess::new(cmd.spawn().unwrap(), "worker-test");
        assert!(worker.wait().await.unwrap().success());
        let text = worker.stderr_tail().text();
        assert!(text.ends_with("\u{fffd} then the last line"), "{text:.200}");
        assert!(text.len() < 2 * STDERR_LINE_MAX, "{}", text.len());
    }

    /// Whether process `pid` is gone or a zombie (killed, not yet reaped by
    /// whoever adopted it).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        }
    }

    /// A worker that exits leaving a child running in its group: the child is
    /// killed when the worker is reaped, instead of outliving the pool.
    #[tokio::test]
    async fn what_a_worker_leaves_running_in_its_group_is_killed_when_it_is_reaped() {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo $!; exit 3"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).await.unwrap();
        let left: u32 = line.trim().parse().unwrap();
        // A guard of its own: the test kills it whatever happens.
        struct KillOnDrop(u32);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _guard = KillOnDrop(left);
        assert!(!dead(left), "the child runs while its parent does");
        let mut worker = WorkerProcess::new(child, "worker-test");
        let status = worker.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        // SIGKILL was sent before the reap returned; the kernel may take a
        // moment to end the process (a bound against a hang, not a timing).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !dead(left) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child {left} outlived its reaped worker"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
