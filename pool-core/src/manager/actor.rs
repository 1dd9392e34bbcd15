//! The actor: the only owner of the pool's state. It reacts to commands from
//! [`Pool`](super::Pool) handles, the bell callers ring after queueing tasks,
//! events from worker I/O tasks and timers, then dispatches whatever can run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio_util::time::DelayQueue;

use super::alerts::{Alert, AlertLog};
use super::autoscale::AutoscaleState;
use super::clock::{Moment, PoolClock};
use super::config::PoolConfig;
use super::crash_streak::CrashStreak;
use super::event_stream::EventStream;
use super::events::PoolEvent;
use super::handoff::{Desk, DeskSettings};
use super::lane::queue::SharedQueue;
use super::lane::{Input, Lane};
use super::ledger::Answer;
use super::metrics::{Stats, WorkerStatus};
use super::pool::WorkerCommand;
use super::probe_set::ProbeSet;
use super::task_record::TaskRecord;
use super::worker_io::WorkerEvent;
use super::worker_life::WorkerLife;
use crate::balance::{BalancePolicy, WorkerSnapshot};
use crate::error::{ConfigError, StartError};
use crate::health::HealthProbe;
use crate::process::GroupSignal;
use crate::queue::{DeadLetter, DeadLetterQueue};
use crate::task::Task;
use crate::transport::Transport;

/// Worker events buffered between the I/O tasks and the actor.
const WORKER_EVENT_BUFFER: usize = 4096;
/// Worker events handled per wake-up.
const EVENT_BATCH: usize = 256;

/// Hashes the pool's own task ids (sequential `u64`s, never chosen by a caller):
/// one multiply (Fibonacci hashing) instead of SipHash on every insert and
/// lookup of the task path.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// The hasher of [`IdHash`].
#[derive(Debug, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // hashbrown takes the top 7 bits as the tag and the low bits as the index:
        // the multiply spreads a sequential id over both.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// State shared by the actor and every [`Pool`](super::Pool) handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Stats,
    /// Every event ([`Pool::events`](super::Pool::events)).
    pub(crate) events: EventStream,
    /// Every event but the routine ones of each task (queued, assigned,
    /// completed): [`Pool::notable_events`](super::Pool::notable_events).
    pub(crate) notable: EventStream,
    pub(crate) next_task_id: AtomicU64,
    pub(crate) queue_slots: Arc<Semaphore>,
    pub(crate) closed: AtomicBool,
    /// The pool's `max_frame`, checked at submit.
    pub(crate) max_frame: usize,
    /// The waiting tasks: callers add theirs and ring; the actor and the lanes
    /// take them.
    pub(crate) queue: SharedQueue,
    /// Workers that died in a row with no task running (the actor's count).
    pub(crate) crash_streak: CrashStreak,
    /// Where callers hand queued tasks to idle workers, and the balance
    /// policy that picks them (shared with the actor's dispatch).
    pub(crate) desk: Desk,
    /// The clock of the task records' times.
    pub(crate) clock: PoolClock,
}

impl Shared {
    pub(crate) fn new(
        config: &PoolConfig,
        channels: EventChannels,
        policy: Box<dyn BalancePolicy>,
        judges_completions: bool,
    ) -> Self {
        let desk = DeskSettings {
            concurrency: config.worker_concurrency,
            default_timeout: config.task_timeout,
            max_frame: config.max_frame,
            open: config.max_tasks_per_worker.is_none() && !judges_completions,
        };
        Self {
            stats: Stats::new(),
            events: EventStream::new(channels.all, config.event_capacity),
            notable: EventStream::new(channels.notable, config.event_capacity),
            next_task_id: AtomicU64::new(1),
            queue_slots: Arc::new(Semaphore::new(config.max_queue_len)),
            closed: AtomicBool::new(false),
            max_frame: config.max_frame,
            queue: SharedQueue::new(config.queue_shard_count()),
            crash_streak: CrashStreak::default(),
            desk: Desk::new(policy, desk),
            clock: PoolClock::new(),
        }
    }

