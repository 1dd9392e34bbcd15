//! [`Pool`]: the cloneable handle callers use, and [`PoolBuilder`].

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::actor::{self, ActorParts, Command, EventChannels, Pending, Shared};
use super::alerts::Alert;
use super::completions::CompletionSink;
use super::config::PoolConfig;
use super::dispatch::settle_failed;
use super::events::PoolEvent;
use super::failure::Failure;
use super::handle::{FinalStatus, TaskHandle};
use super::ledger::{Answer, SharedAnswer};
use super::metrics::{HealthSummary, PoolMetrics, WorkerStatus};
use super::panic_message::panic_message;
use super::reserve::Reserve;
use crate::balance::{BalancePolicy, FirstAvailable};
use crate::error::{ConfigError, StartError, SubmitError};
use crate::health::{HealthProbe, HeartbeatProbe, LifetimeProbe, MaxTasksProbe, MemoryProbe};
use crate::queue::DeadLetter;
use crate::task::{Task, PRIORITY_LOWEST};
use crate::transport::Transport;

/// The tasks of a batch ([`Pool::submit_many`], [`Pool::submit_each`]) are
/// queued this many at a time, each group under one lock of the queue: the
/// workers start on the first group while the caller prepares the rest, and
/// a lane waiting to refill its worker waits for one group at most.
const SUBMIT_CHUNK: usize = 256;

/// The worker program every worker of a pool runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
}

