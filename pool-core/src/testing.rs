//! In-process test doubles (feature `test-util`): a scripted [`MockTransport`] whose
//! "workers" are tasks speaking the real protocol over `tokio::io::duplex`, so the
//! manager's logic can be tested with paused time and no processes.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::process::{GroupSignal, WorkerProcess};
use crate::protocol::{
    decode_to_worker, encode_frame, ErrorReply, FrameCodec, FromWorker, Heartbeat, ToWorker,
    PROTOCOL_VERSION,
};
use crate::transport::{LaunchError, Link, Transport, WorkerSpec};

/// The stand-in for a worker process behind a [`MockTransport`] link.
#[derive(Debug)]
pub struct SimulatedProcess {
    kill: CancellationToken,
    exit: Option<oneshot::Receiver<i32>>,
    status: Option<ExitStatus>,
    worker: String,
    recorder: Arc<MockRecorder>,
    /// Set while a [`MockAction::Stubborn`] task runs: SIGTERM is ignored.
    stubborn: Arc<AtomicBool>,
}

impl SimulatedProcess {
    /// Records the signal and ends the worker (a stubborn one survives SIGTERM).
    /// Like a real process, a reaped one is not signalled.
    pub(crate) fn signal(&mut self, signal: GroupSignal) {
        if self.status.is_some() {
            return;
        }
        self.recorder
            .receive(&self.worker, MockReceived::Signal(signal));
        if signal == GroupSignal::Terminate && self.stubborn.load(SeqCst) {
            return;
        }
        self.kill.cancel();
    }

    pub(crate) async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let raw = match &mut self.exit {
            Some(rx) => rx.await.unwrap_or(9),
            None => 9,
        };
        self.exit = None;
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        status
    }
}

/// One task as a mock worker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockTask {
    /// The task id.
    pub id: u64,
    /// Its type.
    pub task_type: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Which attempt.
    pub attempt: u32,
    /// The worker running it.
    pub worker: String,
}

/// What a mock worker does with a task.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MockAction {
    /// Reply with the payload.
    Echo,
    /// Reply with the payload after a delay.
    EchoAfter(Duration),
    /// Reply with an error.
    Fail {
        /// Whether the pool may retry.
        retryable: bool,
    },
    /// Never reply (heartbeats continue).
    Hang,
    /// The worker exits with this code at once.
    Crash(i32),
    /// The worker stops answering, stops its heartbeats and stops reading its
    /// input (like SIGSTOP), as it starts the task.
    Freeze,
    /// The worker writes a frame that is not a valid message.
    Garbage,
    /// The worker reports this RSS (bytes) in its heartbeats from now on, and
    /// replies with the payload.
    Bloat(u64),
    /// Never reply, and make the worker ignore `cancel`, `shutdown`, the end of
    /// its input and SIGTERM: only SIGKILL ends it.
    Stubborn,
    /// Run until a `cancel` for the task arrives, then answer it with an `error`
    /// of kind `cancelled`.
    UntilCancelled,
    /// Run until a `cancel` for the task arrives, then the worker exits with
    /// status 0 without answering.
    ExitOnCancel,
    /// The worker exits with this code as soon as it reads the task, before
    /// running it, even while it would wait in the worker's prefetch window:
    /// a task whose frame kills the worker's decoder.
    CrashOnReceipt(i32),
    /// As the task starts, the worker closes its input (what the pool writes
    /// to it fails from then on) and lives on, never answering the task, its
    /// heartbeats going on.
    CloseInput,
}

/// Something a mock worker was sent that is not a task (see
/// [`MockRecorder::received`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MockReceived {
    /// A `cancel` frame for this task id.
    Cancel(u64),
    /// A `shutdown` frame.
    Shutdown,
    /// A signal to its process group.
    Signal(GroupSignal),
}

type Script = dyn Fn(&MockTask) -> MockAction + Send + Sync;
type TypesFor = dyn Fn(&str) -> Vec<String> + Send + Sync;