    /// Emits a notable event, built only when someone listens to either stream.
    pub(crate) fn emit(&self, event: impl FnOnce() -> PoolEvent) {
        match (self.events.listened(), self.notable.listened()) {
            (false, false) => {}
            (true, false) => self.events.send(event()),
            (false, true) => self.notable.send(event()),
            (true, true) => {
                let event = event();
                self.notable.send(event.clone());
                self.events.send(event);
            }
        }
    }

    /// Emits a routine event of one task (queued, assigned, completed), built only
    /// when someone listens to every event: a log of what goes wrong (the
    /// daemon's) costs the task path nothing.
    #[inline]
    pub(crate) fn emit_routine(&self, event: impl FnOnce() -> PoolEvent) {
        if self.events.listened() {
            self.events.send(event());
        }
    }
}

/// The event channels subscribed to before the pool started, if any.
#[derive(Debug, Default)]
pub(crate) struct EventChannels {
    pub(crate) all: Option<broadcast::Sender<PoolEvent>>,
    pub(crate) notable: Option<broadcast::Sender<PoolEvent>>,
}

/// A request from a [`Pool`](super::Pool) handle.
pub(crate) enum Command {
    /// Tasks submitted after the queue closed to callers (see `Pool::send_unsent`).
    Submit(Vec<Pending>),
    Cancel(u64),
    Workers(oneshot::Sender<Vec<WorkerStatus>>),
    DeadLetters(oneshot::Sender<Vec<DeadLetter>>),
    Alerts(oneshot::Sender<Vec<Alert>>),
    TakeDeadLetters {
        ids: Option<Vec<u64>>,
        reply: oneshot::Sender<Vec<DeadLetter>>,
    },
    ClearDeadLetters(oneshot::Sender<usize>),
    /// Dead letters taken out to be submitted again and not submitted.
    RestoreDeadLetters(Vec<DeadLetter>),
    Scale {
        target: usize,
        reply: oneshot::Sender<Result<usize, ConfigError>>,
    },
    /// A graceful shutdown ([`Pool::shutdown`](super::Pool::shutdown)).
    Shutdown,
    /// A shutdown that kills every worker at once
    /// ([`Pool::shutdown_now`](super::Pool::shutdown_now)).
    ShutdownNow,
    Roll {
        command: Option<WorkerCommand>,
        reply: oneshot::Sender<Result<usize, ConfigError>>,
    },
    /// Makes the actor panic ([`crate::testing::panic_actor`]).
    #[cfg(feature = "test-util")]
    Panic,
    /// Makes every ready worker's lane panic where it says
    /// ([`crate::testing::panic_lanes`]).
    #[cfg(feature = "test-util")]
    PanicLanes(super::lane::PanicPoint),
}

/// A task waiting for (another) attempt.
pub(crate) struct Pending {
    pub(crate) id: u64,
    pub(crate) task: TaskRecord,
    pub(crate) attempts: u32,
    /// How its caller is told the outcome: only the ledger settles it.
    pub(crate) answer: Answer,
    /// Whether it still holds one of the queue's `max_queue_len` slots (released
    /// when it first leaves the queue; retries re-enter without one).
    pub(crate) holds_queue_slot: bool,
    /// Times it went back to the queue without losing an attempt.
    pub(crate) requeues: FreeRequeues,
    /// It was among the unanswered tasks of a worker that batched its replies
    /// and died, so which of them ran is unknown: it is written only to a
    /// worker holding no other task, and nothing joins it there until it is
    /// answered, so a death then is its own.
    pub(crate) run_alone: bool,
    /// The shard of the queue its caller added it to: where it goes back
    /// (a requeue, a retry), so it stays with its caller's later tasks.
    pub(crate) shard: u8,
    /// When it last entered the queue, on the pool's clock (stamped as it
    /// is queued: the pool's start until then).
    pub(crate) queued_at: Moment,
    /// The worker of its last attempt that counts.
    pub(crate) last_worker: Option<RanOn>,
    /// The worker of the attempt before the last one: named again when the
    /// last one is given back.
    pub(crate) worker_before: Option<RanOn>,
}

