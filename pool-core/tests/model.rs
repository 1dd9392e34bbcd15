//! A model test of the task path: seeded random sequences of submit (random
//! priorities; with `submit`, `try_submit`, or `submit_each_to` answered through
//! one shared `Completions` channel per case and cancelled by id), cancel, complete, handler error (retryable or fatal), worker
//! crash, protocol error, timeout (of tasks that ignore `cancel`, exit on it, or
//! ignore SIGTERM too), recycle, scale, rolling restart and shutdown (graceful, at
//! once with `shutdown_now`, or the one after the other) against the mock
//! transport with paused time, on random pools (1–3 workers, `worker_concurrency`
//! 1–2, `prefetch` 0–3 (its weight bounded at 1 or 3 bytes in two cases of
//! three), the queue in 1–3 shards when `prefetch` is above 0,
//! `max_retries` 0–2 and sometimes a task's own,
//! `max_tasks_per_worker` sometimes, workers that batch their replies in half
//! the cases, a `max_queue_len` small enough for
//! `try_submit` to be refused sometimes, a `shutdown_timeout` that cuts running
//! tasks off sometimes; tasks with their own timeouts around a slow task's run
//! time, so that timeouts race replies; in half the cases frames may run only
//! 1–64 bytes ahead of each worker's link, so nearly every task waits in the
//! queue for the link to take the frame before it).
//!
//! Each case checks, and names in its failure message:
//! 1. `settles`: every accepted task's handle resolves, or its outcome arrives on
//!    the shared channel, exactly once (a case that hangs fails),
//!    and the pool's counters agree with what the handles said, outcome by outcome;
//!    a submit is refused only as `queue_full` (from `try_submit`) or after
//!    shutdown, gives its task back, and (`refused`) that task never starts;
//! 2. `outcome`: each outcome is one its task's behaviour allows (see [`allowed`]);
//! 3. `no start after settle`: a mock worker never starts a task after its handle
//!    resolved;
//! 4. `attempts`: no task starts more often than its attempts allow: attempt
//!    numbers never pass `max_retries + 1`, start at 1 and grow by one (more only
//!    on a worker running two tasks at once, where a neighbour's crash may charge
//!    an attempt that had not reached the worker), and repeat only after a start
//!    the pool did not surely hear answered (the uncounted requeue of a task in a
//!    dead or killed worker's window, or the bystander of a worker killed for
//!    another task's timeout or ignored cancel, or any task of a worker that
//!    batched its replies, or ran several at once, and died on its own; see
//!    [`answered`]);
//! 5. `told while running`: no outcome reaches its caller while an attempt of
//!    its task still runs on a worker that has not exited (a task still
//!    running at the drain deadline ends when its worker answers it or is
//!    reaped).
//!
//! A second property checks priority order with `prefetch: 0`: one worker running
//! one task at a time (or, in half the cases, 1–3 workers running 1–2 each)
//! starts every task after each better one (lower priority number, then earlier
//! submission) that was submitted before it started.
//!
//! Each property runs its seeds in [`SHARDS`] tests. A failing case prints its
//! seed: `MODEL_SEED=N` reruns just that one (add `MODEL_TRACE=1` to print the
//! pool's events and what the test saw), `MODEL_CASES=N` runs seeds `0..N` of
//! each property.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::process::GroupSignal;
use pool_core::testing::{MockAction, MockReceived, MockRecorder, MockTask};
use pool_core::{
    Failure, FinalStatus, Pool, PoolConfig, RetryPolicy, SubmitError, Task, TaskError, TaskOutput,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Cases of the task-path model per run.
const CASES: u64 = 1200;
/// Cases of the priority property per run.
const PRIORITY_CASES: u64 = 200;
/// How long a [`Kind::Slow`] task runs.
const SLOW: Duration = Duration::from_millis(30);
/// Per-attempt timeout of the model's pools.
const TASK_TIMEOUT: Duration = Duration::from_millis(200);
/// How long one case may take on tokio's (paused) clock before it counts as hung:
/// far past every timeout, backoff and grace the scenarios use.
const CASE_LIMIT: Duration = Duration::from_secs(600);

/// The behaviour of one task, chosen by the generator and carried in its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Echoes at once.
    Ok,
    /// Echoes after [`SLOW`].
    Slow,
    /// A retryable handler error on attempt 1, then echoes.
    ErrOnce,
    /// A retryable handler error on every attempt.
    ErrAlways,
    /// A non-retryable handler error.
    Fatal,
    /// Crashes its worker on attempt 1, then echoes.
    CrashOnce,
    /// Crashes its worker on every attempt.
    Crash,
    /// Never answers: every attempt times out.
    Hang,
    /// Runs until a `cancel` comes, then answers `cancelled`.
    UntilCancelled,
    /// Runs until a `cancel` comes, then its worker exits without answering.
    ExitOnCancel,
    /// Never answers, and its worker ignores `cancel`, `shutdown` and SIGTERM.
    Stubborn,
    /// Its worker writes a frame that is not a message (a protocol error).
    Garbage,
}