impl WorkerCommand {
    /// Runs `program` with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Configures and starts a [`Pool`].
pub struct PoolBuilder {
    transport: Arc<dyn Transport>,
    command: WorkerCommand,
    config: PoolConfig,
    policy: Box<dyn BalancePolicy>,
    probes: Vec<Box<dyn HealthProbe>>,
    events: EventChannels,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("transport", &self.transport.name())
            .field("command", &self.command)
            .field("config", &self.config)
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

impl PoolBuilder {
    /// Sets the configuration (default: [`PoolConfig::default`]).
    pub fn config(mut self, config: PoolConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the balance policy (default: the first worker with free capacity).
    pub fn policy(mut self, policy: impl BalancePolicy) -> Self {
        self.policy = Box::new(policy);
        self
    }

    /// Sets a boxed balance policy (for policies chosen at run time).
    pub fn boxed_policy(mut self, policy: Box<dyn BalancePolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Adds a health probe. The heartbeat probe built from the configuration's
    /// `suspect_after`/`zombie_after` is always present, and the memory and
    /// task-count probes when `max_rss_bytes`, `kill_rss_bytes` or
    /// `max_tasks_per_worker` are set.
    pub fn probe(mut self, probe: impl HealthProbe) -> Self {
        self.probes.push(Box::new(probe));
        self
    }

    /// Subscribes to the pool's events before it starts, so start-up events
    /// (`worker-spawned`, `worker-ready`) are seen too. Call after
    /// [`config`](Self::config): the buffer is `event_capacity` events.
    pub fn subscribe(&mut self) -> broadcast::Receiver<PoolEvent> {
        let capacity = self.config.event_capacity.max(1);
        self.events
            .all
            .get_or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe()
    }

    /// Like [`subscribe`](Self::subscribe), to the notable events only (see
    /// [`Pool::notable_events`]).
    pub fn subscribe_notable(&mut self) -> broadcast::Receiver<PoolEvent> {
        let capacity = self.config.event_capacity.max(1);
        self.events
            .notable
            .get_or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe()
    }

    /// Validates the configuration, starts the workers and waits until every one
    /// has completed its handshake.
    ///
    /// # Errors
    /// [`StartError::Config`] for an invalid configuration; [`StartError::Worker`]
    /// when a worker cannot be launched or fails its handshake, with its exit status
    /// and stderr tail. Then every worker already started is stopped and reaped, and
    /// none is respawned.
    pub async fn start(self) -> Result<Pool, StartError> {
        self.config.validate()?;
        let mut probes: Vec<Box<dyn HealthProbe>> = vec![Box::new(HeartbeatProbe::new(
            self.config.suspect_after,
            self.config.zombie_after,
        ))];
        if self.config.max_rss_bytes.is_some() || self.config.kill_rss_bytes.is_some() {
            probes.push(Box::new(MemoryProbe::new(
                self.config.max_rss_bytes,
                self.config.kill_rss_bytes,
            )));
        }
        if let Some(age) = self.config.max_worker_age {
            probes.push(Box::new(LifetimeProbe::new(age)));
        }
        if let Some(max) = self.config.max_tasks_per_worker {
            probes.push(Box::new(MaxTasksProbe::new(max, max / 10)));
        }
        probes.extend(self.probes);
        // A probe that judges a worker after each completion: the actor hands
        // out every task (it judges first), callers hand off none.
        let judges_completions = probes.iter().any(|p| p.wants_completions());
        let shared = Arc::new(Shared::new(
            &self.config,
            self.events,
            self.policy,
            judges_completions,
        ));
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (start_tx, start_rx) = oneshot::channel();
        let parts = ActorParts {
            config: self.config,
            transport: self.transport,
            command: self.command,
            probes,
            shared: shared.clone(),
        };
        let actor = tokio::spawn(actor::run(parts, commands_rx, start_tx));
        let (stopped_tx, stopped) = watch::channel(());
        let watcher = tokio::spawn(watch_actor(actor, shared.clone(), stopped_tx));
        let pool = Pool {
            commands: Arc::new(commands_tx),
            shared,
            stopped,
        };
        match start_rx.await {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => {
                drop(pool);
                let _ = watcher.await;
                Err(e)
            }
            Err(_) => {
                let _ = watcher.await;
                let reason = pool.failure().unwrap_or_default();
                Err(StartError::Config(ConfigError::new(
                    "pool",
                    format!("the pool's actor ended during start-up: {reason}"),
                )))
            }
        }
    }
}

/// A pool of long-lived worker processes. Cheap to clone; every clone talks to the
/// same pool. When the last clone is dropped the pool shuts down gracefully.
///
/// # Examples
/// A pool of two workers (in-process mock workers here; a real program passes a
/// transport such as `transport_ipc::StdioTransport` and its worker binary):
/// ```
/// use pool_core::testing::{MockAction, MockTransport};
/// use pool_core::{Pool, PoolConfig, Task, WorkerCommand};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (transport, _recorder) = MockTransport::new(|_task| MockAction::Echo);
/// let pool = Pool::builder(transport, WorkerCommand::new("my-worker"))
///     .config(PoolConfig { pool_size: 2, min_workers: 1, ..PoolConfig::default() })
///     .start()
///     .await?;
/// let handle = pool.submit(Task::msgpack("echo", "hello")?).await?;
/// let output = handle.await?;
/// assert_eq!(output.decode::<String>()?, "hello");
/// pool.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Pool {
    /// The actor's channel; this clone's own, shared by the task handles it
    /// makes (see [`Clone`](#impl-Clone-for-Pool)).
    commands: Arc<mpsc::UnboundedSender<Command>>,
    shared: Arc<Shared>,
    /// Closed (nothing is ever sent) once the pool has let go of everything:
    /// see [`Pool::shutdown`].
    stopped: watch::Receiver<()>,
}

impl Clone for Pool {
    /// A handle on the same pool. Each clone holds its own reference to the
    /// actor's channel, which the task handles it makes share: callers on
    /// different threads, each with its clone, then count no handle on one
    /// shared counter.
    fn clone(&self) -> Self {
        Self {
            commands: Arc::new((*self.commands).clone()),
            shared: Arc::clone(&self.shared),
            stopped: self.stopped.clone(),
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// Dead letters taken out to be submitted again: those still here when it is
/// dropped (a refusal, or a caller that stopped waiting for room) go back to
/// the dead-letter queue.
struct Unsubmitted<'a> {
    entries: std::collections::VecDeque<crate::queue::DeadLetter>,
    commands: &'a Arc<mpsc::UnboundedSender<Command>>,
}

impl Drop for Unsubmitted<'_> {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            let entries = self.entries.drain(..).collect();
            let _ = self.commands.send(Command::RestoreDeadLetters(entries));
        }
    }
}

impl Pool {
    /// A builder for a pool whose workers run `command` over `transport`.
    pub fn builder(transport: impl Transport, command: WorkerCommand) -> PoolBuilder {
        Self::builder_arc(Arc::new(transport), command)
    }