/// The times a task went back to the queue without losing an attempt, two
/// counts in one byte (a queued task stays small): from a dead worker's
/// prefetch window (bounded by [`MAX_UNCOUNTED_REQUEUES`]), and after a lane
/// panicked while starting its attempt (bounded by [`MAX_START_PANICS`]: a
/// task that trips a bug in the pool then fails instead of killing lane after
/// lane). Each count stops at 15.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FreeRequeues(u8);

impl FreeRequeues {
    /// Times it left a dead worker's prefetch window.
    pub(crate) fn out_of_windows(self) -> u8 {
        self.0 & 0x0f
    }

    /// Times a lane panicked while starting it.
    pub(crate) fn after_start_panics(self) -> u8 {
        self.0 >> 4
    }

    /// It left a dead worker's prefetch window once more.
    pub(crate) fn count_window(&mut self) {
        if self.out_of_windows() < 0x0f {
            self.0 += 1;
        }
    }

    /// A lane panicked while starting it once more.
    pub(crate) fn count_start_panic(&mut self) {
        if self.after_start_panics() < 0x0f {
            self.0 += 0x10;
        }
    }
}

/// The worker an attempt went to, in four bytes (its number plus one, so
/// that `Option` costs nothing and a queued task stays small; a pool would
/// have to start four billion workers before a number did not fit, and the
/// name is then left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RanOn(std::num::NonZeroU32);

impl RanOn {
    /// Worker number `num`, when it fits.
    pub(crate) fn new(num: u64) -> Option<Self> {
        let plus_one = u32::try_from(num).ok()?.checked_add(1)?;
        std::num::NonZeroU32::new(plus_one).map(Self)
    }

    /// Its name, `worker-N`.
    pub(crate) fn name(self) -> String {
        worker_name(u64::from(self.0.get() - 1))
    }
}

impl Pending {
    /// The task of a submit the pool refused (it never entered the queue):
    /// its answer is let go without a word, the refusal tells the caller.
    pub(crate) fn into_refused(self) -> Task {
        self.answer.withdraw();
        self.task.into_task()
    }

    /// Its last attempt did not count (it never started, or was not at
    /// fault): the number goes back, and so does the worker named as its
    /// last (none for a task that never ran: `worker: null`).
    pub(crate) fn give_back_attempt(&mut self) {
        self.attempts = self.attempts.saturating_sub(1);
        self.last_worker = self.worker_before;
    }

    /// A caller's new task `id`, answered through `answer`, holding the queue
    /// slot its caller took, no attempt made yet.
    #[inline]
    pub(crate) fn new(id: u64, task: Task, answer: Answer) -> Self {
        Self {
            id,
            task: TaskRecord::new(task),
            attempts: 0,
            answer,
            holds_queue_slot: true,
            requeues: FreeRequeues::default(),
            run_alone: false,
            shard: 0,
            queued_at: Moment::default(),
            last_worker: None,
            worker_before: None,
        }
    }
}

/// How often a task may leave the prefetch window of a worker that died
/// without losing an attempt. A window task never started, so a death is
/// charged to the task running, if one was; but a task whose frame alone kills
/// a worker (as its decoder reads it) would then go free for ever while the
/// tasks running beside it took the blame, and with none running a worker that
/// ignores `hello.concurrency` may have started a window task after all. So
/// after this many free requeues the task runs alone (nothing beside it in a
/// window or running), and a death then is its own: a task that kills every
/// worker it is sent to still runs out of attempts.
pub(crate) const MAX_UNCOUNTED_REQUEUES: u8 = 2;