/// What the mock workers did, for assertions.
#[derive(Debug, Default)]
pub struct MockRecorder {
    inner: Mutex<RecorderState>,
    launches: AtomicU32,
    fail_launches: AtomicU32,
    crash_after_ready: AtomicU32,
    pipes_outlive: AtomicU32,
}

#[derive(Debug, Default)]
struct RecorderState {
    started: Vec<MockTask>,
    max_concurrent: u32,
    /// `(task id, attempt, worker)` of every reply.
    replies: Vec<(u64, u32, String)>,
    received: Vec<(String, tokio::time::Instant, MockReceived)>,
    /// `(task id, attempt, worker)` of every attempt running now.
    live: std::collections::HashSet<(u64, u32, String)>,
    /// Workers that have exited.
    exited: std::collections::HashSet<String>,
    /// How long a worker of this name waits after `hello` before it says
    /// `ready` (a slow start).
    ready_delays: std::collections::HashMap<String, Duration>,
    /// The program each worker launched was given, by worker name.
    programs: std::collections::HashMap<String, String>,
}

impl MockRecorder {
    /// Every task attempt a worker started, in order.
    pub fn started(&self) -> Vec<MockTask> {
        self.lock().started.clone()
    }

    /// Whether an attempt of task `id` is still running on a worker that has
    /// not exited: the pool tells no caller an outcome while one is (a worker
    /// records a task's end before its reply leaves it, and its own exit
    /// before the pool can see it).
    pub fn still_runs(&self, id: u64) -> bool {
        let s = self.lock();
        s.live
            .iter()
            .any(|(task, _, worker)| *task == id && !s.exited.contains(worker))
    }

    /// `(task id, attempt)` of every reply a worker sent, in order.
    pub fn replies(&self) -> Vec<(u64, u32)> {
        self.lock()
            .replies
            .iter()
            .map(|(id, attempt, _)| (*id, *attempt))
            .collect()
    }

    /// `(task id, attempt, worker)` of every reply a worker sent, in order: which
    /// start of a task that ran on several workers was answered.
    pub fn replies_by_worker(&self) -> Vec<(u64, u32, String)> {
        self.lock().replies.clone()
    }

    /// What worker `worker` (`worker-N`) was sent besides tasks, in order, with
    /// when (on tokio's clock) it arrived.
    pub fn received(&self, worker: &str) -> Vec<(tokio::time::Instant, MockReceived)> {
        self.lock()
            .received
            .iter()
            .filter(|(w, _, _)| w == worker)
            .map(|(_, at, what)| (*at, *what))
            .collect()
    }

    fn receive(&self, worker: &str, what: MockReceived) {
        let now = tokio::time::Instant::now();
        self.lock().received.push((worker.to_owned(), now, what));
    }

    /// The most tasks one worker ever ran at the same time.
    pub fn max_concurrent(&self) -> u32 {
        self.lock().max_concurrent
    }

    /// How many workers were launched.
    pub fn launches(&self) -> u32 {
        self.launches.load(SeqCst)
    }

    /// Makes the next `n` launches fail.
    pub fn fail_next_launches(&self, n: u32) {
        self.fail_launches.store(n, SeqCst);
    }

    /// Makes the next `n` workers launched exit (code 1) [`CRASH_AFTER_READY`]
    /// after their handshake, whether or not they were given a task.
    pub fn crash_next_after_ready(&self, n: u32) {
        self.crash_after_ready.store(n, SeqCst);
    }

    /// The program the worker named `worker` (`worker-N`) was launched with,
    /// if it was launched.
    pub fn program_of(&self, worker: &str) -> Option<String> {
        self.lock().programs.get(worker).cloned()
    }

    /// Makes the worker named `worker` (`worker-N`) wait `delay` after its
    /// `hello` before it says `ready`, as a slow start does.
    pub fn delay_ready_of(&self, worker: &str, delay: Duration) {
        self.lock().ready_delays.insert(worker.to_owned(), delay);
    }

