use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll};
use std::time::Duration;

use super::attempt::Target;
use super::feed::{After, Feed};
use super::settle::Settled;
use super::{Book, Completion, Lane, PanicPoint, Reply};
use crate::manager::actor::{CancelAsked, Pending, Running, Shared, MAX_START_PANICS};
use crate::manager::clock::{Now, PoolClock};
use crate::manager::ledger::Answer;
use crate::manager::metrics::Stats;
use crate::manager::outbox::Outbox;
use crate::manager::outcome_cell::{Held, Waiter};
use crate::protocol::DEFAULT_MAX_FRAME;
use crate::task::Task;

const TIMEOUT: Duration = Duration::from_secs(30);

fn attempt(id: u64, now: Now, running: bool) -> Running {
    attempt_of(id, now, running, 0)
}

/// [`attempt`] with a payload of `size` bytes.
fn attempt_of(id: u64, now: Now, running: bool, size: usize) -> Running {
    let (answer, _rx) = Answer::new();
    Running {
        pending: Pending {
            attempts: 1,
            holds_queue_slot: false,
            queued_at: now.moment,
            last_worker: crate::manager::actor::RanOn::new(0),
            ..Pending::new(id, Task::new("echo", vec![0u8; size]), answer)
        },
        sent: now.moment,
        frame_start: 0,
        run_start: running.then_some(now.moment),
        deadline: running.then_some(now.instant + TIMEOUT),
        cancel: CancelAsked::No,
        reused: false,
        timed_out: None,
    }
}

/// A book of `n` tasks (ids 1..=n) with `concurrency` of them running.
fn book(stats: &Stats, n: u64, concurrency: u64, now: Now) -> Book {
    let mut book = Book::new(stats.tallies.writer(concurrency));
    for id in 1..=n {
        book.push(attempt(id, now, id <= concurrency));
    }
    book
}

/// What an answer took out of the book.
struct Taken {
    attempt: Running,
    completion: Option<Completion>,
}

/// Answers task `id` of `book` with `reply` (a book of concurrency
/// `concurrency`) at `at`, noting it in `report`.
fn answer_with(
    book: &mut Book,
    id: u64,
    reply: Reply,
    concurrency: usize,
    at: Now,
    report: &mut Settled,
) -> Option<Taken> {
    book.answer(
        id,
        reply,
        concurrency,
        TIMEOUT,
        at,
        report,
        |attempt, completion| Taken {
            attempt,
            completion,
        },
    )
}

/// Answers task `id` of `book` (a book of concurrency `concurrency`) with a
/// result at `at`; what was taken, and the read's report.
fn answer(book: &mut Book, id: u64, concurrency: usize, at: Now) -> (Option<Taken>, Settled) {
    let mut report = Settled::default();
    let taken = answer_with(book, id, Reply::Result, concurrency, at, &mut report);
    (taken, report)
}

#[tokio::test(start_paused = true)]
async fn an_answer_from_the_running_range_starts_the_next_window_task() {
    let stats = Stats::new();
    let now = PoolClock::new().now();
    let mut book = book(&stats, 4, 2, now);
    assert_eq!(stats.tallies.totals().in_flight, 4);
    let later = now.later_by(Duration::from_millis(5));
    let (taken, report) = answer(&mut book, 1, 2, later);
    assert_eq!(
        taken.map(|t| t.attempt.pending.id),
        Some(1),
        "task 1 answered"
    );
    assert_eq!(
        report.deadline,
        Some(later.instant + TIMEOUT),
        "task 3's run started, and no timer was armed"
    );
    assert_eq!(
        book.get_mut(3).and_then(|r| r.run_start),
        Some(later.moment)
    );
    assert_eq!(book.get_mut(4).and_then(|r| r.run_start), None);
    assert_eq!(stats.tallies.totals().in_flight, 3);
}

#[tokio::test(start_paused = true)]
async fn an_answer_from_the_window_starts_nothing() {
    let stats = Stats::new();
    let now = PoolClock::new().now();
    let mut book = book(&stats, 4, 2, now);
    let (taken, report) = answer(&mut book, 4, 2, now);
    assert_eq!(
        taken.map(|t| t.attempt.pending.id),
        Some(4),
        "task 4 answered"
    );
    assert_eq!(report.deadline, None);
    assert_eq!(book.get_mut(3).and_then(|r| r.run_start), None);
}