    /// Like [`builder`](Self::builder), for a transport chosen at run time.
    pub fn builder_arc(transport: Arc<dyn Transport>, command: WorkerCommand) -> PoolBuilder {
        PoolBuilder {
            transport,
            command,
            config: PoolConfig::default(),
            policy: Box::new(FirstAvailable),
            probes: Vec::new(),
            events: EventChannels::default(),
        }
    }

    /// Submits a task, waiting for room when the queue is full.
    ///
    /// # Errors
    /// [`SubmitError::ShuttingDown`] once shutdown began, [`SubmitError::InvalidPriority`]
    /// for a priority above 100, [`SubmitError::PayloadTooLarge`] for a task whose
    /// frame would exceed `max_frame`. The task is given back either way.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped while waiting for room, the task is not
    /// submitted.
    pub async fn submit(&self, task: Task) -> Result<TaskHandle, SubmitError> {
        let task = self.check(task)?;
        let (unhanded, handle) = self.hand_new(task);
        let Some(pending) = unhanded else {
            return Ok(handle);
        };
        // Room now: taken without building the waiting future.
        match self.shared.queue_slots.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(self.gone(pending.into_refused()))
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let Ok(permit) = self.shared.queue_slots.acquire().await else {
                    return Err(self.gone(pending.into_refused()));
                };
                permit.forget();
            }
        }
        self.send(pending, handle)
    }