impl Kind {
    /// What the generator draws from (echoing kinds twice as often).
    const DRAW: [Self; 14] = [
        Self::Ok,
        Self::Ok,
        Self::Slow,
        Self::Slow,
        Self::ErrOnce,
        Self::ErrAlways,
        Self::Fatal,
        Self::CrashOnce,
        Self::Crash,
        Self::Hang,
        Self::UntilCancelled,
        Self::ExitOnCancel,
        Self::Stubborn,
        Self::Garbage,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Slow => "slow",
            Self::ErrOnce => "err-once",
            Self::ErrAlways => "err-always",
            Self::Fatal => "fatal",
            Self::CrashOnce => "crash-once",
            Self::Crash => "crash",
            Self::Hang => "hang",
            Self::UntilCancelled => "until-cancelled",
            Self::ExitOnCancel => "exit-on-cancel",
            Self::Stubborn => "stubborn",
            Self::Garbage => "garbage",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::DRAW.into_iter().find(|k| k.name() == name)
    }

    fn action(self, attempt: u32) -> MockAction {
        match self {
            Self::Slow => MockAction::EchoAfter(SLOW),
            Self::ErrOnce if attempt == 1 => MockAction::Fail { retryable: true },
            Self::ErrAlways => MockAction::Fail { retryable: true },
            Self::Fatal => MockAction::Fail { retryable: false },
            Self::CrashOnce if attempt == 1 => MockAction::Crash(3),
            Self::Crash => MockAction::Crash(4),
            Self::Hang => MockAction::Hang,
            Self::UntilCancelled => MockAction::UntilCancelled,
            Self::ExitOnCancel => MockAction::ExitOnCancel,
            Self::Stubborn => MockAction::Stubborn,
            Self::Garbage => MockAction::Garbage,
            Self::Ok | Self::ErrOnce | Self::CrashOnce => MockAction::Echo,
        }
    }
}

type Outcome = Result<TaskOutput, TaskError>;

/// What the test saw, in the order it happened.
#[derive(Debug, Clone)]
enum Seen {
    /// A mock worker started an attempt of task `n`.
    Started {
        n: u32,
        /// The pool's id for the task.
        id: u64,
        attempt: u32,
        worker: String,
        at: Instant,
    },
    /// The test asked for task `n`'s cancellation.
    CancelAsked(u32),
    /// The test called `shutdown`.
    ShutdownAsked,
    /// Task `n`'s handle resolved; `still_running`: an attempt of it was
    /// still running on a live worker at that moment.
    Settled {
        n: u32,
        outcome: Box<Outcome>,
        still_running: bool,
    },
    /// Task `n` was accepted (priority property).
    Submitted { n: u32, priority: u8, at: Instant },
}

#[derive(Debug, Clone, Default)]
struct Log {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The mock workers' record, once the pool started: whether a task still
    /// runs when its outcome is logged.
    runs: Arc<std::sync::OnceLock<Arc<MockRecorder>>>,
}

impl Log {
    /// Logs task `n`'s outcome, and whether a live worker still ran it.
    fn settled(&self, n: u32, outcome: Outcome) {
        let id = match &outcome {
            Ok(out) => out.id,
            Err(err) => err.id,
        };
        let still_running = self.runs.get().is_some_and(|runs| runs.still_runs(id));
        self.push(Seen::Settled {
            n,
            outcome: Box::new(outcome),
            still_running,
        });
    }

    fn push(&self, seen: Seen) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen);
    }

    fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The mock workers' script: logs each start, then acts as the task's kind says.
fn script(log: Log) -> impl Fn(&MockTask) -> MockAction + Send + Sync + 'static {
    move |t| {
        let n: u32 = rmp_serde::from_slice(&t.payload).unwrap_or(u32::MAX);
        log.push(Seen::Started {
            n,
            id: t.id,
            attempt: t.attempt,
            worker: t.worker.clone(),
            at: Instant::now(),
        });
        Kind::from_name(&t.task_type).map_or(MockAction::Echo, |k| k.action(t.attempt))
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Each property's seeds are split over this many tests, which the test runner
/// runs in parallel.
const SHARDS: u64 = 4;

/// The seeds shard `shard` runs: `MODEL_SEED` alone (in shard 0), or its share of
/// seeds `0..MODEL_CASES` (else `0..default`).
fn seeds(default: u64, shard: u64) -> Vec<u64> {
    match env("MODEL_SEED") {
        Some(seed) => (shard == 0).then_some(seed).into_iter().collect(),
        None => (0..env("MODEL_CASES").unwrap_or(default))
            .filter(|seed| seed % SHARDS == shard)
            .collect(),
    }
}

/// Runs `case` for each seed of `shard` on its own paused runtime, failing a case
/// that does not finish within [`CASE_LIMIT`] of tokio time.
fn run_cases<F: std::future::Future<Output = ()>>(
    default: u64,
    shard: u64,
    case: impl Fn(u64) -> F,
) {
    for seed in seeds(default, shard) {
        pool_core::testing::set_link_ahead(link_ahead(seed));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let finished = tokio::time::timeout(CASE_LIMIT, case(seed)).await;
            assert!(
                finished.is_ok(),
                "model seed {seed}: settles: the case hung (some handle or shutdown never \
                 resolved); rerun with MODEL_SEED={seed}"
            );
        });
    }
}

