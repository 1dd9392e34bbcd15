//! A real worker process (the `noisy_worker` example) over the stdio and fifo links:
//! a handler's `println!` must not corrupt the protocol stream.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use pool_core::protocol::{
    decode_from_worker, encode_frame, FrameCodec, FromWorker, TaskFrame, ToWorker, PROTOCOL_VERSION,
};
use pool_core::transport::env;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::codec::FramedRead;

const MAX_FRAME: usize = 1 << 20;
const WATCHDOG: Duration = Duration::from_secs(20);

/// The example worker, built by `cargo test` next to this test's own executable.
fn example_worker() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/child_process-<hash> → target/<profile>/examples/noisy_worker
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = profile_dir.join("examples").join("noisy_worker");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p worker-sdk --examples` \
         (plain `cargo test -p worker-sdk` does)",
        path.display()
    );
    path
}

/// A worker command that is killed when dropped, stderr captured.
fn worker_command() -> Command {
    with_worker_env(Command::new(example_worker()))
}

/// The example worker started through a wrapper, a shell that does not `exec`
/// it: the shell is the worker's parent, not the manager (`CORTEX_MANAGER_PID`,
/// this test). Killed when dropped (the shell; the worker ends with its link).
fn wrapped_worker_command() -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "\"$0\"; exit $?"])
        .arg(example_worker())
        .env(env::MANAGER_PID, std::process::id().to_string());
    with_worker_env(cmd)
}

/// `cmd` with the worker's environment, killed when dropped, stderr captured.
fn with_worker_env(mut cmd: Command) -> Command {
    cmd.env(env::WORKER_ID, "worker-1")
        .env(env::MAX_FRAME, MAX_FRAME.to_string())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Appends the frame of task `id` (first attempt, 10 s) to `into`.
fn encode_task(id: u64, task_type: &str, payload: &[u8], into: &mut BytesMut) {
    let task = ToWorker::Task(TaskFrame {
        id,
        task_type,
        payload,
        attempt: 1,
        timeout_ms: 10_000,
    });
    encode_frame(&task, into, MAX_FRAME).expect("task");
}

/// Runs the conversation every link must carry, then checks the exit and stderr.
/// `ready.pid` must be `child`'s, unless `wrapped` (then `child` is the wrapper).
async fn converse<R, W>(mut child: Child, reader: R, mut writer: W, wrapped: bool)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FramedRead::new(reader, FrameCodec::new(MAX_FRAME));
    let mut input = BytesMut::new();
    let hello = ToWorker::Hello {
        version: PROTOCOL_VERSION,
        worker_id: "worker-1",
        heartbeat_ms: 0,
        max_frame: MAX_FRAME as u32,
    };
    encode_frame(&hello, &mut input, MAX_FRAME).expect("hello");
    let payload = rmp_serde::to_vec_named(&json!({ "text": "hi" })).expect("payload");
    for (id, task_type) in [(1, "shout"), (2, "echo")] {
        encode_task(id, task_type, &payload, &mut input);
    }
    writer.write_all(&input).await.expect("send frames");

    let mut results = Vec::new();
    while results.len() < 3 {
        let body = tokio::time::timeout(WATCHDOG, frames.next())
            .await
            .expect("the worker answered in time")
            .expect("the worker's output is open")
            .expect("an intact frame: stdout was not corrupted");
        match decode_from_worker(&body).expect("a known message") {
            FromWorker::Ready {
                version,
                task_types,
                pid,
                batches_replies,
            } => {
                assert!(batches_replies, "the SDK batches replies");
                assert!(results.is_empty(), "ready comes first");
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(task_types, ["echo", "later", "nap", "runtime", "shout"]);
                if !wrapped {
                    assert_eq!(Some(pid), child.id());
                }
                results.push((0, Value::Null));
            }
            FromWorker::Result { id, payload } => {
                results.push((id, rmp_serde::from_slice(payload).expect("result")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    results.sort_by_key(|(id, _)| *id);
    assert_eq!(results[1], (1, json!({ "text": "hi" })));
    assert_eq!(results[2], (2, json!({ "text": "hi" })));

    input.clear();
    encode_frame(
        &ToWorker::Shutdown { graceful: true },
        &mut input,
        MAX_FRAME,
    )
    .expect("bye");
    writer.write_all(&input).await.expect("send shutdown");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let status = tokio::time::timeout(WATCHDOG, child.wait())
        .await
        .expect("the worker exited in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).await.expect("stderr");
    assert!(
        logs.contains("task 1 says"),
        "the println! went to stderr: {logs:?}"
    );
}

#[tokio::test]
async fn println_in_a_handler_does_not_corrupt_the_stdio_link() {
    let mut child = worker_command()
        .env(env::TRANSPORT, "stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the example worker");
    let stdin = child.stdin.take().expect("stdin piped");
    let stdout = child.stdout.take().expect("stdout piped");
    converse(child, stdout, stdin, false).await;
}

#[tokio::test]
async fn the_fifo_link_is_opened_in_the_managers_order() {
    let (dir, _cleanup) = temp_dir();
    let (to_worker, from_worker) = fifos(&dir);
    let child = fifo_worker(worker_command(), &to_worker, &from_worker);
    // The manager's order: its receiver first (never blocks), then its sender, which
    // fails with ENXIO until the worker has opened its read end.
    let reader = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&from_worker)
        .expect("open receiver");
    let writer = open_sender(&to_worker).await;
    converse(child, reader, writer, false).await;
}

/// A worker whose parent is a wrapper, not the manager, is not orphaned: while
/// the manager is slow to open its end of the from-worker FIFO, the worker waits
/// for it (checking every 100 ms that its parent did not change) instead of
/// exiting, and then serves.
#[tokio::test]
async fn a_fifo_worker_started_through_a_wrapper_waits_for_a_slow_manager() {
    let (dir, _cleanup) = temp_dir();
    let (to_worker, from_worker) = fifos(&dir);
    let child = fifo_worker(wrapped_worker_command(), &to_worker, &from_worker);
    // The worker has opened its read end; it now waits to open the other FIFO.
    let writer = open_sender(&to_worker).await;
    // A slow manager: several of the worker's checks pass meanwhile. (What is
    // asserted does not depend on how many: a worker that exits fails it.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reader = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&from_worker)
        .expect("open receiver");
    converse(child, reader, writer, true).await;
}

/// A worker orphaned before it could look (the pid its manager left in
/// `CORTEX_MANAGER_PID` names no process, and its parent never changes while
/// it waits) ends at its next check, saying why, instead of waiting out the
/// FIFO deadline of a minute.
#[tokio::test]
async fn a_fifo_worker_whose_manager_pid_names_no_process_exits() {
    let (dir, _cleanup) = temp_dir();
    let (to_worker, from_worker) = fifos(&dir);
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let pid = gone.id().expect("a pid before it is reaped");
    gone.wait().await.expect("reap true");
    let mut cmd = worker_command();
    cmd.env(env::MANAGER_PID, pid.to_string());
    let child = fifo_worker(cmd, &to_worker, &from_worker);
    let out = tokio::time::timeout(WATCHDOG, child.wait_with_output())
        .await
        .expect("the orphaned worker waited for its FIFOs")
        .expect("wait for the worker");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("the manager went away"), "{said}");
}

/// Makes the two FIFOs of a link in `dir`: (to the worker, from the worker).
fn fifos(dir: &Path) -> (PathBuf, PathBuf) {
    let (to_worker, from_worker) = (dir.join("to-worker"), dir.join("from-worker"));
    for fifo in [&to_worker, &from_worker] {
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .expect("mkfifo");
    }
    (to_worker, from_worker)
}

/// Spawns `cmd` (the example worker) on the fifo transport over these FIFOs.
fn fifo_worker(mut cmd: Command, to_worker: &Path, from_worker: &Path) -> Child {
    cmd.env(env::TRANSPORT, "fifo")
        .env(env::FIFO_TO_WORKER, to_worker)
        .env(env::FIFO_FROM_WORKER, from_worker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the example worker")
}

/// Opens the manager's sender on `to_worker`, which fails with ENXIO until the
/// worker has opened its read end.
async fn open_sender(to_worker: &Path) -> tokio::net::unix::pipe::Sender {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(to_worker) {
            Ok(sender) => return sender,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                assert!(
                    Instant::now() < deadline,
                    "the worker never opened its fifo"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("open sender: {e}"),
        }
    }
}

/// A new directory of this test's own, and what removes it.
fn temp_dir() -> (PathBuf, RemoveDir) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "worker-sdk-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    (dir.clone(), RemoveDir(dir))
}

/// Removes a test's directory, even when the test fails.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Spawns the example worker on stdio and sends it a hello of `version`.
async fn stdio_worker_after_hello(version: u32) -> (Child, tokio::process::ChildStdin) {
    stdio_worker_with(worker_command(), version).await
}

/// Spawns `cmd` (the example worker) on stdio and sends it a hello of `version`.
async fn stdio_worker_with(mut cmd: Command, version: u32) -> (Child, tokio::process::ChildStdin) {
    let mut child = cmd
        .env(env::TRANSPORT, "stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the example worker");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut input = BytesMut::new();
    let hello = ToWorker::Hello {
        version,
        worker_id: "worker-1",
        heartbeat_ms: 5,
        max_frame: MAX_FRAME as u32,
    };
    encode_frame(&hello, &mut input, MAX_FRAME).expect("hello");
    stdin.write_all(&input).await.expect("send hello");
    (child, stdin)
}

async fn exit_and_logs(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut stderr = child.stderr.take().expect("stderr piped");
    let status = tokio::time::timeout(WATCHDOG, child.wait())
        .await
        .expect("the worker exited in time")
        .expect("wait");
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).await.expect("stderr");
    (status, logs)
}

#[tokio::test]
async fn the_worker_exits_quietly_when_the_manager_goes_away() {
    let (mut child, stdin) = stdio_worker_after_hello(PROTOCOL_VERSION).await;
    let stdout = child.stdout.take().expect("stdout piped");
    let mut frames = FramedRead::new(stdout, FrameCodec::new(MAX_FRAME));
    let ready = tokio::time::timeout(WATCHDOG, frames.next())
        .await
        .expect("ready in time")
        .expect("output open")
        .expect("intact frame");
    assert!(matches!(
        decode_from_worker(&ready),
        Ok(FromWorker::Ready { .. })
    ));
    drop(stdin);
    drop(frames);
    let (status, logs) = exit_and_logs(child).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    assert_eq!(logs, "", "no noise when the manager leaves");
}

#[tokio::test]
async fn a_version_mismatch_exits_with_code_2_and_says_why() {
    let (child, _stdin) = stdio_worker_after_hello(PROTOCOL_VERSION + 1).await;
    let (status, logs) = exit_and_logs(child).await;
    assert_eq!(status.code(), Some(2), "{logs}");
    assert!(logs.contains("version"), "{logs:?}");
    assert_eq!(logs.lines().count(), 1, "{logs:?}");
}

/// The example worker on stdio after its `ready`: the manager's ends.
struct Running {
    child: Child,
    stdin: tokio::process::ChildStdin,
    frames: FramedRead<tokio::process::ChildStdout, FrameCodec>,
}

impl Running {
    async fn start(cmd: Command) -> Self {
        let (mut child, stdin) = stdio_worker_with(cmd, PROTOCOL_VERSION).await;
        let stdout = child.stdout.take().expect("stdout piped");
        Self {
            child,
            stdin,
            frames: FramedRead::new(stdout, FrameCodec::new(MAX_FRAME)),
        }
    }

    /// Sends task `id` of `task_type` with `input` and returns its result
    /// (heartbeats and `ready` are skipped).
    async fn call(&mut self, id: u64, task_type: &str, input: &Value) -> Value {
        let mut frame = BytesMut::new();
        let payload = rmp_serde::to_vec(input).expect("payload");
        encode_task(id, task_type, &payload, &mut frame);
        self.stdin.write_all(&frame).await.expect("send task");
        // One deadline for the answer: heartbeats keep arriving meanwhile.
        let deadline = tokio::time::Instant::now() + WATCHDOG;
        loop {
            let body = tokio::time::timeout_at(deadline, self.frames.next())
                .await
                .expect("the worker answered in time")
                .expect("the worker's output is open")
                .expect("an intact frame");
            match decode_from_worker(&body).expect("a message") {
                FromWorker::Result { id: got, payload } => {
                    assert_eq!(got, id);
                    return rmp_serde::from_slice(payload).expect("a result");
                }
                FromWorker::Error(e) => panic!("task {id} failed: {e:?}"),
                _ => {}
            }
        }
    }

    /// Waits until the worker's one thread waits in the pipe's read (`pipe_read`,
    /// `anon_pipe_read` since Linux 6.16), not in the runtime's `epoll_wait`
    /// (`do_epoll_wait`, `ep_poll`); fails after [`WATCHDOG`].
    async fn wait_until_idle(&self) {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let wchan = self.waits_in();
            if wchan.ends_with("pipe_read") {
                return;
            }
            let unnamed = if wchan.trim() == "0" {
                " (this kernel does not name wait channels in /proc/PID/wchan)"
            } else {
                ""
            };
            assert!(
                Instant::now() < deadline,
                "the idle worker waits in {wchan:?}{unnamed}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// What the worker's main thread waits in, from `/proc/PID/wchan`.
    fn waits_in(&self) -> String {
        let pid = self.child.id().expect("still running");
        std::fs::read_to_string(format!("/proc/{pid}/wchan")).expect("the worker's wchan")
    }
}

/// Asks the example worker (started with `threads`, `None`: the default) which
/// runtime its handlers run on.
async fn runtime_of_worker(threads: Option<&str>) -> Value {
    let mut cmd = worker_command();
    if let Some(n) = threads {
        cmd.env("NOISY_WORKER_THREADS", n);
    }
    Running::start(cmd)
        .await
        .call(7, "runtime", &Value::Null)
        .await
}

#[tokio::test]
async fn a_worker_runs_on_one_thread_unless_it_asks_for_more() {
    assert_eq!(
        runtime_of_worker(None).await,
        json!({ "flavor": "current_thread", "threads": 1 })
    );
    assert_eq!(
        runtime_of_worker(Some("3")).await,
        json!({ "flavor": "multi_thread", "threads": 3 })
    );
}

#[tokio::test]
async fn an_idle_worker_waits_for_its_next_task_in_a_read_of_the_pipe() {
    let mut worker = Running::start(worker_command()).await;
    assert_eq!(worker.call(1, "echo", &json!("one")).await, json!("one"));
    // Nothing is left to run: the worker's one thread waits in the pipe's read.
    worker.wait_until_idle().await;
    assert_eq!(worker.call(2, "echo", &json!("two")).await, json!("two"));
}

#[tokio::test]
async fn an_idle_worker_whose_output_breaks_exits_while_its_input_stays_open() {
    // Heartbeats every 5 ms: the first one after the reader is gone fails, on
    // the heartbeat thread, while the worker waits in a blocking read.
    let worker = Running::start(worker_command()).await;
    worker.wait_until_idle().await;
    let Running {
        child,
        stdin,
        frames,
    } = worker;
    drop(frames);
    let (status, logs) = exit_and_logs(child).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    assert_eq!(logs, "", "no noise when the manager stops listening");
    drop(stdin);
}

#[tokio::test]
async fn a_handler_that_waits_keeps_the_worker_out_of_a_blocking_read() {
    let mut worker = Running::start(worker_command()).await;
    // The handler's timer can only fire if the worker's thread is not stuck
    // waiting for a next frame, and none is sent.
    assert_eq!(worker.call(1, "nap", &json!(30)).await, json!(30));
}

#[tokio::test]
async fn a_task_left_behind_by_a_handler_keeps_the_worker_out_of_a_blocking_read() {
    let (dir, _cleanup) = temp_dir();
    let marker = dir.join("done");
    let mut worker = Running::start(worker_command()).await;
    let path = marker.to_str().expect("a UTF-8 temp path");
    assert_eq!(worker.call(1, "later", &json!(path)).await, Value::Null);
    // The handler answered at once; the task it left writes the file later,
    // on the worker's one thread, while no frame comes.
    let deadline = Instant::now() + WATCHDOG;
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the task left behind never ran: the worker waits in {:?}",
            worker.waits_in()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