/// How often a task may go back to the queue after a lane panicked while
/// starting its attempt (a bug in the pool, which may be this task's doing);
/// the next time, it fails.
pub(crate) const MAX_START_PANICS: u8 = 2;

/// The longest a timer is armed ahead (the timer wheel's range is about two
/// years, and inserting past it panics); a later deadline is re-checked when it
/// fires, a longer delay is served as this.
pub(crate) const LONGEST_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A timer delay the timer queue accepts: `delay`, at most [`LONGEST_TIMER`].
pub(crate) fn capped(delay: Duration) -> Duration {
    delay.min(LONGEST_TIMER)
}

/// The name of worker number `num`.
pub(crate) fn worker_name(num: u64) -> String {
    format!("worker-{num}")
}

/// A task attempt on a worker.
pub(crate) struct Running {
    pub(crate) pending: Pending,
    /// When the attempt was written to its worker.
    pub(crate) sent: Moment,
    /// Where its frame begins in the stream written to its worker's link: at
    /// or past what the link took, none of it reached the worker (a frame
    /// written in part may have been read in part, and killed the worker).
    pub(crate) frame_start: u64,
    /// When it became one of the first `worker_concurrency` unanswered tasks of
    /// its worker (its run start); `None` while it waits in the prefetch window.
    pub(crate) run_start: Option<Moment>,
    /// When the attempt times out (`None` before its run start and once that was
    /// acted on). Watched by the worker's one deadline timer, not by a timer per
    /// task.
    pub(crate) deadline: Option<Instant>,
    /// Whether its worker was sent `cancel` for it, and on whose behalf.
    pub(crate) cancel: CancelAsked,
    /// Its worker had been handed a task before this one.
    pub(crate) reused: bool,
    /// The limit its attempt ran past, once its deadline fired: it fails as
    /// timed out when its worker (killed for it) is reaped, unless its result
    /// arrived first.
    pub(crate) timed_out: Option<Duration>,
}

/// Whether an attempt's worker was sent `cancel` for it, and on whose
/// behalf. Whichever, the attempt stays on its worker until the worker
/// answers it or is reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelAsked {
    /// It was not: the attempt runs to its answer.
    No,
    /// Its caller cancelled it: it ends cancelled, whatever its worker
    /// answers (a result is not counted as a completion) and whatever
    /// becomes of the worker. Asked past the drain deadline, it only changes
    /// the outcome: the worker is being stopped already.
    ByCaller,
    /// The pool, stopping, took it back from its worker's prefetch window
    /// when the shutdown began: an error answer ends it as "shutting down"
    /// with its attempt given back (it never ran). One that started running
    /// after all and is still unanswered at the reap counts its attempt.
    Withdrawn,
    /// Still running at the drain deadline: the worker's `cancelled` (or
    /// `shutting_down`) answer, or the reap, ends it as "shutting down", its
    /// attempt counted; a failure of its own (a handler's error, its timeout)
    /// ends it as that failure, not retried.
    Abandoned,
}

/// Something the actor scheduled for later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The earliest deadline of a task on `worker` may have passed.
    Deadline {
        worker: u64,
    },
    Retry {
        task: u64,
    },
    CancelGrace {
        task: u64,
    },
    Respawn,
    /// The health tick: probes consulted, gauges and alerts refreshed, the
    /// autoscaler run (every [`Actor::health_period`]).
    HealthTick,
    /// The next step of stopping `worker` is due (see
    /// [`StopStep`](super::worker_life::StopStep)).
    StopStep {
        worker: u64,
    },
    DrainDeadline,
    /// The desk was held by a caller (see [`Actor::desk_retry`]): the pass it
    /// cut short runs again.
    DeskBusy,
}