/// The bound on frames waiting for a worker's link in case `seed`: in half
/// the cases 1–64 bytes (a frame here is some tens of bytes, so nearly every
/// one waits for the link to take the one before, and the lane's writer
/// refills), else the pool's own. Drawn apart from the case's shape, which
/// stays what it was for each seed.
fn link_ahead(seed: u64) -> Option<usize> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    rng.bool().then(|| rng.usize(1..=64))
}

#[test]
fn every_task_settles_once_as_its_behaviour_allows_and_never_runs_after_shard_0() {
    run_cases(CASES, 0, one_case);
}

#[test]
fn every_task_settles_once_as_its_behaviour_allows_and_never_runs_after_shard_1() {
    run_cases(CASES, 1, one_case);
}

#[test]
fn every_task_settles_once_as_its_behaviour_allows_and_never_runs_after_shard_2() {
    run_cases(CASES, 2, one_case);
}

#[test]
fn every_task_settles_once_as_its_behaviour_allows_and_never_runs_after_shard_3() {
    run_cases(CASES, 3, one_case);
}

/// One random configuration, as the generator drew it.
#[derive(Debug, Clone, Copy)]
struct Shape {
    workers: usize,
    concurrency: u32,
    prefetch: u32,
    /// `queue_shards`: 1–3 when `prefetch` is above 0 (lanes then take from
    /// shards other than their own).
    shards: usize,
    max_retries: u32,
    recycle_after: Option<u64>,
    /// `max_queue_len`, when the case makes it small enough for `try_submit` to
    /// be refused.
    queue_len: Option<usize>,
    /// `shutdown_timeout`: sometimes short enough to cut running tasks off.
    shutdown_timeout: Duration,
    /// Whether the workers say they batch replies (`ready.batches_replies`).
    batched_replies: bool,
    /// `prefetch_bytes`: 1 or 3 (a payload here is 1–5 bytes, so one or a few
    /// tasks wait in a window), or the default.
    prefetch_bytes: usize,
}

impl Shape {
    fn draw(rng: &mut fastrand::Rng) -> Self {
        let prefetch = rng.u32(0..=3);
        Self {
            workers: rng.usize(1..=3),
            concurrency: rng.u32(1..=2),
            prefetch,
            shards: if prefetch > 0 { rng.usize(1..=3) } else { 1 },
            max_retries: rng.u32(0..=2),
            recycle_after: rng.bool().then(|| rng.u64(2..8)),
            queue_len: rng.bool().then(|| rng.usize(1..6)),
            shutdown_timeout: Duration::from_millis([1, 50, 1000][rng.usize(0..3)]),
            batched_replies: rng.bool(),
            prefetch_bytes: [1, 3, PoolConfig::default().prefetch_bytes][rng.usize(0..3)],
        }
    }

    fn config(self) -> PoolConfig {
        PoolConfig {
            worker_concurrency: self.concurrency,
            prefetch: self.prefetch,
            prefetch_bytes: self.prefetch_bytes,
            queue_shards: self.shards,
            task_timeout: TASK_TIMEOUT,
            cancel_grace: Duration::from_millis(100),
            kill_grace: Duration::from_millis(100),
            shutdown_timeout: self.shutdown_timeout,
            heartbeat_interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(5),
            zombie_after: Duration::from_secs(10),
            max_tasks_per_worker: self.recycle_after,
            retry: RetryPolicy::new(
                self.max_retries,
                Duration::from_millis(5),
                Duration::from_millis(50),
                false,
            )
            .expect("a valid retry policy"),
            restart_backoff_base: Duration::from_millis(5),
            restart_backoff_cap: Duration::from_millis(50),
            max_workers: 4,
            max_queue_len: self.queue_len.unwrap_or(100_000),
            ..common::config(self.workers)
        }
    }
}

/// One task of a case, as the generator planned it.
#[derive(Debug, Clone, Copy)]
struct Plan {
    kind: Kind,
    /// Its retries: its own `max_retries` when it set one, else the pool's.
    max_retries: u32,
    /// Its per-attempt timeout: its own when it set one, else the pool's.
    timeout: Duration,
    /// Whether the pool took it (a refused one must never start).
    accepted: bool,
}