    /// Makes the pipes of the next `n` workers launched stay open for
    /// [`PIPES_OUTLIVE`] after the worker exits, as when a child of the worker
    /// inherited them: the pool sees the exit, but neither the end of the
    /// worker's output nor a failed write to its input.
    pub fn pipes_outlive_next(&self, n: u32) {
        self.pipes_outlive.store(n, SeqCst);
    }

    /// Takes one from a counter of launches still to be affected.
    fn take_one(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self, task: &MockTask) {
        let mut s = self.lock();
        s.started.push(task.clone());
        s.live.insert((task.id, task.attempt, task.worker.clone()));
        let n = s.live.iter().filter(|(_, _, w)| *w == task.worker).count();
        s.max_concurrent = s.max_concurrent.max(n as u32);
    }

    /// A task answered without running (cancelled while it waited).
    fn answered_unrun(&self, task: &MockTask) {
        self.lock()
            .replies
            .push((task.id, task.attempt, task.worker.clone()));
    }

    fn end(&self, task: &MockTask, replied: bool) {
        let mut s = self.lock();
        s.live.remove(&(task.id, task.attempt, task.worker.clone()));
        if replied {
            s.replies.push((task.id, task.attempt, task.worker.clone()));
        }
    }
}

/// A transport whose workers are in-process tasks following a script.
pub struct MockTransport {
    script: Arc<Script>,
    recorder: Arc<MockRecorder>,
    task_types: Arc<TypesFor>,
    batches_replies: bool,
    heartbeats: bool,
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTransport").finish_non_exhaustive()
    }
}

impl MockTransport {
    /// A transport whose workers answer each task as `script` says; the recorder
    /// observes them.
    pub fn new(
        script: impl Fn(&MockTask) -> MockAction + Send + Sync + 'static,
    ) -> (Self, Arc<MockRecorder>) {
        let recorder = Arc::new(MockRecorder::default());
        (
            Self {
                script: Arc::new(script),
                recorder: recorder.clone(),
                task_types: Arc::new(|_| Vec::new()),
                batches_replies: false,
                heartbeats: true,
            },
            recorder,
        )
    }

    /// Makes each worker list, in its `ready`, the task types `types_for` gives
    /// for its name (`worker-N`); by default a mock worker lists none.
    ///
    /// ```
    /// use pool_core::testing::{MockAction, MockTransport};
    ///
    /// let (transport, _recorder) = MockTransport::new(|_task| MockAction::Echo);
    /// let _transport = transport.with_task_types(|worker| match worker {
    ///     "worker-0" => vec!["echo".to_owned()],
    ///     _ => Vec::new(),
    /// });
    /// ```
    pub fn with_task_types(
        mut self,
        types_for: impl Fn(&str) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.task_types = Arc::new(types_for);
        self
    }

    /// Makes each worker say in its `ready` that it batches replies
    /// (`batches_replies`), so the pool treats its deaths as such a worker's
    /// (its replies still leave one by one).
    ///
    /// ```
    /// use pool_core::testing::{MockAction, MockTransport};
    ///
    /// let (transport, _recorder) = MockTransport::new(|_task| MockAction::Echo);
    /// let _transport = transport.with_batched_replies();
    /// ```
    pub fn with_batched_replies(mut self) -> Self {
        self.batches_replies = true;
        self
    }

    /// Makes each worker send no `heartbeat` at all: only its other frames
    /// (`ready`, results, errors) tell the pool it is alive.
    ///
    /// ```
    /// use pool_core::testing::{MockAction, MockTransport};
    ///
    /// let (transport, _recorder) = MockTransport::new(|_task| MockAction::Echo);
    /// let _transport = transport.without_heartbeats();
    /// ```
    pub fn without_heartbeats(mut self) -> Self {
        self.heartbeats = false;
        self
    }
}