pub(crate) struct Worker {
    pub(crate) pid: u32,
    pub(crate) control: mpsc::UnboundedSender<GroupSignal>,
    /// Its unanswered tasks in the order they were written (the first
    /// `worker_concurrency` are running, the rest wait in its prefetch window),
    /// shared with its reader, which settles their results and refills it.
    pub(crate) lane: Lane,
    /// The most attempts it is given (`max_tasks_per_worker` with this worker's
    /// jitter); its replacement starts when the last one is handed out.
    pub(crate) task_limit: Option<u64>,
    pub(crate) ready_at: Instant,
    pub(crate) rss_bytes: u64,
    /// Where it stands: serving (suspect, recycling), retiring or being killed,
    /// with the cause and its stop step.
    pub(crate) life: WorkerLife,
    /// The place in the pool this worker fills (`None` once handed to its
    /// replacement).
    pub(crate) slot: Option<Slot>,
    /// Arrival times of its last heartbeats (at most [`HEARTBEAT_HISTORY`]).
    pub(crate) heartbeats: std::collections::VecDeque<Instant>,
    /// The task types it takes (all when it stated none).
    pub(crate) task_types: super::routing::TaskTypes,
    /// When it writes replies: what its death tells about which task ran.
    pub(crate) replies: super::reply_timing::ReplyTiming,
}

impl Worker {
    /// The worker's name (`worker-N`), owned by its lane.
    pub(crate) fn name(&self) -> &str {
        self.lane.name()
    }

    /// Lets its lane (and the desk) feed it from the queue exactly while it
    /// takes tasks and has no task limit to watch (the actor counts those out
    /// itself; [`Book::feeding`](super::lane::Book::feeding) also asks that
    /// its input is open), and
    /// tells its tally whether it takes tasks (the gauge of ready workers).
    /// Called after every change of its life, under its lane's lock, so a lane
    /// never writes a task to a worker that stopped taking them.
    pub(crate) fn sync_feed(&self) {
        let takes = self.life.takes_tasks();
        let mut book = self.lane.book();
        book.feeds = takes && self.task_limit.is_none();
        book.tally.set_takes_tasks(takes);
    }

    /// Sends `frame` to the worker after the frames waiting in its book's
    /// batch; nothing once its input is not open.
    pub(crate) fn send_frame(&self, frame: &[u8]) {
        self.lane.book().push_frame(frame);
        self.lane.ring_batch();
    }

    /// Sends `frame` (when its input is open), then closes the worker's
    /// input; `false` when the actor had closed it before.
    pub(crate) fn send_and_close(&self, frame: &[u8]) -> bool {
        let closed_now = {
            let mut book = self.lane.book();
            book.push_frame(frame);
            book.close_input()
        };
        self.lane.ring_batch();
        closed_now
    }

    /// Whether its lane still writes to it.
    pub(crate) fn input_open(&self) -> bool {
        self.lane.book().input == Input::Open
    }

    /// Tasks it answered (with a result or an error).
    pub(crate) fn answered(&self) -> u64 {
        self.lane.answered()
    }
}

/// A place in the pool: a replacement inherits the slot of the worker it replaces,
/// so restarts can be counted per place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) id: u32,
    pub(crate) restarts: u32,
}

/// Heartbeats remembered per worker (freed with the worker).
pub(crate) const HEARTBEAT_HISTORY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Starting,
    Running,
    Draining,
    Stopping,
    /// Stopped at once ([`Pool::shutdown_now`](super::Pool::shutdown_now)):
    /// every worker's group was killed, and one that becomes ready is killed too.
    Killing,
}