/// One task of a case, as the test submitted it.
struct Submitted {
    plan: Plan,
    cancel: Option<oneshot::Sender<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

async fn one_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let shape = Shape::draw(&mut rng);
    let log = Log::default();
    let (pool, recorder) = if shape.batched_replies {
        common::start_batched(shape.config(), script(log.clone())).await
    } else {
        common::start(shape.config(), script(log.clone())).await
    };
    let _ = log.runs.set(recorder.clone());
    let tracer = trace(&pool);
    let shared = Shared::start(&log);
    let mut tasks: Vec<Submitted> = Vec::new();
    let mut shutdown: Option<tokio::task::JoinHandle<()>> = None;
    let mut stopped_now: Option<tokio::task::JoinHandle<()>> = None;
    for _ in 0..rng.usize(5..40) {
        match rng.u8(0..100) {
            0..=54 => {
                let kind = Kind::DRAW[rng.usize(0..Kind::DRAW.len())];
                let n = u32::try_from(tasks.len()).expect("few tasks");
                let mut task = Task::msgpack(kind.name(), &n)
                    .expect("a u32 encodes")
                    .with_priority(rng.u8(0..=100));
                let mut plan = Plan {
                    kind,
                    max_retries: shape.max_retries,
                    timeout: TASK_TIMEOUT,
                    accepted: true,
                };
                if rng.u8(0..4) == 0 {
                    plan.max_retries = rng.u32(0..=2);
                    task = task.with_max_retries(plan.max_retries);
                }
                if rng.u8(0..4) == 0 {
                    // Around a slow task's 30 ms: a timeout racing its reply.
                    plan.timeout = Duration::from_millis([10, 20, 30, 40, 60][rng.usize(0..5)]);
                    task = task.with_timeout(plan.timeout);
                }
                let submitted = match rng.u8(0..3) {
                    0 => pool.try_submit(task).map(Answered::Handle),
                    1 => pool.submit(task).await.map(Answered::Handle),
                    _ => {
                        first(pool.submit_each_to([task], &shared.sink).await).map(Answered::Shared)
                    }
                };
                let (cancel, watcher) = match submitted {
                    Ok(Answered::Handle(handle)) => {
                        let (cancel, watcher) = watch(&log, n, handle);
                        (Some(cancel), Some(watcher))
                    }
                    Ok(Answered::Shared(id)) => {
                        let (cancel, watcher) = shared.watch(&pool, n, id);
                        (Some(cancel), Some(watcher))
                    }
                    Err(e) => {
                        let full = matches!(e, SubmitError::QueueFull(_));
                        assert!(
                            shutdown.is_some() || (full && shape.queue_len.is_some()),
                            "model seed {seed}: settles: a submit was refused before \
                             shutdown: {e}; rerun with MODEL_SEED={seed}"
                        );
                        let back: Option<u32> = rmp_serde::from_slice(&e.into_task().payload).ok();
                        assert_eq!(
                            back,
                            Some(n),
                            "model seed {seed}: a refused task comes back"
                        );
                        plan.accepted = false;
                        (None, None)
                    }
                };
                tasks.push(Submitted {
                    plan,
                    cancel,
                    watcher,
                });
            }
            55..=64 => {
                if !tasks.is_empty() {
                    let i = rng.usize(0..tasks.len());
                    if let Some(cancel) = tasks[i].cancel.take() {
                        let n = u32::try_from(i).expect("few tasks");
                        log.push(Seen::CancelAsked(n));
                        let _ = cancel.send(());
                    }
                }
            }
            65..=69 => {
                let _ = pool.scale_to(rng.usize(1..=4)).await;
            }
            70..=72 => {
                let _ = pool.roll_workers(None).await;
            }
            73..=74 if shutdown.is_none() => {
                log.push(Seen::ShutdownAsked);
                let pool = pool.clone();
                // A third of the stops are at once (`shutdown_now`).
                shutdown = Some(if rng.usize(0..3) == 0 {
                    tokio::spawn(async move { pool.shutdown_now().await })
                } else {
                    tokio::spawn(async move { pool.shutdown().await })
                });
            }
            75 if shutdown.is_some() && stopped_now.is_none() => {
                // A second stop signal during a graceful shutdown.
                let pool = pool.clone();
                stopped_now = Some(tokio::spawn(async move { pool.shutdown_now().await }));
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.u64(1..80))).await,
        }
    }
    let plans: Vec<Plan> = tasks.iter().map(|t| t.plan).collect();
    for watcher in tasks.into_iter().filter_map(|t| t.watcher) {
        watcher.await.expect("a watcher does not panic");
    }
    for stop in [shutdown, stopped_now].into_iter().flatten() {
        stop.await.expect("shutdown does not panic");
    }
    pool.shutdown().await;
    shared.stop();
    let replies = recorder.replies_by_worker();
    let killed = killed(&recorder, &log.snapshot());
    if let Some(tracer) = tracer {
        tracer.abort();
        for seen in log.snapshot() {
            eprintln!("{seen:?}");
        }
    }
    check(
        seed,
        shape,
        &plans,
        &log.snapshot(),
        &Answers {
            replies: &replies,
            killed: &killed,
        },
        &pool,
    );
}

/// With `MODEL_TRACE` set, prints the pool's events as they come (the log
/// follows at the end of the case), to see why a seed fails.
fn trace(pool: &Pool) -> Option<tokio::task::JoinHandle<()>> {
    std::env::var_os("MODEL_TRACE")?;
    let mut events = pool.events();
    Some(tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            eprintln!("{:?} {event:?}", Instant::now());
        }
    }))
}

/// How the caller hears of an accepted task's outcome.
enum Answered {
    /// Through its own handle (`submit`, `try_submit`).
    Handle(pool_core::TaskHandle),
    /// Through the case's shared `Completions` channel (`submit_each_to`): its id.
    Shared(u64),
}

/// The one result of a one-task `submit_each_to`.
fn first(mut results: Vec<Result<u64, SubmitError>>) -> Result<u64, SubmitError> {
    assert_eq!(results.len(), 1, "one result per task");
    results.remove(0)
}