    /// Submits a task if the queue has room now.
    ///
    /// # Errors
    /// [`SubmitError::QueueFull`] when `max_queue_len` tasks wait already, plus the
    /// errors of [`submit`](Self::submit).
    pub fn try_submit(&self, task: Task) -> Result<TaskHandle, SubmitError> {
        let task = self.check(task)?;
        let (unhanded, handle) = self.hand_new(task);
        let Some(pending) = unhanded else {
            return Ok(handle);
        };
        match self.shared.queue_slots.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.send(pending, handle)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                Err(SubmitError::QueueFull(pending.into_refused()))
            }
            Err(tokio::sync::TryAcquireError::Closed) => Err(self.gone(pending.into_refused())),
        }
    }

    /// A new task for `task`, handed straight to a worker with a free run
    /// slot while nothing is queued ([`Desk::hand_new`](super::handoff::Desk::hand_new)),
    /// and its handle. The task comes back when no worker took it, for the
    /// caller to queue once it holds a queue slot.
    fn hand_new(&self, task: Task) -> (Option<Pending>, TaskHandle) {
        let id = self.shared.next_task_id.fetch_add(1, Relaxed);
        let (pending, handle) = self.pending(task, id);
        let mut unhanded = Some(pending);
        self.shared.desk.hand_new(&self.shared, &mut unhanded);
        (unhanded, handle)
    }

    /// Submits many tasks, waiting for room as needed. Cheaper per task than
    /// [`submit`](Self::submit) for large batches: they are queued 256 at a
    /// time, each group under one lock of the queue, and the workers start on
    /// the first group while the rest are prepared (so the tasks of a large
    /// batch are ordered by priority within each group, not across the batch).
    ///
    /// Tasks go to the pool as room is found: while the queue is full, those
    /// accepted so far are sent first, so a batch larger than `max_queue_len`
    /// makes progress.
    ///
    /// # Errors
    /// As [`submit`](Self::submit), for the first task refused; tasks before it were
    /// submitted and their handles are dropped (they still run), tasks after it
    /// are not submitted.
    pub async fn submit_many(
        &self,
        tasks: impl IntoIterator<Item = Task>,
    ) -> Result<Vec<TaskHandle>, SubmitError> {
        let tasks = tasks.into_iter();
        let expected = tasks.size_hint().0;
        let mut handles = Vec::with_capacity(expected);
        let mut unsent = Unsent {
            pending: Vec::with_capacity(expected.min(SUBMIT_CHUNK)),
            at: Vec::new(),
        };
        let refused = |refused: Unsent| self.gone(refused.first_task());
        let mut reserve = Reserve::new(&self.shared.queue_slots, &self.shared.next_task_id);
        for (done, task) in tasks.enumerate() {
            let task = match self.check(task) {
                Ok(task) => task,
                Err(error) => {
                    self.send_unsent(&mut unsent).map_err(refused)?;
                    return Err(error);
                }
            };
            let wanted = expected.saturating_sub(done);
            if !self
                .queue_slot(&mut reserve, wanted, &mut unsent)
                .await
                .map_err(refused)?
            {
                // The tasks before this one go first, as the doc says: the
                // pool refuses them (the first is the error) or takes them.
                self.send_unsent(&mut unsent).map_err(refused)?;
                return Err(self.gone(task));
            }
            let (pending, handle) = self.pending(task, reserve.id(wanted));
            unsent.pending.push(pending);
            handles.push(handle);
            if unsent.pending.len() >= SUBMIT_CHUNK {
                self.send_unsent(&mut unsent).map_err(refused)?;
            }
        }
        self.send_unsent(&mut unsent).map_err(refused)?;
        Ok(handles)
    }

    /// Submits many tasks, each accepted or refused on its own, queued in
    /// groups as [`submit_many`](Self::submit_many) queues them: one result per
    /// task, in order. Tasks go to the pool as room is found (while the queue
    /// is full, those accepted so far are sent first, then room is waited for).
    ///
    /// A refused task (its payload too large, its priority out of range, or the
    /// pool shutting down) is given back in its [`SubmitError`]; the others are
    /// unaffected.
    ///
    /// # Cancel safety
    /// Not cancel safe: if the future is dropped while it waits for room, the
    /// tasks sent before are submitted and their handles are dropped (they still
    /// run), and the rest are not submitted.
    pub async fn submit_each(
        &self,
        tasks: impl IntoIterator<Item = Task>,
    ) -> Vec<Result<TaskHandle, SubmitError>> {
        self.submit_each_with(tasks, Self::pending).await
    }

    /// [`submit_each`](Self::submit_each) without a handle per task: each
    /// accepted task's outcome arrives in the [`Completions`](super::Completions)
    /// channel `to` sends to, and its result here is its id (for
    /// [`cancel`](Self::cancel), and to tell the outcomes apart).
    ///
    /// # Cancel safety
    /// As [`submit_each`](Self::submit_each); the outcomes of the tasks sent
    /// still arrive in `to`.
    pub async fn submit_each_to(
        &self,
        tasks: impl IntoIterator<Item = Task>,
        to: &CompletionSink,
    ) -> Vec<Result<u64, SubmitError>> {
        self.submit_each_with(tasks, |_, task, id| {
            (
                Pending::new(id, task, Answer::Shared(SharedAnswer::new(to.inbox(), id))),
                id,
            )
        })
        .await
    }

    /// Asks the pool to cancel task `id` (see [`TaskHandle::cancel`]); for tasks
    /// submitted with [`submit_each_to`](Self::submit_each_to). An id that is
    /// not in the pool (settled, or never submitted) is ignored.
    pub fn cancel(&self, id: u64) {
        let _ = self.commands.send(Command::Cancel(id));
    }

    /// [`submit_each`](Self::submit_each), with what the caller gets for each
    /// accepted task made by `accept`.
    async fn submit_each_with<H>(
        &self,
        tasks: impl IntoIterator<Item = Task>,
        mut accept: impl FnMut(&Self, Task, u64) -> (Pending, H),
    ) -> Vec<Result<H, SubmitError>> {
        let tasks = tasks.into_iter();
        let expected = tasks.size_hint().0;
        let mut results = Vec::with_capacity(expected);
        let mut unsent = Unsent {
            pending: Vec::with_capacity(expected.min(SUBMIT_CHUNK)),
            at: Vec::with_capacity(expected.min(SUBMIT_CHUNK)),
        };
        let mut reserve = Reserve::new(&self.shared.queue_slots, &self.shared.next_task_id);
        for (done, task) in tasks.enumerate() {
            let task = match self.check(task) {
                Ok(task) => task,
                Err(refused) => {
                    results.push(Err(refused));
                    continue;
                }
            };
            let wanted = expected.saturating_sub(done);
            match self.queue_slot(&mut reserve, wanted, &mut unsent).await {
                Ok(true) => {}
                Ok(false) => {
                    results.push(Err(self.gone(task)));
                    continue;
                }
                Err(refused) => {
                    self.refuse(refused, &mut results);
                    results.push(Err(self.gone(task)));
                    continue;
                }
            }
            let (pending, handle) = accept(self, task, reserve.id(wanted));
            unsent.pending.push(pending);
            unsent.at.push(results.len());
            results.push(Ok(handle));
            if unsent.pending.len() >= SUBMIT_CHUNK {
                if let Err(refused) = self.send_unsent(&mut unsent) {
                    self.refuse(refused, &mut results);
                }
            }
        }
        if let Err(refused) = self.send_unsent(&mut unsent) {
            self.refuse(refused, &mut results);
        }
        results
    }

    /// Takes one of the queue's slots for the next of `wanted` tasks: from
    /// `reserve` (refilled a chunk at a time), else one by one, sending the
    /// tasks in `unsent` first when it has to wait for one: `Ok(false)` when
    /// the pool takes no more tasks, `Err` with the tasks of `unsent` when they
    /// could not be sent.
    async fn queue_slot(
        &self,
        reserve: &mut Reserve<'_>,
        wanted: usize,
        unsent: &mut Unsent,
    ) -> Result<bool, Unsent> {
        if reserve.slot(wanted) {
            return Ok(true);
        }
        match self.shared.queue_slots.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(true)
            }
            Err(tokio::sync::TryAcquireError::Closed) => Ok(false),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.send_unsent(unsent)?;
                match self.shared.queue_slots.acquire().await {
                    Ok(permit) => {
                        permit.forget();
                        Ok(true)
                    }
                    Err(_) => Ok(false),
                }
            }
        }
    }

    /// Queues the tasks in `unsent` (emptying it); `Err` with them when the
    /// pool is gone.
    fn send_unsent(&self, unsent: &mut Unsent) -> Result<(), Unsent> {
        if unsent.pending.is_empty() {
            return Ok(());
        }
        if self.queue_directly(|| unsent.pending.drain(..)) {
            unsent.at.clear();
            return Ok(());
        }
        let Unsent { pending, at } = std::mem::take(unsent);
        match self.commands.send(Command::Submit(pending)) {
            Ok(()) => Ok(()),
            Err(refused) => match refused.0 {
                Command::Submit(pending) => Err(Unsent { pending, at }),
                _ => Err(Unsent::default()),
            },
        }
    }

    /// Adds the tasks `take` yields to the shared queue under one lock (counted
    /// as submitted, `TaskQueued` emitted before a lane can take them), then
    /// hands them to idle workers at the desk and rings the actor only for
    /// what the desk left: a submit sends the actor no message.
    /// `false`, with `take` not called, once callers may no longer add tasks
    /// (shutdown began or the actor is gone): the tasks go to the actor, which
    /// refuses them.
    fn queue_directly<I>(&self, take: impl FnOnce() -> I) -> bool
    where
        I: IntoIterator<Item = Pending>,
    {
        let shared = &self.shared;
        {
            let mut waiting = shared.queue.shard(shared.queue.callers_shard());
            if waiting.closed() {
                return false;
            }
            let mut submitted = 0;
            // One clock read for the tasks queued together (the desk reads
            // it again under the book's lock for each attempt it starts).
            let queued_at = shared.clock.now().moment;
            for pending in take() {
                submitted += 1;
                let (id, priority) = (pending.id, pending.task.priority);
                shared.emit_routine(|| PoolEvent::TaskQueued { task: id, priority });
                waiting.push_new(pending, queued_at);
            }
            shared.stats.submitted.fetch_add(submitted, Relaxed);
        }
        if !shared.desk.hand_off(shared) {
            shared.queue.ring();
        }
        true
    }

    /// Turns the results of tasks that could not be sent into their refusals.
    fn refuse<H>(&self, refused: Unsent, results: &mut [Result<H, SubmitError>]) {
        for (index, pending) in refused.at.into_iter().zip(refused.pending) {
            if let Some(result) = results.get_mut(index) {
                *result = Err(self.gone(pending.into_refused()));
            }
        }
    }

    /// The refusal of `task` by a pool that takes no more tasks: failed, or
    /// shutting down.
    fn gone(&self, task: Task) -> SubmitError {
        match self.failure() {
            Some(reason) => SubmitError::Failed { task, reason },
            None => SubmitError::ShuttingDown(task),
        }
    }

    /// `task` as the pool takes it (a timeout above
    /// [`MAX_TIMEOUT`](crate::task::MAX_TIMEOUT) cut by
    /// [`Task::with_timeout`]), or why it refuses it (the task handed back as
    /// it would have been taken).
    fn check(&self, mut task: Task) -> Result<Task, SubmitError> {
        if let Some(timeout) = task.timeout {
            task = task.with_timeout(timeout);
        }
        if self.shared.closed.load(Relaxed) {
            return Err(self.gone(task));
        }
        if task.priority > PRIORITY_LOWEST {
            return Err(SubmitError::InvalidPriority(task));
        }
        let max_frame = self.shared.max_frame;
        let size = task.payload.len() + task.task_type.len();
        if size.saturating_add(crate::error::TASK_FRAME_OVERHEAD) > max_frame {
            return Err(SubmitError::PayloadTooLarge { task, max_frame });
        }
        Ok(task)
    }

    /// A pending record for `task`, which holds one of the queue's slots (taken by
    /// the caller and released by the actor when the task leaves the queue).
    fn pending(&self, task: Task, id: u64) -> (Pending, TaskHandle) {
        let (answer, outcome) = Answer::new();
        let pending = Pending::new(id, task, answer);
        let handle = TaskHandle::new(pending.id, outcome, Arc::clone(&self.commands));
        (pending, handle)
    }

    /// Queues `pending`, which holds a queue slot, and hands it `handle`
    /// back.
    fn send(&self, pending: Pending, handle: TaskHandle) -> Result<TaskHandle, SubmitError> {
        let mut one = Some(pending);
        if self.queue_directly(|| one.take()) {
            return Ok(handle);
        }
        // The queue is closed to callers (`one` still holds the task): the
        // actor answers it.
        let mut unsent = Unsent {
            pending: one.into_iter().collect(),
            at: Vec::new(),
        };
        self.send_unsent(&mut unsent)
            .map_err(|refused| self.gone(refused.first_task()))?;
        Ok(handle)
    }

    /// Why the pool stopped working, when its actor (the task that owns the
    /// pool's state) ended without a shutdown, which only a bug (a panic) does.
    /// Then every submit is refused with [`SubmitError::Failed`], tasks in
    /// flight end as "shutting down", the workers exit as their links close,
    /// and the health status reads `failed` with this reason. `None` while the
    /// pool works, and after a shutdown.
    pub fn failure(&self) -> Option<String> {
        self.shared.stats.failure.get().cloned()
    }

    /// A snapshot of the pool's metrics (atomic loads and a look at the queue under its
    /// lock; eventually consistent).
    pub fn metrics(&self) -> PoolMetrics {
        let queue = self.shared.queue.lock().depth();
        self.shared.stats.snapshot(queue)
    }

    /// How many workers the pool holds now: the `workers.total` of
    /// [`metrics`](Self::metrics) (one atomic load; a snapshot also sums every
    /// lane's counters and summarises the latency histograms).
    pub fn worker_count(&self) -> u64 {
        self.shared
            .stats
            .workers_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The size the pool keeps itself at: its `pool_size` at start, then what
    /// [`scale_to`](Self::scale_to) or the autoscaler set; 0 once it shut
    /// down. The `pool.targetSize` of [`metrics`](Self::metrics), one atomic
    /// load.
    pub fn target_size(&self) -> u64 {
        self.shared
            .stats
            .target_size
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The pool's health summary (a few atomic loads).
    pub fn health(&self) -> HealthSummary {
        self.metrics().health
    }

    /// The alert history (at most 1 000, oldest first; duplicates of an alert
    /// raised in the last minute for the same worker are suppressed).
    pub async fn alerts(&self) -> Vec<Alert> {
        self.ask(Command::Alerts).await.unwrap_or_default()
    }

    /// One worker's state, by name (`worker-N`).
    pub async fn worker(&self, name: &str) -> Option<WorkerStatus> {
        self.workers().await.into_iter().find(|w| w.id == name)
    }

    /// Adds `n` workers to the target size (at most `max_workers`).
    ///
    /// # Errors
    /// When the result would leave `min_workers..=max_workers`.
    pub async fn scale_up(&self, n: usize) -> Result<usize, ConfigError> {
        let target = self.metrics().pool.target_size as usize;
        self.scale_to(target + n).await
    }

    /// Removes `n` workers from the target size (idle ones first; busy ones finish
    /// their tasks).
    ///
    /// # Errors
    /// When the result would leave `min_workers..=max_workers`.
    pub async fn scale_down(&self, n: usize) -> Result<usize, ConfigError> {
        let target = self.metrics().pool.target_size as usize;
        let Some(target) = target.checked_sub(n) else {
            return Err(ConfigError::new(
                "pool_size",
                "cannot scale below zero workers",
            ));
        };
        self.scale_to(target).await
    }

    /// Subscribes to the pool's events from now on.
    pub fn events(&self) -> broadcast::Receiver<PoolEvent> {
        self.shared.events.subscribe()
    }

    /// Subscribes to the pool's notable events from now on: every event but the
    /// routine ones of each task (`task-queued`, `task-assigned`,
    /// `task-completed`), which are then not even built while nobody listens to
    /// [`events`](Self::events). For logs and dashboards of what goes wrong:
    /// failures, retries, dead letters and timeouts of tasks still come.
    pub fn notable_events(&self) -> broadcast::Receiver<PoolEvent> {
        self.shared.notable.subscribe()
    }

    /// Each live worker's state.
    pub async fn workers(&self) -> Vec<WorkerStatus> {
        self.ask(Command::Workers).await.unwrap_or_default()
    }

    /// The dead-letter queue's entries, oldest first.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.ask(Command::DeadLetters).await.unwrap_or_default()
    }

    /// Takes entries out of the dead-letter queue (all of them when `ids` is `None`)
    /// and submits each again as a new task with fresh attempts.
    ///
    /// # Errors
    /// As [`submit`](Self::submit), for the first entry refused; it and the
    /// entries after it go back to the dead-letter queue (so do the entries
    /// not submitted yet when the future is dropped while it waits for room).
    pub async fn retry_dead_letters(
        &self,
        ids: Option<Vec<u64>>,
    ) -> Result<Vec<TaskHandle>, SubmitError> {
        let taken = self
            .ask(|reply| Command::TakeDeadLetters { ids, reply })
            .await
            .unwrap_or_default();
        let mut left = Unsubmitted {
            entries: taken.into(),
            commands: &self.commands,
        };
        let mut handles = Vec::with_capacity(left.entries.len());
        while let Some(entry) = left.entries.front() {
            handles.push(self.submit(entry.task.clone()).await?);
            left.entries.pop_front();
        }
        Ok(handles)
    }

    /// Empties the dead-letter queue; returns how many entries were removed.
    pub async fn clear_dead_letters(&self) -> usize {
        self.ask(Command::ClearDeadLetters).await.unwrap_or(0)
    }

    /// Sets the number of workers the pool keeps. Growing starts workers at once;
    /// shrinking retires idle workers first and lets busy ones finish their tasks.
    ///
    /// # Errors
    /// When `size` is outside `min_workers..=max_workers` or the pool is not running.
    pub async fn scale_to(&self, size: usize) -> Result<usize, ConfigError> {
        self.ask(|reply| Command::Scale {
            target: size,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(ConfigError::new("pool_size", "the pool is not running")))
    }

    /// Replaces every worker, one at a time: each replacement is started and ready
    /// before the worker it replaces is retired (that one finishes its tasks first),
    /// so capacity never dips and no task is dropped. With `command`, replacements
    /// and every later worker run it instead of the pool's current command.
    /// Returns how many workers were replaced, once the last one was retired.
    ///
    /// A roll whose workers cannot start is aborted once
    /// [`max_start_failures`](PoolConfig::max_start_failures) workers in a row
    /// launched since it began failed to start: the workers already replaced
    /// stay, those not yet rolled keep serving, every later worker runs the
    /// command the pool ran before the roll, and another roll may begin.
    ///
    /// # Errors
    /// When the pool is not running, begins shutting down during the roll, or
    /// another roll is in progress (key `pool`); when the roll was aborted as
    /// above (key `worker`, the message saying how many workers it replaced).
    pub async fn roll_workers(&self, command: Option<WorkerCommand>) -> Result<usize, ConfigError> {
        self.ask(|reply| Command::Roll { command, reply })
            .await
            .unwrap_or_else(|| Err(ConfigError::new("pool", "the pool is not running")))
    }

    /// Shuts the pool down gracefully: queued tasks fail with "shutting down",
    /// in-flight tasks get `shutdown_timeout` to finish; then each worker still
    /// busy is sent `cancel` for its tasks, `shutdown`, SIGTERM and SIGKILL,
    /// `kill_grace` apart, and an idle one `shutdown` at once.
    ///
    /// Returns once the pool has let go of everything: its actor has returned
    /// (dropping the transport and all else it held) and every worker's I/O task
    /// has ended, its process reaped. So when it returns the caller's clone of the
    /// transport is the last one. Every caller, of this or of
    /// [`shutdown_now`](Self::shutdown_now), waits for the same completion; a
    /// call after it returns at once. On a pool that failed (see
    /// [`failure`](Self::failure)) it returns at once: its workers exit as their
    /// links close, and nothing waits for them.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        self.stopped().await;
    }

    /// Shuts the pool down at once: every worker's process group is killed now
    /// (SIGKILL) through the process guard that owns it, the worker's keeper
    /// task holding its not yet reaped process, never by a pid read elsewhere,
    /// so no other process can be hit. Tasks still queued fail with "shutting down" as
    /// in [`shutdown`](Self::shutdown); each task running on a worker settles
    /// once that worker is reaped, as "shutting down" (or "cancelled" when its
    /// caller had cancelled it). A worker still starting is killed as soon as it
    /// reports ready (or gives up after `start_timeout`).
    ///
    /// Works before and during a graceful [`shutdown`](Self::shutdown) (a
    /// second stop signal): the steps still due are dropped. Returns as
    /// `shutdown` does, once the pool has let go of everything.
    pub async fn shutdown_now(&self) {
        let _ = self.commands.send(Command::ShutdownNow);
        self.stopped().await;
    }

    /// Waits until the watcher, having seen the actor return, lets go of the
    /// `stopped` channel.
    async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        while stopped.changed().await.is_ok() {}
    }

    /// Sends `command` to the actor (for [`crate::testing`]).
    #[cfg(feature = "test-util")]
    pub(crate) fn send_command(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).ok()?;
        rx.await.ok()
    }
}