/// Writes task `id` at `now` into `book` (of concurrency 2: running while a
/// run slot is free), its frame 10 bytes after the last.
fn write(book: &mut Book, id: u64, now: Now) {
    let mut attempt = attempt(id, now, book.len() < 2);
    attempt.frame_start = book.batched;
    book.batched += 10;
    book.push(attempt);
}

/// A book of concurrency 2 whose tasks `ids` were written in turn.
fn written(stats: &Stats, ids: std::ops::RangeInclusive<u64>, now: Now) -> Book {
    let mut book = Book::new(stats.tallies.writer(2));
    for id in ids {
        write(&mut book, id, now);
    }
    book
}

#[tokio::test(start_paused = true)]
async fn the_pace_counts_an_interval_as_work_only_while_every_run_slot_held_a_task_from_before() {
    let stats = Stats::new();
    let t0 = PoolClock::new().now();
    let mut book = written(&stats, 1..=4, t0);
    book.pace_refill(t0.moment, 2);
    // 1 ms later 2 answered, and tasks 3 and 4, written before the refill,
    // are still held: both slots had work all along, 500 µs a task.
    let t1 = t0.later_by(Duration::from_millis(1));
    answer(&mut book, 1, 2, t1);
    answer(&mut book, 2, 2, t1);
    book.pace_refill(t1.moment, 2);
    assert_eq!(book.pace.prefetch(512), 10);
    // Task 5 is written after that refill; 10 ms later 3 is answered: the
    // second slot's task (5) is new, so that slot may have run dry. The
    // interval only bounds the pace: the window doubles, not shrinks to 1.
    write(&mut book, 5, t1);
    let t2 = t1.later_by(Duration::from_millis(10));
    answer(&mut book, 3, 2, t2);
    book.pace_refill(t2.moment, 2);
    assert_eq!(book.pace.prefetch(512), 20);
    // That refill writes task 6, which counts as held from its interval's
    // start with 4 and 5: 20 ms later one answer (4), and 5 and 6 still
    // held, is a measure again, and a slow one.
    write(&mut book, 6, t2);
    book.pace_wrote();
    let t3 = t2.later_by(Duration::from_millis(20));
    answer(&mut book, 4, 2, t3);
    book.pace_refill(t3.moment, 2);
    assert!(book.pace.prefetch(512) < 20, "{}", book.pace.prefetch(512));
}