/// The case's `Completions` channel and the task that logs each outcome arriving
/// on it the moment it arrives, as `watch` does for a handle.
struct Shared {
    sink: pool_core::CompletionSink,
    log: Log,
    book: Arc<Mutex<SharedBook>>,
    router: tokio::task::JoinHandle<()>,
}

/// Which test task each pool id is, and who waits for it.
#[derive(Default)]
struct SharedBook {
    /// Test task number by pool id, kept after the outcome (a second outcome
    /// for an id is logged too, and fails the case as "resolved twice").
    numbers: std::collections::HashMap<u64, u32>,
    /// Each waiting task's watcher, told when its outcome is logged.
    waiters: std::collections::HashMap<u64, oneshot::Sender<()>>,
    /// Outcomes that came before their id was known.
    early: Vec<(u64, Outcome)>,
}

impl SharedBook {
    /// Logs `outcome` of pool task `id` if the id is known (else keeps it).
    fn settle(&mut self, log: &Log, id: u64, outcome: Outcome) {
        let Some(&n) = self.numbers.get(&id) else {
            self.early.push((id, outcome));
            return;
        };
        log.settled(n, outcome);
        if let Some(waiter) = self.waiters.remove(&id) {
            let _ = waiter.send(());
        }
    }
}

impl Shared {
    fn start(log: &Log) -> Self {
        let mut done = pool_core::Completions::new();
        let sink = done.sink();
        let book = Arc::new(Mutex::new(SharedBook::default()));
        let router = tokio::spawn({
            let (book, log) = (book.clone(), log.clone());
            async move {
                let mut outcomes = Vec::new();
                loop {
                    done.recv_many(&mut outcomes, 64).await;
                    let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
                    for outcome in outcomes.drain(..) {
                        let id = match &outcome {
                            Ok(out) => out.id,
                            Err(err) => err.id,
                        };
                        book.settle(&log, id, outcome);
                    }
                }
            }
        });
        Self {
            sink,
            log: log.clone(),
            book,
            router,
        }
    }

    /// Registers task `n` (pool id `id`) and waits for its outcome to be logged;
    /// sending on the returned trigger cancels it by id.
    fn watch(
        &self,
        pool: &Pool,
        n: u32,
        id: u64,
    ) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let (told, mut logged) = oneshot::channel::<()>();
        {
            let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            book.numbers.insert(id, n);
            book.waiters.insert(id, told);
            for (early, outcome) in std::mem::take(&mut book.early) {
                book.settle(&self.log, early, outcome);
            }
        }
        let (cancel, mut cancelled) = oneshot::channel::<()>();
        let pool = pool.clone();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = &mut logged => return,
                Ok(()) = &mut cancelled => pool.cancel(id),
            }
            let _ = logged.await;
        });
        (cancel, watcher)
    }

    fn stop(self) {
        self.router.abort();
    }
}

/// Awaits a handle and logs its outcome the moment it resolves; sending on the
/// returned trigger cancels the task.
fn watch(
    log: &Log,
    n: u32,
    mut handle: pool_core::TaskHandle,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let log = log.clone();
    let (cancel, mut cancelled) = oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = &mut handle => outcome,
            Ok(()) = &mut cancelled => {
                handle.cancel();
                handle.await
            }
        };
        log.settled(n, outcome);
    });
    (cancel, watcher)
}

/// What the test knew about a task when its handle resolved.
#[derive(Debug, Clone, Copy)]
struct Context {
    kind: Kind,
    max_retries: u32,
    /// Its per-attempt timeout.
    timeout: Duration,
    /// The worker ran more than one task at once, so a neighbour's crash can take
    /// an attempt from this task.
    shared_worker: bool,
    /// The test had asked for its cancellation.
    cancel_asked: bool,
    /// The test had called `shutdown`.
    shutdown_asked: bool,
}