pub(crate) struct Actor {
    pub(crate) config: PoolConfig,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) command: WorkerCommand,
    pub(crate) probes: ProbeSet,
    pub(crate) shared: Arc<Shared>,
    /// The waiting tasks, shared with the lanes that refill from it.
    pub(crate) queue: SharedQueue,
    pub(crate) retrying: HashMap<u64, Pending, IdHash>,
    pub(crate) workers: BTreeMap<u64, Worker>,
    pub(crate) launching: HashMap<u64, Slot>,
    pub(crate) vacant_slots: std::collections::VecDeque<Slot>,
    pub(crate) next_slot: u32,
    pub(crate) respawns_pending: usize,
    pub(crate) next_worker: u64,
    pub(crate) target: usize,
    pub(crate) dlq: DeadLetterQueue,
    pub(crate) timers: DelayQueue<Timer>,
    pub(crate) start_failures: u32,
    pub(crate) phase: Phase,
    pub(crate) start_reply: Option<oneshot::Sender<Result<(), StartError>>>,
    pub(crate) events_tx: mpsc::Sender<WorkerEvent>,
    pub(crate) candidates: Vec<WorkerSnapshot>,
    /// Workers whose book's batch this dispatch pass wrote to first: their
    /// lanes are rung when it ends.
    pub(crate) to_ring: Vec<u64>,
    pub(crate) alerts: AlertLog,
    pub(crate) window_started: Instant,
    pub(crate) autoscale_state: AutoscaleState,
    pub(crate) roll: Option<super::roll::Roll>,
    /// Tasks no candidate took by type (routing by task type).
    pub(crate) held: super::routing::Held,
    /// Scratch for routed dispatch: the candidates that take one task's type,
    /// and their places in `candidates`.
    pub(crate) eligible: Vec<WorkerSnapshot>,
    pub(crate) eligible_at: Vec<usize>,
    /// Queue slots freed during a dispatch pass, given back when it ends.
    pub(crate) freed_slots: usize,
    /// Workers whose pace interval this dispatch pass closed as it refilled
    /// them: their next interval starts after what the pass writes them.
    pub(crate) paced: Vec<u64>,
    /// A [`Timer::DeskBusy`] is armed: a pass found the desk held by a caller
    /// (in the balance policy) and tries again shortly.
    pub(crate) desk_retry: bool,
}

/// Everything the actor is built from.
pub(crate) struct ActorParts {
    pub(crate) config: PoolConfig,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) command: WorkerCommand,
    pub(crate) probes: Vec<Box<dyn HealthProbe>>,
    pub(crate) shared: Arc<Shared>,
}

/// Runs the actor until the pool has shut down and every worker is reaped, then
/// drops its state (the transport with it) and waits until every worker's I/O
/// task has ended: when this returns, the pool holds nothing any more.
pub(crate) async fn run(
    parts: ActorParts,
    mut commands: mpsc::UnboundedReceiver<Command>,
    start_reply: oneshot::Sender<Result<(), StartError>>,
) {
    let (events_tx, mut events_rx) = mpsc::channel(WORKER_EVENT_BUFFER);
    let target = parts.config.initial_size();
    let mut actor = Actor {
        dlq: DeadLetterQueue::new(parts.config.dlq_capacity),
        config: parts.config,
        transport: parts.transport,
        command: parts.command,
        probes: ProbeSet::new(parts.probes),
        queue: parts.shared.queue.clone(),
        shared: parts.shared,
        retrying: HashMap::default(),
        workers: BTreeMap::new(),
        launching: HashMap::new(),
        vacant_slots: std::collections::VecDeque::new(),
        next_slot: 0,
        respawns_pending: 0,
        next_worker: 0,
        target,
        timers: DelayQueue::new(),
        start_failures: 0,
        phase: Phase::Starting,
        start_reply: Some(start_reply),
        events_tx,
        candidates: Vec::new(),
        to_ring: Vec::new(),
        alerts: AlertLog::default(),
        window_started: Instant::now(),
        autoscale_state: AutoscaleState::default(),
        roll: None,
        held: super::routing::Held::default(),
        eligible: Vec::new(),
        eligible_at: Vec::new(),
        freed_slots: 0,
        paced: Vec::new(),
        desk_retry: false,
    };
    actor.shared.stats.target_size.store(target as u64, Relaxed);
    for _ in 0..target {
        actor.launch_worker();
    }
    // The health tick is one of the actor's timers (due at once, then every
    // period): each wake-up polls one timer queue, not a second clock.
    actor.timers.insert(Timer::HealthTick, Duration::ZERO);
    let mut commands_open = true;
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    let queue = actor.queue.clone();
    loop {
        tokio::select! {
            // Callers added tasks: the dispatch pass below hands them out
            // (and the deadlines of tasks they handed off get their timers).
            () = queue.rung() => actor.arm_wanted(),
            _ = events_rx.recv_many(&mut batch, EVENT_BATCH) => {
                for event in batch.drain(..) {
                    actor.on_worker_event(event);
                }
            }
            command = commands.recv(), if commands_open => match command {
                Some(command) => actor.on_command(command),
                None => {
                    commands_open = false;
                    actor.begin_shutdown();
                }
            },
            Some(expired) = actor.timers.next(), if !actor.timers.is_empty() => {
                actor.on_timer(expired.into_inner());
            }
        }
        actor.dispatch();
        actor.advance_roll();
        actor.after_change();
        if actor.finished() {
            break;
        }
    }
    // Tasks sent while the actor was finishing are answered "shutting down" and
    // counted like every other submission; a send after this is refused.
    commands.close();
    while let Ok(command) = commands.try_recv() {
        if let Command::Submit(tasks) = command {
            for pending in tasks {
                actor.refuse_late(pending);
            }
        }
    }
    actor.finish();
    drop(commands);
    drop(actor);
    // Every worker I/O task holds a sender of this channel until it has ended
    // (its process reaped), and the actor's own went with it.
    while events_rx.recv().await.is_some() {}
}