/// Waits for the actor to end, then closes `stopped` (by dropping it) for every
/// [`Pool::shutdown`] waiting. An actor that panicked (or was cancelled with its
/// runtime) marks the pool failed first, so handles refuse submits and the
/// metrics say why instead of showing the last gauges of a pool that is gone.
async fn watch_actor(
    actor: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    stopped: watch::Sender<()>,
) {
    let outcome = actor.await;
    mark_failed(outcome, &shared);
    drop(stopped);
}

/// Marks the pool failed when its actor did not return normally.
fn mark_failed(outcome: Result<(), tokio::task::JoinError>, shared: &Shared) {
    let reason = match outcome {
        Ok(()) => return,
        Err(e) if e.is_panic() => {
            format!(
                "the pool's actor panicked: {}",
                panic_message(&*e.into_panic())
            )
        }
        Err(_) => "the pool's actor was cancelled".to_owned(),
    };
    tracing::error!(%reason, "the pool stopped working; it takes no more tasks");
    shared.stats.fail(reason);
    shared.closed.store(true, Relaxed);
    shared.queue_slots.close();
    // Nothing closes the workers' inputs any more: the desk does, and lets go
    // of the lanes, so the books go with their I/O tasks.
    shared.desk.close_all();
    // Callers' tasks go to the gone actor from now on, and are refused; lanes
    // take no more; those queued end "shutting down" through the ledger. (Tasks
    // the actor or a book held are dropped with them: their answers, dropped
    // untold, say "shutting down" to a handle and to a `Completions` channel.)
    let queued: Vec<Pending> = {
        let mut waiting = shared.queue.lock();
        waiting.close_to_callers();
        waiting.set_lanes_may_take(false);
        waiting.drain()
    };
    for pending in queued {
        settle_failed(shared, pending, FinalStatus::Failed, Failure::ShuttingDown);
    }
}

/// Accepted tasks not yet sent to the pool and, for
/// [`Pool::submit_each`], where the result of each one is.
#[derive(Default)]
struct Unsent {
    pending: Vec<Pending>,
    at: Vec<usize>,
}

impl Unsent {
    /// The first task of a batch the actor never received (it is gone).
    fn first_task(self) -> Task {
        self.pending
            .into_iter()
            .next()
            .map_or_else(|| Task::new("", Vec::new()), Pending::into_refused)
    }
}