#[async_trait]
impl Transport for MockTransport {
    fn name(&self) -> &'static str {
        "mock"
    }

    async fn launch(&self, spec: &WorkerSpec) -> Result<Link, LaunchError> {
        let n = self.recorder.launches.fetch_add(1, SeqCst) + 1;
        self.recorder.lock().programs.insert(
            spec.worker_id.clone(),
            spec.program.to_string_lossy().into_owned(),
        );
        if MockRecorder::take_one(&self.recorder.fail_launches) {
            return Err(LaunchError::Spawn {
                program: spec.program.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let crash_after_ready = MockRecorder::take_one(&self.recorder.crash_after_ready);
        let pipes_outlive = MockRecorder::take_one(&self.recorder.pipes_outlive);
        // A pipe each way, as a process has: either end may close on its own.
        let (to_worker, worker_input) = tokio::io::duplex(1 << 20);
        let (worker_output, from_worker) = tokio::io::duplex(1 << 20);
        let kill = CancellationToken::new();
        let stubborn = Arc::new(AtomicBool::new(false));
        let (exit_tx, exit_rx) = oneshot::channel();
        let task_types = (self.task_types)(&spec.worker_id);
        tokio::spawn(fake_worker(
            FakeWorker {
                task_types,
                name: spec.worker_id.clone(),
                script: self.script.clone(),
                recorder: self.recorder.clone(),
                kill: kill.clone(),
                crash_after_ready,
                pipes_outlive,
                stubborn: stubborn.clone(),
                batches_replies: self.batches_replies,
                heartbeats: self.heartbeats,
            },
            worker_input,
            worker_output,
            exit_tx,
        ));
        let process = SimulatedProcess {
            kill,
            exit: Some(exit_rx),
            status: None,
            worker: spec.worker_id.clone(),
            recorder: self.recorder.clone(),
            stubborn,
        };
        Ok(Link {
            reader: Box::pin(from_worker),
            writer: Box::pin(to_worker),
            process: WorkerProcess::simulated(process, u32::MAX - n),
        })
    }
}

/// Makes `pool`'s actor (the task that owns its state) panic, as a bug would,
/// to test what callers see of a pool whose actor is gone:
/// [`Pool::failure`](crate::Pool::failure) says why, submits are refused, the
/// health status reads `failed`.
pub fn panic_actor(pool: &crate::Pool) {
    pool.send_command(crate::manager::Command::Panic);
}

/// Makes the lane of each of `pool`'s ready workers (the task that reads,
/// settles and writes for it) panic, as a bug would, to test that the pool
/// recovers: each such worker is killed and reaped, its tasks settle as
/// after a protocol error, and a replacement starts.
pub fn panic_lanes(pool: &crate::Pool) {
    pool.send_command(crate::manager::Command::PanicLanes(
        crate::manager::PanicPoint::Wake,
    ));
}

/// Makes the lane of each of `pool`'s ready workers panic in its next refill
/// that took tasks from the queue, before it starts them, as a bug would
/// there: the tasks it took go back to the queue, and the rest is as after
/// [`panic_lanes`].
pub fn panic_lanes_in_refill(pool: &crate::Pool) {
    pool.send_command(crate::manager::Command::PanicLanes(
        crate::manager::PanicPoint::Refill,
    ));
}

/// Makes the lane of each of `pool`'s ready workers panic in its next refill
/// that took tasks from the queue, once the last one's frame is written into
/// the worker's batch and before that task is in the lane's book (the others
/// it took are), as a bug would there: that frame never reaches the worker,
/// that task goes back to the queue, and the rest is as after
/// [`panic_lanes`].
pub fn panic_lanes_in_start(pool: &crate::Pool) {
    pool.send_command(crate::manager::Command::PanicLanes(
        crate::manager::PanicPoint::Start,
    ));
}

/// Sets how many bytes of frames may wait for a worker's link before tasks
/// wait in the queue instead (a pipe's worth, 1 MiB, in a pool built without
/// this feature), for the pools this thread drives from now on (a pool on a
/// current-thread runtime, as the model test runs each case); `None`
/// restores it. A bound of a few bytes makes nearly every frame wait for the link:
/// the model test drives the refills that follow the link through every
/// sequence it draws.
pub fn set_link_ahead(bytes: Option<usize>) {
    crate::manager::set_test_bound(bytes.unwrap_or(0));
}

fn frame(message: &FromWorker<'_>) -> Bytes {
    let mut buf = BytesMut::new();
    let _ = encode_frame(message, &mut buf, usize::MAX >> 1);
    buf.freeze()
}

/// How long a worker made by [`MockRecorder::crash_next_after_ready`] lives after
/// its handshake.
pub const CRASH_AFTER_READY: Duration = Duration::from_millis(10);

/// How long the pipes of a worker made by
/// [`MockRecorder::pipes_outlive_next`] stay open after it exits.
pub const PIPES_OUTLIVE: Duration = Duration::from_secs(5);

/// What a simulated worker is made of.
struct FakeWorker {
    task_types: Vec<String>,
    name: String,
    script: Arc<Script>,
    recorder: Arc<MockRecorder>,
    kill: CancellationToken,
    crash_after_ready: bool,
    pipes_outlive: bool,
    stubborn: Arc<AtomicBool>,
    batches_replies: bool,
    heartbeats: bool,
}

async fn fake_worker(
    worker: FakeWorker,
    reader: tokio::io::DuplexStream,
    mut writer: tokio::io::DuplexStream,
    exit_tx: oneshot::Sender<i32>,
) {
    let FakeWorker {
        task_types,
        name,
        script,
        recorder,
        kill,
        crash_after_ready,
        pipes_outlive,
        stubborn,
        batches_replies,
        heartbeats,
    } = worker;
    let dead = CancellationToken::new();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer_dead = dead.clone();
    // Hands the write half back when the worker is dead.
    let written = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = writer_dead.cancelled() => break,
                next = out_rx.recv() => match next {
                    Some(bytes) => if writer.write_all(&bytes).await.is_err() { break },
                    None => break,
                },
            }
        }
        writer
    });
    let (crash_tx, mut crash_rx) = mpsc::unbounded_channel::<i32>();
    let rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let frozen = CancellationToken::new();
    // `None` once the worker closed its input (`MockAction::CloseInput`).
    let mut frames = Some(FramedRead::new(reader, FrameCodec::default()));
    let code = 'life: {
        let Some(Ok(hello)) = next_frame(&mut frames).await else {
            break 'life 1;
        };
        let heartbeat_ms = match decode_to_worker(&hello) {
            Ok(ToWorker::Hello { heartbeat_ms, .. }) => heartbeat_ms,
            _ => break 'life 1,
        };
        let concurrency = rmp_serde::from_slice::<HelloConcurrency>(&hello)
            .ok()
            .and_then(|h| h.concurrency)
            .map_or(usize::MAX, |c| c.max(1) as usize);
        let ready_delay = recorder.lock().ready_delays.get(&name).copied();
        if let Some(delay) = ready_delay {
            tokio::time::sleep(delay).await;
        }
        let _ = out_tx.send(frame(&FromWorker::Ready {
            version: PROTOCOL_VERSION,
            pid: 0,
            task_types: task_types.iter().map(String::as_str).collect(),
            batches_replies,
        }));
        if crash_after_ready {
            let crash = crash_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CRASH_AFTER_READY).await;
                let _ = crash.send(1);
            });
        }
        let beats = out_tx.clone();
        let (beat_dead, beat_frozen, beat_rss) = (dead.clone(), frozen.clone(), rss.clone());
        if heartbeats {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(1)));
                loop {
                    tokio::select! {
                        () = beat_dead.cancelled() => break,
                        () = beat_frozen.cancelled() => break,
                        _ = tick.tick() => {
                            let rss = beat_rss.load(SeqCst);
                            let _ = beats.send(frame(&FromWorker::Heartbeat(Heartbeat::new(rss, 0, 0, 0))));
                        }
                    }
                }
            });
        }
        // Tasks beyond `concurrency` wait here, in arrival order, as the
        // protocol asks of a worker that honours the key.
        // Each with the script's action, decided as the task is read.
        let mut waiting: std::collections::VecDeque<(MockTask, MockAction)> =
            std::collections::VecDeque::new();
        let mut running = 0usize;
        // The cancellation of each running task.
        let mut cancels: HashMap<u64, CancellationToken> = HashMap::new();
        let mut input_open = true;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
        loop {
            tokio::select! {
                biased;
                () = kill.cancelled() => break 'life 9,
                Some(code) = crash_rx.recv() => break 'life code << 8,
                Some(id) = done_rx.recv() => {
                    running = running.saturating_sub(1);
                    cancels.remove(&id);
                }
                next = next_frame(&mut frames), if input_open && !frozen.is_cancelled() => {
                    let Some(Ok(body)) = next else {
                        if stubborn.load(SeqCst) {
                            input_open = false;
                            continue;
                        }
                        break 'life 0
                    };
                    match decode_to_worker(&body) {
                        Ok(ToWorker::Task(t)) => {
                            let task = MockTask {
                                id: t.id,
                                task_type: t.task_type.to_owned(),
                                payload: t.payload.to_vec(),
                                attempt: t.attempt,
                                worker: name.clone(),
                            };
                            let action = script(&task);
                            if let MockAction::CrashOnReceipt(code) = action {
                                break 'life code << 8;
                            }
                            waiting.push_back((task, action));
                        }
                        Ok(ToWorker::Cancel { id }) => {
                            recorder.receive(&name, MockReceived::Cancel(id));
                            if let Some(token) = cancels.get(&id) {
                                token.cancel();
                            }
                            if let Some(pos) = waiting.iter().position(|(t, _)| t.id == id) {
                                if let Some((task, _)) = waiting.remove(pos) {
                                    recorder.answered_unrun(&task);
                                    let _ = out_tx.send(frame(&FromWorker::Error(ErrorReply {
                                        id,
                                        kind: "cancelled",
                                        message: "cancelled before it started",
                                        retryable: false,
                                    })));
                                }
                            }
                        }
                        Ok(ToWorker::Shutdown { .. }) => {
                            recorder.receive(&name, MockReceived::Shutdown);
                            if !stubborn.load(SeqCst) {
                                break 'life 0;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break 'life 1,
                    }
                }
            }
            while running < concurrency {
                let Some((task, action)) = waiting.pop_front() else {
                    break;
                };
                running += 1;
                match action {
                    MockAction::Bloat(bytes) => rss.store(bytes, SeqCst),
                    MockAction::Stubborn => stubborn.store(true, SeqCst),
                    // Before another frame is read.
                    MockAction::Freeze => frozen.cancel(),
                    MockAction::CloseInput => {
                        frames = None;
                        input_open = false;
                    }
                    _ => {}
                }
                recorder.begin(&task);
                let done = done_tx.clone();
                let (id, cancelled) = (task.id, CancellationToken::new());
                cancels.insert(id, cancelled.clone());
                let run = run_task(
                    task,
                    action,
                    recorder.clone(),
                    TaskLinks {
                        out: out_tx.clone(),
                        crash: crash_tx.clone(),
                        frozen: frozen.clone(),
                        dead: dead.clone(),
                        cancelled,
                    },
                );
                tokio::spawn(async move {
                    run.await;
                    let _ = done.send(id);
                });
            }
        }
    };
    recorder.lock().exited.insert(name.clone());
    dead.cancel();
    if pipes_outlive {
        // A child of the worker holds both pipes for a while.
        if let Ok(writer) = written.await {
            tokio::spawn(async move {
                tokio::time::sleep(PIPES_OUTLIVE).await;
                drop((frames, writer));
            });
        }
    }
    let _ = exit_tx.send(code);
}