/// Whether `outcome` is one the pool promises for a task in `cx`:
/// - a task that echoes (at once, or after failing its first attempt with a
///   retryable error or a crash, when a retry is left) ends with its own payload,
///   in at most `max_retries + 1` attempts; a slow one whose timeout is shorter
///   than its run time times out like one that hangs;
/// - a non-retryable error fails it after 1 attempt (or a later one when a
///   neighbour's crash took the earlier ones); retryable errors, crashes and
///   timeouts on every attempt dead-letter it after `max_retries + 1` attempts with
///   that failure;
/// - a neighbour's crash on a worker running two tasks at once costs an attempt, so
///   any task may end dead-lettered as `worker_crashed` (or `protocol`, when the
///   neighbour wrote garbage) after `max_retries + 1`;
/// - a task the caller cancelled may end `cancelled` (or as above, if it finished
///   first);
/// - once shutdown was asked, a task may fail with "shutting down", or with the
///   failure of an attempt that would otherwise have been retried.
fn allowed(n: u32, n_payload: Option<u32>, outcome: &Outcome, cx: Context) -> Result<(), String> {
    let last = cx.max_retries + 1;
    let retried = cx.max_retries >= 1;
    // A slow task's attempts all time out under a shorter timeout, none under a
    // longer one; at exactly its run time either may win.
    let (slow_may_succeed, slow_may_time_out) = match cx.timeout.cmp(&SLOW) {
        std::cmp::Ordering::Less => (false, true),
        std::cmp::Ordering::Equal => (true, true),
        std::cmp::Ordering::Greater => (true, false),
    };
    match outcome {
        Ok(out) => {
            let may_succeed = match cx.kind {
                Kind::Ok => true,
                Kind::Slow => slow_may_succeed,
                Kind::ErrOnce | Kind::CrashOnce => retried && out.attempts >= 2,
                _ => false,
            };
            if !may_succeed {
                return Err(format!("a {:?} task succeeded", cx.kind));
            }
            if n_payload != Some(n) {
                return Err(format!("result {n_payload:?} is not its payload {n}"));
            }
            if !(1..=last).contains(&out.attempts) {
                return Err(format!("succeeded after {} attempts", out.attempts));
            }
            Ok(())
        }
        Err(e) => {
            let handler = matches!(&e.failure, Failure::Handler { kind, .. } if kind == "handler");
            let crashed = matches!(e.failure, Failure::WorkerDied { .. });
            let timed_out = matches!(e.failure, Failure::TimedOut { .. });
            let protocol = matches!(e.failure, Failure::Protocol { .. });
            // What a neighbour that kills the worker costs this task.
            let by_neighbour = cx.shared_worker && (crashed || protocol);
            // The failure an attempt of this kind ends with, when it fails.
            let own = match cx.kind {
                Kind::ErrOnce | Kind::ErrAlways | Kind::Fatal => handler,
                Kind::CrashOnce | Kind::Crash => crashed,
                Kind::Hang | Kind::UntilCancelled | Kind::ExitOnCancel | Kind::Stubborn => {
                    timed_out
                }
                Kind::Garbage => protocol,
                Kind::Slow => slow_may_time_out && timed_out,
                Kind::Ok => false,
            };
            let attempt_failure = own || by_neighbour;
            let ok = match e.status {
                FinalStatus::Cancelled => cx.cancel_asked && e.failure == Failure::Cancelled,
                FinalStatus::Failed if cx.shutdown_asked && e.failure == Failure::ShuttingDown => {
                    true
                }
                FinalStatus::Failed if cx.shutdown_asked => {
                    attempt_failure && (1..=last).contains(&e.attempts)
                }
                FinalStatus::Failed => {
                    let first = if cx.shared_worker { last } else { 1 };
                    cx.kind == Kind::Fatal && handler && (1..=first).contains(&e.attempts)
                }
                FinalStatus::DeadLettered => {
                    let always_fails = match cx.kind {
                        Kind::ErrOnce | Kind::CrashOnce => !retried,
                        Kind::Slow => slow_may_time_out,
                        Kind::Ok | Kind::Fatal => false,
                        _ => true,
                    };
                    ((always_fails && own) || by_neighbour) && e.attempts == last
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{e} ({:?}, {} attempts)", e.status, e.attempts))
            }
        }
    }
}

fn check(
    seed: u64,
    shape: Shape,
    plans: &[Plan],
    log: &[Seen],
    answers: &Answers<'_>,
    pool: &Pool,
) {
    let fail = |what: &str, message: String| -> ! {
        panic!("model seed {seed}: {what}: {message}\n{shape:?}\nrerun with MODEL_SEED={seed}")
    };
    let count = plans.len();
    let mut cancel_asked = vec![false; count];
    let mut shutdown_asked = false;
    let mut settled: Vec<Option<&Outcome>> = vec![None; count];
    // Per task: the attempt of its latest start, and whether it was answered.
    let mut last_start: Vec<Option<(u32, bool)>> = vec![None; count];
    let answered = answered(shape, plans, log, answers);
    for seen in log {
        match seen {
            Seen::CancelAsked(n) => cancel_asked[*n as usize] = true,
            Seen::ShutdownAsked => shutdown_asked = true,
            Seen::Started {
                n,
                id,
                attempt,
                worker,
                ..
            } => {
                let i = *n as usize;
                if i >= count {
                    fail(
                        "attempts",
                        format!("a task the test never submitted ({n}) started"),
                    );
                }
                if !plans[i].accepted {
                    fail("refused", format!("task {n} started though it was refused"));
                }
                if settled[i].is_some() {
                    fail(
                        "no start after settle",
                        format!("task {n} attempt {attempt} started after its handle resolved"),
                    );
                }
                // On a worker running two tasks at once, a neighbour's crash can
                // charge an attempt that had not reached the worker yet.
                let max_retries = plans[i].max_retries;
                let skip = if shape.concurrency > 1 {
                    max_retries
                } else {
                    0
                };
                let expected = match last_start[i] {
                    None => 1..=1 + skip,
                    Some((prev, true)) => prev + 1..=prev + 1 + skip,
                    Some((prev, false)) => prev..=prev + 1 + skip,
                };
                if !expected.contains(attempt) || *attempt > max_retries + 1 {
                    fail(
                        "attempts",
                        format!(
                            "task {n} ({:?}) started attempt {attempt} on {worker}; its \
                             previous start (attempt, answered): {:?}",
                            plans[i].kind, last_start[i]
                        ),
                    );
                }
                let key = (*id, *attempt, worker.as_str());
                last_start[i] = Some((*attempt, answered.contains(&key)));
            }
            Seen::Settled {
                n,
                outcome,
                still_running,
            } => {
                let outcome: &Outcome = outcome;
                let i = *n as usize;
                if settled[i].replace(outcome).is_some() {
                    fail("settles", format!("task {n} resolved twice"));
                }
                if *still_running {
                    fail(
                        "told while running",
                        format!("task {n} resolved ({outcome:?}) while a live worker still ran it"),
                    );
                }
                let payload = outcome
                    .as_ref()
                    .ok()
                    .and_then(|out| out.decode::<u32>().ok());
                let cx = Context {
                    kind: plans[i].kind,
                    max_retries: plans[i].max_retries,
                    timeout: plans[i].timeout,
                    shared_worker: shape.concurrency > 1,
                    cancel_asked: cancel_asked[i],
                    shutdown_asked,
                };
                if let Err(message) = allowed(*n, payload, outcome, cx) {
                    fail("outcome", format!("task {n} ({cx:?}): {message}"));
                }
            }
            Seen::Submitted { .. } => {}
        }
    }
    let mut by_status = [0u64; 4];
    let accepted = plans.iter().filter(|p| p.accepted).count();
    for (n, outcome) in settled.iter().enumerate() {
        if !plans[n].accepted {
            continue;
        }
        let Some(outcome) = outcome else {
            fail("settles", format!("task {n} never resolved"));
        };
        let slot = match outcome {
            Ok(_) => 0,
            Err(e) if e.status == FinalStatus::DeadLettered => 1,
            Err(e) if e.status == FinalStatus::Cancelled => 2,
            Err(_) => 3,
        };
        by_status[slot] += 1;
    }
    let t = pool.metrics().tasks;
    let counted = [t.completed, t.dead_lettered, t.cancelled, t.failed];
    if (t.submitted, t.queued, t.in_flight, counted) != (accepted as u64, 0, 0, by_status) {
        fail(
            "settles",
            format!(
                "the handles said [completed, dead-lettered, cancelled, failed] = \
                 {by_status:?} of {accepted}, the pool counts {t:?}"
            ),
        );
    }
}

/// What the mock workers answered, and which of them the pool killed.
struct Answers<'a> {
    /// `(task id, attempt, worker)` of every reply, in order.
    replies: &'a [(u64, u32, String)],
    /// The workers that got a SIGKILL.
    killed: &'a std::collections::HashSet<String>,
}