impl Actor {
    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit(tasks) => {
                for pending in tasks {
                    self.refuse_late(pending);
                }
            }
            Command::Cancel(id) => self.cancel(id),
            Command::Workers(reply) => {
                let _ = reply.send(self.worker_statuses());
            }
            Command::Alerts(reply) => {
                let _ = reply.send(self.alerts.history().cloned().collect());
            }
            Command::DeadLetters(reply) => {
                let _ = reply.send(self.dlq.iter().cloned().collect());
            }
            Command::TakeDeadLetters { ids, reply } => {
                let taken = match ids {
                    None => self.dlq.take_all(),
                    Some(ids) => ids.into_iter().filter_map(|id| self.dlq.take(id)).collect(),
                };
                self.shared
                    .stats
                    .dlq_len
                    .store(self.dlq.len() as u64, Relaxed);
                let _ = reply.send(taken);
            }
            Command::RestoreDeadLetters(entries) => {
                self.dlq.put_back(entries);
                self.shared
                    .stats
                    .dlq_len
                    .store(self.dlq.len() as u64, Relaxed);
            }
            Command::ClearDeadLetters(reply) => {
                let n = self.dlq.clear();
                self.shared.stats.dlq_len.store(0, Relaxed);
                let _ = reply.send(n);
            }
            Command::Scale { target, reply } => {
                let _ = reply.send(self.scale_to(target));
            }
            Command::Shutdown => self.begin_shutdown(),
            Command::ShutdownNow => self.shutdown_now(),
            Command::Roll { command, reply } => self.begin_roll(command, reply),
            #[cfg(feature = "test-util")]
            Command::Panic => panic!("panic requested by pool_core::testing::panic_actor"),
            #[cfg(feature = "test-util")]
            Command::PanicLanes(at) => {
                for worker in self.workers.values() {
                    worker.lane.request_panic(at);
                }
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Deadline { worker } => self.on_worker_deadline(worker),
            Timer::Retry { task } => self.on_retry_due(task),
            Timer::CancelGrace { task } => self.on_cancel_grace(task),
            Timer::Respawn => self.on_respawn_due(),
            Timer::StopStep { worker } => self.on_stop_step_due(worker),
            Timer::DrainDeadline => self.on_drain_deadline(),
            // The pass after every wake-up dispatches; the timers callers
            // asked for are armed.
            Timer::DeskBusy => {
                self.desk_retry = false;
                self.arm_wanted();
            }
            Timer::HealthTick => {
                self.timers.insert(Timer::HealthTick, self.health_period());
                self.check_health();
            }
        }
    }

    /// How often the health tick comes: a quarter of `suspect_after`, from
    /// 10 ms to 1 s.
    fn health_period(&self) -> Duration {
        (self.config.suspect_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn worker_statuses(&self) -> Vec<WorkerStatus> {
        let now = Instant::now();
        self.workers
            .values()
            .map(|w| (w, w.lane.book().len()))
            .map(|(w, held)| WorkerStatus {
                id: w.name().to_owned(),
                pid: w.pid,
                state: w.life.status(held == 0),
                in_flight: held as u32,
                tasks_done: w.answered(),
                rss_bytes: w.rss_bytes,
                last_heard_ms: now.duration_since(w.lane.last_heard()).as_millis() as u64,
                heartbeats_seen: w.heartbeats.len() as u32,
                slot: w.slot.map(|s| s.id),
                restarts: w.slot.map_or(0, |s| s.restarts),
                max_heartbeat_gap_ms: w
                    .heartbeats
                    .iter()
                    .zip(w.heartbeats.iter().skip(1))
                    .map(|(a, b)| b.duration_since(*a).as_millis() as u64)
                    .max()
                    .unwrap_or(0),
                uptime_ms: now.duration_since(w.ready_at).as_millis() as u64,
            })
            .collect()
    }

    /// Publishes gauges and moves the shutdown along after any change.
    fn after_change(&mut self) {
        // Held tasks are weighed against queued ones by the actor alone.
        // While the actor runs it alone changes it, so its hint is exact
        // here: the shards are locked only for a change.
        let may = self.held.is_empty();
        if self.queue.lanes_may_take() != may {
            self.queue.lock().set_lanes_may_take(may);
        }
        self.publish_gauges();
        if self.phase == Phase::Draining && !self.attempts_in_flight() {
            self.enter_stopping();
        }
    }

    /// Publishes the gauges the actor owns: workers in the pool, suspect
    /// ones, and the queue's. The ready and busy workers are read from the
    /// lanes' tallies when the metrics are (a lane settles and refills
    /// without telling the actor).
    pub(crate) fn publish_gauges(&self) {
        let stats = &self.shared.stats;
        let unhealthy = self
            .workers
            .values()
            .filter(|w| w.life.is_suspect())
            .count();
        stats
            .workers_total
            .store(self.workers.len() as u64, Relaxed);
        stats.workers_unhealthy.store(unhealthy as u64, Relaxed);
        self.publish_task_gauges();
    }

    /// Whether an attempt is in flight on any worker.
    pub(crate) fn attempts_in_flight(&self) -> bool {
        self.workers.values().any(|w| !w.lane.book().is_empty())
    }

    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Stopping | Phase::Killing)
            && self.workers.is_empty()
            && self.launching.is_empty()
    }

    fn finish(&mut self) {
        self.shared.closed.store(true, Relaxed);
        self.shared.desk.clear();
        self.shared.stats.target_size.store(0, Relaxed);
        self.shared.queue_slots.close();
        self.shared.emit(|| PoolEvent::PoolShutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::FreeRequeues;

    #[test]
    fn the_two_counts_of_free_requeues_are_kept_apart_and_stop_at_15() {
        let mut requeues = FreeRequeues::default();
        requeues.count_window();
        requeues.count_start_panic();
        requeues.count_start_panic();
        assert_eq!(
            (requeues.out_of_windows(), requeues.after_start_panics()),
            (1, 2)
        );
        for _ in 0..40 {
            requeues.count_window();
            requeues.count_start_panic();
        }
        assert_eq!(
            (requeues.out_of_windows(), requeues.after_start_panics()),
            (15, 15)
        );
    }
}