/// The next frame of a mock worker's input; never, once it closed it.
async fn next_frame(
    frames: &mut Option<FramedRead<tokio::io::DuplexStream, FrameCodec>>,
) -> Option<Result<Bytes, crate::protocol::FrameError>> {
    match frames {
        Some(frames) => frames.next().await,
        None => std::future::pending().await,
    }
}

/// The optional `hello` key a [`ToWorker::Hello`] does not carry.
#[derive(serde::Deserialize)]
struct HelloConcurrency {
    #[serde(default)]
    concurrency: Option<u32>,
}

/// What a running task of a mock worker is connected to.
struct TaskLinks {
    out: mpsc::UnboundedSender<Bytes>,
    crash: mpsc::UnboundedSender<i32>,
    frozen: CancellationToken,
    dead: CancellationToken,
    /// Cancelled when a `cancel` for the task arrives.
    cancelled: CancellationToken,
}

async fn run_task(
    task: MockTask,
    action: MockAction,
    recorder: Arc<MockRecorder>,
    links: TaskLinks,
) {
    let TaskLinks {
        out,
        crash,
        frozen,
        dead,
        cancelled,
    } = links;
    let reply = match action {
        MockAction::Echo | MockAction::Bloat(_) => Some(frame(&FromWorker::Result {
            id: task.id,
            payload: &task.payload,
        })),
        MockAction::EchoAfter(delay) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = dead.cancelled() => return recorder.end(&task, false),
            }
            Some(frame(&FromWorker::Result {
                id: task.id,
                payload: &task.payload,
            }))
        }
        MockAction::Fail { retryable } => Some(frame(&FromWorker::Error(ErrorReply {
            id: task.id,
            kind: "handler",
            message: "scripted failure",
            retryable,
        }))),
        MockAction::Hang | MockAction::Stubborn | MockAction::CloseInput => {
            // Holds its run slot until the worker dies.
            dead.cancelled().await;
            None
        }
        MockAction::UntilCancelled => {
            tokio::select! {
                () = cancelled.cancelled() => {}
                () = dead.cancelled() => return recorder.end(&task, false),
            }
            Some(frame(&FromWorker::Error(ErrorReply {
                id: task.id,
                kind: "cancelled",
                message: "cancelled",
                retryable: false,
            })))
        }
        MockAction::ExitOnCancel => {
            tokio::select! {
                () = cancelled.cancelled() => {
                    let _ = crash.send(0);
                }
                () = dead.cancelled() => {}
            }
            dead.cancelled().await;
            None
        }
        // (`CrashOnReceipt` ends the worker as the task is read, before any
        // run; it is matched here only for the match to be whole.)
        MockAction::CrashOnReceipt(code) | MockAction::Crash(code) => {
            // The process is gone at once: nothing else starts after this.
            let _ = crash.send(code);
            dead.cancelled().await;
            None
        }
        MockAction::Freeze => {
            frozen.cancel();
            dead.cancelled().await;
            None
        }
        MockAction::Garbage => Some(Bytes::from_static(b"\x00\x00\x00\x03\xc1\xc1\xc1")),
    };
    let replied = reply.is_some() && !frozen.is_cancelled() && !dead.is_cancelled();
    if let (Some(bytes), true) = (reply, replied) {
        let _ = out.send(bytes);
    }
    recorder.end(&task, replied);
}