/// The workers that got a SIGKILL from the pool.
fn killed(recorder: &MockRecorder, log: &[Seen]) -> std::collections::HashSet<String> {
    log.iter()
        .filter_map(|seen| match seen {
            Seen::Started { worker, .. } => Some(worker.clone()),
            _ => None,
        })
        .filter(|worker| {
            recorder
                .received(worker)
                .iter()
                .any(|(_, what)| *what == MockReceived::Signal(GroupSignal::Kill))
        })
        .collect()
}

/// The starts `(task id, attempt, worker)` whose answer surely reached the pool:
/// every reply, except a [`Kind::Garbage`] task's and those its worker wrote after
/// it (the pool reads nothing past a frame that breaks the protocol), and those of
/// a worker the pool killed (one killed for a timeout at the instant it answered,
/// and started the next task of its window, is not heard: that task goes back to
/// the queue as one that never started). When workers batch replies or run
/// several tasks at once, also none of a worker that died on its own (a
/// crash, an exit on cancel): a reply written as a task beside it crashed the
/// process may die with it, and the task runs again uncharged.
fn answered<'a>(
    shape: Shape,
    plans: &[Plan],
    log: &[Seen],
    answers: &Answers<'a>,
) -> std::collections::HashSet<(u64, u32, &'a str)> {
    let died: std::collections::HashSet<&str> = log
        .iter()
        .filter_map(|seen| match seen {
            Seen::Started {
                n, attempt, worker, ..
            } if shape.batched_replies || shape.concurrency > 1 => {
                let kind = plans.get(*n as usize)?.kind;
                matches!(
                    kind.action(*attempt),
                    MockAction::Crash(_) | MockAction::ExitOnCancel
                )
                .then_some(worker.as_str())
            }
            _ => None,
        })
        .collect();
    let garbage: std::collections::HashSet<u64> = log
        .iter()
        .filter_map(|seen| match seen {
            Seen::Started { n, id, .. }
                if plans.get(*n as usize).map(|p| p.kind) == Some(Kind::Garbage) =>
            {
                Some(*id)
            }
            _ => None,
        })
        .collect();
    let mut garbled = std::collections::HashSet::new();
    let mut answered = std::collections::HashSet::new();
    for (id, attempt, worker) in answers.replies {
        if garbage.contains(id) {
            garbled.insert(worker.as_str());
        }
        if !garbled.contains(worker.as_str())
            && !answers.killed.contains(worker)
            && !died.contains(worker.as_str())
        {
            answered.insert((*id, *attempt, worker.as_str()));
        }
    }
    answered
}