#[tokio::test(start_paused = true)]
async fn a_task_answered_twice_is_found_once() {
    let stats = Stats::new();
    let now = PoolClock::new().now();
    let mut book = book(&stats, 2, 1, now);
    assert!(answer(&mut book, 2, 1, now).0.is_some());
    assert!(answer(&mut book, 2, 1, now).0.is_none());
    assert!(answer(&mut book, 9, 1, now).0.is_none());
    assert_eq!(book.len(), 1);
    assert_eq!(stats.tallies.totals().in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn a_reaped_worker_s_book_drains_last_written_first() {
    let stats = Stats::new();
    let mut book = book(&stats, 3, 1, PoolClock::new().now());
    // Every frame reached the worker (the link took the whole stream).
    assert_eq!(book.reached(u64::MAX).first_running, Some(1));
    assert_eq!(book.reached(u64::MAX).unanswered, 3);
    // None did: none ran.
    assert_eq!(book.reached(0).first_running, None);
    assert_eq!(book.reached(0).unanswered, 0);
    let ids: Vec<u64> = book
        .drain_last_first()
        .iter()
        .map(|r| r.pending.id)
        .collect();
    assert_eq!(ids, [3, 2, 1]);
    assert!(book.is_empty());
    assert_eq!(stats.tallies.totals().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_result_counts_a_completion_and_an_error_or_a_cancel_does_not() {
    let stats = Stats::new();
    let now = PoolClock::new().now();
    let mut book = book(&stats, 3, 3, now);
    if let Some(running) = book.get_mut(3) {
        running.cancel = CancelAsked::ByCaller;
    }
    let later = now.later_by(Duration::from_millis(7));
    let mut report = Settled::default();
    let mut answer = |book: &mut Book, id, reply| {
        answer_with(book, id, reply, 3, later, &mut report).expect("the task is in the book")
    };
    let result = answer(&mut book, 1, Reply::Result);
    let run_ns = result.completion.map(|c| c.run_ns);
    assert_eq!(run_ns, Some(7_000_000));
    assert!(answer(&mut book, 2, Reply::Error).completion.is_none());
    assert!(
        answer(&mut book, 3, Reply::Result).completion.is_none(),
        "cancelled"
    );
    let totals = stats.tallies.totals();
    assert_eq!(totals.completed, 1);
    assert_eq!(totals.run_us_total, 7_000);
    assert_eq!(totals.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_wakes_the_actor_only_for_what_is_its_business() {
    let stats = Stats::new();
    let now = PoolClock::new().now();
    let mut book = book(&stats, 3, 1, now);
    book.feeds = true;
    let mut timers = tokio_util::time::DelayQueue::new();
    let armed = now.instant + TIMEOUT;
    book.deadline_timer = Some((timers.insert_at((), armed), armed));
    let later = now.later_by(Duration::from_millis(3));

    let mut report = Settled::default();
    answer_with(&mut book, 1, Reply::Result, 1, later, &mut report).expect("task 1 is in the book");
    assert_eq!(
        (report.needs_actor, report.deadline),
        (false, None),
        "task 2's deadline is later than the armed timer"
    );

    book.deadline_timer = None;
    let mut report = Settled::default();
    answer_with(&mut book, 2, Reply::Result, 1, later, &mut report).expect("task 2 is in the book");
    assert_eq!(
        (report.needs_actor, report.deadline),
        (true, Some(later.instant + TIMEOUT)),
        "no timer is armed for task 3's deadline"
    );

    book.feeds = false;
    let mut report = Settled::default();
    answer_with(&mut book, 3, Reply::Result, 1, later, &mut report).expect("task 3 is in the book");
    assert!(
        report.needs_actor,
        "a worker that does not feed is the actor's to release, judge or refill"
    );
    assert_eq!(book.tally.reader().answered(), 3);
}

/// Whether the lane's bell rang since it was last heard (hears it).
fn rang(lane: &super::Lane) -> bool {
    use futures_util::FutureExt;
    lane.batch_rung().now_or_never().is_some()
}

#[tokio::test]
async fn a_caller_writes_to_a_free_link_and_rings_the_lane_otherwise() {
    use tokio::io::AsyncReadExt;
    let stats = Stats::new();
    let lane = super::Lane::new(stats.tallies.writer(1), "worker-0".into(), PoolClock::new());
    // Not connected yet (the worker is not ready): the lane is rung.
    lane.book().push_frame(b"one");
    lane.write_or_ring();
    assert!(rang(&lane));
    let (near, mut far) = tokio::io::duplex(64);
    lane.output().connect(Box::pin(near));
    lane.output().take_batch(&mut lane.book());
    // The lane's task holds its output: the caller leaves the frame and rings.
    {
        let _held = lane.output();
        lane.book().push_frame(b"two");
        lane.write_or_ring();
    }
    assert!(rang(&lane));
    lane.output().take_batch(&mut lane.book());
    std::future::poll_fn(|cx| lane.output().poll_write(cx))
        .await
        .expect("write");
    // A free link and nothing waiting: the caller writes, no ring.
    lane.book().push_frame(b"three");
    lane.write_or_ring();
    assert!(!rang(&lane));
    let mut got = vec![0; 11];
    far.read_exact(&mut got).await.expect("read");
    assert_eq!(got, b"onetwothree");
}

#[tokio::test(start_paused = true)]
async fn the_book_leaves_its_occupancy_behind_as_its_lock_is_let_go() {
    use super::guard::NOT_FED;
    use super::Lane;

    let stats = Stats::new();
    let lane = Lane::new(stats.tallies.writer(1), "worker-1".into(), PoolClock::new());
    let now = PoolClock::new().now();
    assert_eq!(lane.occupancy(), 0, "nothing was left behind yet");
    {
        let mut book = lane.book();
        book.push(attempt(1, now, true));
    }
    assert_eq!(lane.occupancy(), NOT_FED, "the actor has not let it feed");
    {
        let mut book = lane.book();
        book.feeds = true;
        book.push(attempt(2, now, false));
    }
    assert_eq!(lane.occupancy(), 2);
    drop(answer(&mut lane.book(), 1, 1, now));
    assert_eq!(
        lane.occupancy(),
        1,
        "an answer is seen as the lock is let go"
    );
}

/// A task input that notes, when the pool drops it, whether its lane's book
/// was free then.
struct DropProbe {
    lane: super::Lane,
    book_was_free: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
}

impl AsRef<[u8]> for DropProbe {
    fn as_ref(&self) -> &[u8] {
        b"input"
    }
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        let free = self.lane.book_is_free();
        if let Ok(mut noted) = self.book_was_free.lock() {
            *noted = Some(free);
        }
    }
}

/// A lane of worker 1 with `concurrency` run slots and no prefetch, the
/// pool's shared state, the queue its settler refills from, and the settler
/// (it settles results itself: no probe judges completions).
fn settler_rig(
    concurrency: u32,
) -> (
    std::sync::Arc<Shared>,
    Lane,
    super::queue::SharedQueue,
    super::settle::Settler,
) {
    use super::settle::{LaneSettings, Settler};
    use crate::balance::FirstAvailable;
    use crate::manager::actor::EventChannels;
    use crate::PoolConfig;

    let shared = std::sync::Arc::new(Shared::new(
        &PoolConfig::default(),
        EventChannels::default(),
        Box::new(FirstAvailable),
        false,
    ));
    let lane = Lane::new(
        shared.stats.tallies.writer(u64::from(concurrency)),
        "worker-1".into(),
        shared.clock,
    );
    let queue = super::queue::SharedQueue::new(1);
    let settler = Settler::new(
        lane.clone(),
        std::sync::Arc::clone(&shared),
        queue.clone(),
        1,
        LaneSettings {
            window: super::window::Window::of(&PoolConfig {
                worker_concurrency: concurrency,
                prefetch: 0,
                ..PoolConfig::default()
            }),
            default_timeout: TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            settles: true,
        },
    );
    (shared, lane, queue, settler)
}

/// A task's input may be a buffer of the caller's own whose drop runs the
/// caller's code (which may submit, and so look at this lane's book): the
/// reader that settles the task's result drops it after the book's lock.
#[tokio::test(start_paused = true)]
async fn a_completed_task_s_input_is_dropped_after_the_book_s_lock() {
    use std::sync::{Arc, Mutex};

    let (shared, lane, _queue, mut settler) = settler_rig(1);
    let book_was_free = Arc::new(Mutex::new(None));
    let input = bytes::Bytes::from_owner(DropProbe {
        lane: lane.clone(),
        book_was_free: Arc::clone(&book_was_free),
    });
    let now = shared.clock.now();
    let (answer, _waiter) = Answer::new();
    lane.book().push(Running {
        pending: Pending {
            attempts: 1,
            holds_queue_slot: false,
            ..Pending::new(1, Task::new("echo", input), answer)
        },
        sent: now.moment,
        frame_start: 0,
        run_start: Some(now.moment),
        deadline: Some(now.instant + TIMEOUT),
        cancel: CancelAsked::No,
        reused: false,
        timed_out: None,
    });
    settler.result(1, bytes::Bytes::from_static(b"output"), now);
    let noted = *book_was_free.lock().expect("not poisoned");
    assert_eq!(noted, Some(true), "dropped, and with the book's lock free");
}

/// The weight of the tasks waiting for a run slot stays what the entries
/// say through any order of writes and answers (from the running range, from
/// the window, unknown ids) and a drain: a seeded run of 2 000 steps.
#[tokio::test(start_paused = true)]
async fn the_window_weight_follows_every_write_answer_and_drain() {
    let stats = Stats::new();
    let now = PoolClock::new().now();
    let concurrency = 3;
    let mut book = Book::new(stats.tallies.writer(concurrency as u64));
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut next_id = 1;
    let mut held: Vec<u64> = Vec::new();
    for step in 0..2_000 {
        match next(10) {
            0 => {
                book.drain_last_first();
                held.clear();
            }
            1..=5 => {
                let runs_now = book.len() < concurrency;
                let size = usize::try_from(next(5_000)).expect("small");
                book.push(attempt_of(next_id, now, runs_now, size));
                held.push(next_id);
                next_id += 1;
            }
            _ => {
                // Mostly a held task, sometimes one the book does not hold.
                let id = if held.is_empty() || next(8) == 0 {
                    next_id + 7
                } else {
                    held.remove(usize::try_from(next(held.len() as u64)).expect("small"))
                };
                let _ = answer(&mut book, id, concurrency, now);
            }
        }
        assert_eq!(
            book.waiting_bytes,
            book.waiting_bytes_recounted(),
            "step {step}"
        );
    }
}

/// A pool's shared state whose lanes may take from its queue, and the feed
/// of its worker 1, which runs `concurrency` tasks at once (`prefetch` 0).
struct RefillRig {
    shared: Shared,
    feed: Feed,
    stats: Stats,
    concurrency: u32,
}

impl RefillRig {
    fn new(concurrency: u32) -> Self {
        let (shared, feed) = super::feed::strict_rig(concurrency);
        Self {
            shared,
            feed,
            stats: Stats::new(),
            concurrency,
        }
    }

    /// Queues task `id`; the side its caller is told on.
    fn queue(&self, id: u64) -> Waiter {
        let (answer, told) = Answer::new();
        let pending = Pending::new(id, Task::new("echo", vec![1]), answer);
        let now = self.shared.clock.now().moment;
        self.shared.queue.shard(0).push_new(pending, now);
        told
    }

    /// A new lane for worker 1 (a replacement's, after a panic), asked to
    /// panic while its next refill starts the last task it took; whether
    /// that refill unwound.
    fn refill_panicking(&mut self) -> (Lane, bool) {
        let lane = Lane::new(
            self.stats.tallies.writer(u64::from(self.concurrency)),
            "worker-1".into(),
            self.shared.clock,
        );
        lane.book().feeds = true;
        lane.request_panic(PanicPoint::Start);
        let target = Target {
            shared: &self.shared,
            num: 1,
            name: "worker-1",
            concurrency: self.concurrency as usize,
            default_timeout: TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
        };
        let feed = &mut self.feed;
        let mut out = Outbox::default();
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            feed.refill(&lane, &target, &mut out, After::Answers)
        }));
        (lane, unwound.is_err())
    }

    fn free_queue_slots(&self) -> usize {
        self.shared.queue_slots.available_permits()
    }
}

/// A task whose start makes its lane panic (a bug in the pool triggered by
/// that task) goes back to the head of the queue, its stranded frame never
/// written, and its queue slot still held, at most `MAX_START_PANICS`
/// times; the next time it fails, and its queue slot comes back.
#[tokio::test]
async fn a_task_whose_start_panics_goes_back_a_bounded_number_of_times_then_fails() {
    let mut rig = RefillRig::new(1);
    let mut told = rig.queue(7);
    let slots = rig.free_queue_slots();
    for panics in 1..=MAX_START_PANICS + 1 {
        let (lane, unwound) = rig.refill_panicking();
        assert!(unwound, "the lane panicked while starting task 7");
        assert!(
            !lane.book().has_batch(),
            "its frame never reaches the worker"
        );
        assert!(lane.book().is_empty(), "task 7 never joined the book");
        let queued = rig
            .shared
            .queue
            .lock()
            .peek()
            .map(|p| p.requeues.after_start_panics());
        if panics <= MAX_START_PANICS {
            assert_eq!(queued, Some(panics), "back at the head, charged once more");
            assert_eq!(rig.free_queue_slots(), slots);
        } else {
            assert_eq!(queued, None, "no longer queued");
            assert_eq!(rig.free_queue_slots(), slots + 1);
        }
        // Counted for a cancel that looked for it meanwhile.
        assert_eq!(
            rig.shared.queue.put_backs(),
            u64::from(panics.min(MAX_START_PANICS))
        );
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Some(Held::Error(error))) = told.poll(&mut cx) else {
        panic!("task 7 was told its failure");
    };
    assert_eq!(error.id, 7);
    assert_eq!(error.failure.kind(), "protocol");
    assert!(
        error
            .failure
            .to_string()
            .contains("panicked while starting"),
        "{}",
        error.failure
    );
}

/// A refill that panics while starting the last of the tasks it took, the
/// others already in the book, gives back the queue slots they left, and
/// puts only that last task back at the head of the queue.
#[tokio::test]
async fn a_refill_that_panics_after_adding_tasks_returns_their_queue_slots() {
    let mut rig = RefillRig::new(3);
    let _told: Vec<Waiter> = (1..=3).map(|id| rig.queue(id)).collect();
    let slots = rig.free_queue_slots();
    let (lane, unwound) = rig.refill_panicking();
    assert!(unwound, "the lane panicked while starting task 3");
    let book = lane.book();
    assert_eq!(book.len(), 2, "tasks 1 and 2 are in the book");
    assert!(
        !book.has_batch(),
        "no frame of the dying worker's is written"
    );
    drop(book);
    let queued: Vec<u64> = rig
        .shared
        .queue
        .lock()
        .drain()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(queued, [3], "task 3 is back in the queue");
    assert_eq!(
        rig.free_queue_slots(),
        slots + 2,
        "tasks 1 and 2 gave back the queue slots they left"
    );
}

/// The refill a lane's writer makes once its link took what a filler
/// stopped for: what it starts with a deadline the actor's timer does not
/// cover is reported to the actor; with nothing to take, nothing is.
#[tokio::test(start_paused = true)]
async fn a_refill_after_the_link_caught_up_reports_what_the_actor_must_arm() {
    let (shared, lane, queue, mut settler) = settler_rig(4);
    lane.book().feeds = true;
    queue.lock().set_lanes_may_take(true);
    settler.connect(crate::manager::routing::TaskTypes::default());

    let mut out = Outbox::default();
    assert_eq!(settler.refill_caught_up(&mut out), None, "nothing queued");

    let (answer, _told) = Answer::new();
    let pending = Pending::new(7, Task::new("echo", vec![1]), answer);
    queue.shard(0).push_new(pending, shared.clock.now().moment);
    let report = settler.refill_caught_up(&mut out);
    assert_eq!(lane.book().len(), 1, "the lane took the task");
    assert!(out.has_bytes(), "and its frame waits for the link");
    let report = report.expect("the actor must hear");
    assert!(report.needs_actor);
    assert_eq!(report.answered, 0);
    assert!(
        report.deadline.is_some(),
        "no timer covers the task's deadline yet"
    );
}

/// Under load no book empties by itself (each answer is refilled): a lane
/// that finds a task that must run alone at the head of a shard while its
/// book holds tasks takes no other task, from any shard, until its book is
/// empty, and then takes that task first, however much the other shards hold.
#[tokio::test]
async fn a_lane_empties_its_book_for_a_task_that_must_run_alone() {
    let config = crate::PoolConfig {
        worker_concurrency: 2,
        prefetch: 0,
        queue_shards: 2,
        ..crate::PoolConfig::default()
    };
    let (shared, mut feed) = super::feed::rig(&config);
    let stats = Stats::new();
    let lane = Lane::new(stats.tallies.writer(2), "worker-1".into(), shared.clock);
    lane.book().feeds = true;
    let now = shared.clock.now();
    let queue = |shard: usize, id: u64, run_alone: bool| {
        let (answer, _told) = Answer::new();
        let mut pending = Pending::new(id, Task::new("echo", vec![1]), answer);
        pending.run_alone = run_alone;
        shared.queue.shard(shard).push_new(pending, now.moment);
    };
    // Worker 1's feed looks at shard 1 first.
    for id in 1..=10 {
        queue(1, id, false);
    }
    queue(0, 100, true);
    let target = Target {
        shared: &shared,
        num: 1,
        name: "worker-1",
        concurrency: 2,
        default_timeout: TIMEOUT,
        max_frame: DEFAULT_MAX_FRAME,
    };
    let mut refill = |after| {
        let mut out = Outbox::default();
        feed.refill(&lane, &target, &mut out, after);
    };
    let held =
        |lane: &Lane| -> Vec<u64> { lane.book().attempts_mut().map(|r| r.pending.id).collect() };
    refill(After::Answers);
    assert_eq!(held(&lane), [1, 2]);
    // Task 1 answered: the refill meets the lone task (its book holds 2).
    answer(&mut lane.book(), 1, 2, now);
    refill(After::Answers);
    assert_eq!(
        held(&lane),
        [2],
        "nothing joins the book while the lone task waits"
    );
    refill(After::LinkCaughtUp);
    assert_eq!(
        held(&lane),
        [2],
        "nor at the next refill, from another shard"
    );
    answer(&mut lane.book(), 2, 2, now);
    refill(After::Answers);
    assert_eq!(held(&lane), [100], "emptied, it takes the lone task, alone");
}