/// A waker that counts its wake-ups, for tests that poll a future by hand and
/// check who was woken, and how often.
///
/// ```
/// use pool_core::testing::WakeCounter;
///
/// let (counter, waker) = WakeCounter::new();
/// waker.wake_by_ref();
/// assert_eq!(counter.count(), 1);
/// ```
#[derive(Debug, Default)]
pub struct WakeCounter(std::sync::atomic::AtomicUsize);

impl WakeCounter {
    /// A new counter and a waker that bumps it.
    pub fn new() -> (Arc<Self>, std::task::Waker) {
        let counter = Arc::new(Self::default());
        let waker = futures_util::task::waker(Arc::clone(&counter));
        (counter, waker)
    }

    /// Wake-ups so far.
    pub fn count(&self) -> usize {
        self.0.load(SeqCst)
    }
}

impl futures_util::task::ArcWake for WakeCounter {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, SeqCst);
    }
}

/// A task's outcome for the manager's own tests: task `id` failed (cancelled).
#[cfg(test)]
pub(crate) fn failed_outcome(id: u64) -> crate::manager::Completion {
    Err(crate::manager::TaskError {
        id,
        status: crate::manager::FinalStatus::Failed,
        failure: crate::manager::Failure::Cancelled,
        attempts: 1,
        worker: None,
    })
}