#[test]
fn with_prefetch_zero_tasks_start_in_priority_order_shard_0() {
    run_cases(PRIORITY_CASES, 0, priority_case);
}

#[test]
fn with_prefetch_zero_tasks_start_in_priority_order_shard_1() {
    run_cases(PRIORITY_CASES, 1, priority_case);
}

#[test]
fn with_prefetch_zero_tasks_start_in_priority_order_shard_2() {
    run_cases(PRIORITY_CASES, 2, priority_case);
}

#[test]
fn with_prefetch_zero_tasks_start_in_priority_order_shard_3() {
    run_cases(PRIORITY_CASES, 3, priority_case);
}

/// Bursts of tasks with random priorities, some slow enough to keep the workers
/// busy while the next burst queues. Half the cases have one worker running one
/// task at a time; the rest 1–3 workers running 1–2 each (with `prefetch: 0` a
/// worker is handed a task only for a free run slot, so order holds for them too).
async fn priority_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (workers, concurrency) = if rng.bool() {
        (1, 1)
    } else {
        (rng.usize(1..=3), rng.u32(1..=2))
    };
    let config = PoolConfig {
        prefetch: 0,
        worker_concurrency: concurrency,
        ..common::config(workers)
    };
    let log = Log::default();
    let (pool, _) = common::start(config, script(log.clone())).await;
    let mut handles = Vec::new();
    for _ in 0..rng.usize(1..6) {
        for _ in 0..rng.usize(1..12) {
            let n = u32::try_from(handles.len()).expect("few tasks");
            let kind = if rng.bool() { Kind::Slow } else { Kind::Ok };
            let priority = rng.u8(0..=100);
            let task = Task::msgpack(kind.name(), &n)
                .expect("encodes")
                .with_priority(priority);
            handles.push(pool.submit(task).await.expect("accepted"));
            log.push(Seen::Submitted {
                n,
                priority,
                at: Instant::now(),
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..100))).await;
    }
    for (n, handle) in handles.into_iter().enumerate() {
        if let Err(e) = handle.await {
            panic!("model seed {seed}: priority: task {n} failed: {e}");
        }
    }
    pool.shutdown().await;
    check_priority(seed, &log.snapshot());
}

/// Every start must come after each better task submitted strictly earlier on
/// tokio's clock (by then the pool had queued it: paused time advances only when
/// every task is idle).
fn check_priority(seed: u64, log: &[Seen]) {
    let submitted: Vec<(u8, u32, Instant)> = log
        .iter()
        .filter_map(|seen| match *seen {
            Seen::Submitted { n, priority, at } => Some((priority, n, at)),
            _ => None,
        })
        .collect();
    let mut started = vec![false; submitted.len()];
    for seen in log {
        let Seen::Started { n, at, .. } = *seen else {
            continue;
        };
        let Some(&(priority, _, _)) = submitted.iter().find(|s| s.1 == n) else {
            panic!("model seed {seed}: priority: task {n} started but was never accepted");
        };
        if std::mem::replace(&mut started[n as usize], true) {
            panic!("model seed {seed}: priority: task {n} started twice");
        }
        let better = submitted
            .iter()
            .filter(|s| !started[s.1 as usize] && s.2 < at && (s.0, s.1) < (priority, n))
            .min();
        if let Some(better) = better {
            panic!(
                "model seed {seed}: priority: task {n} (priority {priority}) started before \
                 task {} (priority {}), queued earlier; rerun with MODEL_SEED={seed}",
                better.1, better.0
            );
        }
    }
}

/// Found by the model (seed 0): a worker retiring after `max_tasks_per_worker`
/// that is killed because a task ran past its timeout must fail that task as
/// timed out, and give its bystander back to the queue without charging it an
/// attempt, as on any other worker: the kill's cause replaces the retirement's.
#[tokio::test(start_paused = true)]
async fn a_task_timing_out_on_a_retiring_worker_fails_as_timed_out() {
    let config = PoolConfig {
        max_tasks_per_worker: Some(2),
        worker_concurrency: 2,
        task_timeout: TASK_TIMEOUT,
        retry: RetryPolicy::new(0, Duration::from_millis(5), Duration::from_millis(5), false)
            .expect("a valid retry policy"),
        ..common::config(1)
    };
    let (pool, _) = common::start(config, |t| {
        Kind::from_name(&t.task_type).map_or(MockAction::Echo, |k| k.action(t.attempt))
    })
    .await;
    let hang = pool
        .submit(common::task(Kind::Hang.name(), 0))
        .await
        .expect("accepted");
    let slow = pool
        .submit(common::task(Kind::Slow.name(), 1).with_timeout(Duration::from_secs(10)))
        .await
        .expect("accepted");
    let (hang, slow) = (hang.await, slow.await);
    pool.shutdown().await;
    let Err(e) = hang else {
        panic!("a hanging task succeeded");
    };
    assert_eq!(
        (e.status, e.failure.kind(), e.attempts),
        (FinalStatus::DeadLettered, "timeout", 1),
        "the task that timed out: {e}"
    );
    let out = slow.expect("the bystander runs again on the replacement");
    assert_eq!((out.attempts, out.decode::<u32>().ok()), (1, Some(1)));
}
