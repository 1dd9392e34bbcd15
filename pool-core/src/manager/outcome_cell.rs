//! A task's outcome cell: where its settlement leaves the outcome for the
//! task's [`TaskHandle`](super::TaskHandle), and the handle's waker.
//!
//! Unlike a oneshot channel, telling does not wake the caller: it hands back
//! the waker ([`Wake`]), so a lane that settles a whole read of results wakes
//! their callers once the read is settled. A caller that awaits many handles
//! in turn (say, on the thread of a runtime's `block_on`) is then woken once
//! a read instead of once for every result that overtook it: each such wake
//! is a system call for the lane's thread and a thread switch for the caller.
//!
//! Cells are carved from blocks of [`BLOCK`] (see [`Carver`]): one allocation
//! serves that many tasks. One a task was the largest single cost on the
//! manager's side of a bulk submission, about 340 instructions a task in
//! glibc's `malloc` and `free` (a bulk submission's cells outrun the thread's
//! cache of freed blocks). A block is freed once every cell carved from it is
//! done with and its thread carves from the next, so a handle kept long keeps
//! its block (about 1.4 KiB) until it is dropped, and each thread that made a
//! handle keeps the block it carves from. An outcome never outlives its
//! handle: a handle dropped unpolled drops the outcome told to it.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::clock::nanos;
use super::completions::{Completion, Deliveries, Inbox};
use super::handle::{Outcome, TaskError, TaskOutput};

/// A new cell: the settlement's side and the handle's side.
pub(crate) fn outcome_cell() -> (Teller, Waiter) {
    let shared = Cell::carve();
    (
        Teller(Some(shared.clone())),
        Waiter {
            shared,
            settled: false,
        },
    )
}

/// Where a task's outcome stands.
enum State {
    /// Not told yet; the waker of the handle's last poll, if polled.
    Waiting(Option<Waker>),
    /// Told, not yet taken by the handle.
    Told(Held),
    /// The handle took the outcome.
    Taken,
    /// The settlement's side was dropped without telling (the pool is gone).
    TellerGone,
    /// The handle was dropped before it was told: an outcome told now is
    /// dropped at once.
    WaiterGone,
}

/// Cells in a block.
const BLOCK: usize = 16;

/// Cells allocated together, each waiting for its handle's first poll until
/// it is carved and used.
struct Block([Mutex<State>; BLOCK]);

/// One cell of a block: the block is kept while any side of any of its
/// cells is. Sixteen bytes: the teller is in the task's record, which the
/// lanes move by value, and a record of more than 128 bytes is moved by a
/// `memcpy` call instead of inline (the record is 128 bytes with it).
#[derive(Clone)]
struct Cell {
    block: Arc<Block>,
    /// Below [`BLOCK`].
    index: u8,
}

impl Cell {
    /// The next cell of this thread's block.
    fn carve() -> Self {
        // A thread whose carver is already gone (a submit from a thread
        // local's destructor) gets a block of its own.
        CARVER
            .try_with(|carver| carver.borrow_mut().next())
            .unwrap_or_else(|_| Self {
                block: Carver::new_block(),
                index: 0,
            })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change of the state is one assignment: a panic elsewhere
        // while it was held leaves it whole.
        self.block.0[usize::from(self.index)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The block a thread carves its next cells from, and how many of its cells
/// it carved.
struct Carver {
    block: Arc<Block>,
    carved: u8,
}

impl Carver {
    fn new_block() -> Arc<Block> {
        Arc::new(Block(std::array::from_fn(|_| {
            Mutex::new(State::Waiting(None))
        })))
    }

    fn next(&mut self) -> Cell {
        if usize::from(self.carved) == BLOCK {
            self.block = Self::new_block();
            self.carved = 0;
        }
        let cell = Cell {
            block: Arc::clone(&self.block),
            index: self.carved,
        };
        self.carved += 1;
        cell
    }
}

thread_local! {
    static CARVER: RefCell<Carver> = RefCell::new(Carver {
        block: Carver::new_block(),
        carved: 0,
    });
}

/// An outcome as the cell holds it until the handle takes it. A result is
/// held inline, without the task's id (the handle knows it) and with its
/// durations in nanoseconds, so that telling it allocates nothing and the
/// cell stays small while the task waits; a failure, larger and rare, is
/// boxed.
pub(crate) enum Held {
    /// The task's result.
    Output(HeldOutput),
    /// How it failed.
    Error(Box<TaskError>),
}

/// A [`TaskOutput`] without its id, in fewer bytes: what a lane that
/// settles a result builds.
pub(crate) struct HeldOutput {
    pub(crate) payload: Bytes,
    pub(crate) worker: Arc<str>,
    pub(crate) run_ns: u64,
    pub(crate) queue_ns: u64,
    pub(crate) attempts: u32,
}

impl Held {
    fn new(outcome: Outcome) -> Self {
        match outcome {
            Ok(output) => Self::Output(HeldOutput {
                payload: output.payload,
                worker: output.worker,
                run_ns: nanos(output.run_time),
                queue_ns: nanos(output.queue_time),
                attempts: output.attempts,
            }),
            Err(error) => Self::Error(Box::new(error)),
        }
    }

    /// The outcome of task `id`: a result is given that id; a failure
    /// carries its own, the same.
    pub(crate) fn into_outcome(self, id: u64) -> Outcome {
        match self {
            Self::Output(held) => Ok(TaskOutput {
                id,
                payload: held.payload,
                attempts: held.attempts,
                worker: held.worker,
                run_time: Duration::from_nanos(held.run_ns),
                queue_time: Duration::from_nanos(held.queue_ns),
            }),
            Self::Error(error) => {
                debug_assert_eq!(error.id, id, "a failure told to another task's handle");
                Err(*error)
            }
        }
    }
}

/// The waker of a caller told its task's outcome: wake it now, or keep it
/// to wake together with others.
#[must_use = "a caller that is told and not woken waits forever"]
pub(crate) struct Wake(Option<Waker>);

impl Wake {
    /// Nobody to wake (the caller was not polling).
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Wakes `waker`, if any (a channel's receiver that waits).
    pub(crate) fn of(waker: Option<Waker>) -> Self {
        Self(waker)
    }

    /// Wakes the caller now.
    pub(crate) fn now(self) {
        if let Some(waker) = self.0 {
            waker.wake();
        }
    }

    /// Keeps the waker in `batch`, woken with the others later.
    pub(crate) fn keep_in(self, batch: &mut Wakes) {
        if let Some(waker) = self.0 {
            batch.wakers.push(waker);
        }
    }
}

/// Callers told their outcomes, to be woken together: by [`Wakes::wake_all`],
/// or when dropped (a panic between telling and waking leaves no caller
/// waiting). The outcomes for [`Completions`](super::Completions) channels
/// wait here too, handed over with the wakes.
#[derive(Default)]
pub(crate) struct Wakes {
    wakers: Vec<Waker>,
    deliveries: Deliveries,
}

impl Wakes {
    /// Keeps `outcome` for the `Completions` channel of `inbox`.
    pub(crate) fn deliver(&mut self, inbox: Arc<Inbox>, outcome: Completion) {
        self.deliveries.add(inbox, outcome);
    }

    /// Hands over every outcome kept and wakes every caller kept so far.
    pub(crate) fn wake_all(&mut self) {
        self.deliveries.flush();
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// The settlement's side: told at most once (telling consumes it).
pub(crate) struct Teller(Option<Cell>);

impl Teller {
    /// Leaves `outcome` for the handle, and returns the handle's waker to
    /// wake. An outcome for a handle that was dropped is dropped.
    pub(crate) fn tell(self, outcome: Outcome) -> Wake {
        self.tell_held(Held::new(outcome))
    }

    /// [`tell`](Self::tell) with the outcome as the cell holds it.
    pub(crate) fn tell_held(mut self, held: Held) -> Wake {
        let taken = self.0.take();
        // Told: nothing is left for `drop` to do.
        std::mem::forget(self);
        let Some(shared) = taken else {
            return Wake::none();
        };
        let mut state = shared.lock();
        match &mut *state {
            State::Waiting(waker) => {
                let waker = waker.take();
                *state = State::Told(held);
                Wake(waker)
            }
            State::Told(_) | State::Taken | State::TellerGone | State::WaiterGone => Wake::none(),
        }
    }
}

impl Drop for Teller {
    /// Dropped without telling: the handle hears that the pool is gone.
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            let mut state = shared.lock();
            if let State::Waiting(waker) = &mut *state {
                let waker = waker.take();
                *state = State::TellerGone;
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }
}

/// The handle's side.
pub(crate) struct Waiter {
    shared: Cell,
    /// Its poll returned `Ready`: the cell is done with, and dropping the
    /// waiter need not look at it again.
    settled: bool,
}

impl Waiter {
    /// The outcome once told (`Some`), or `None` when it never will be (the
    /// settlement's side is gone, or the outcome was taken already).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Held>> {
        let polled = self.look(cx);
        self.settled = polled.is_ready();
        polled
    }

    fn look(&self, cx: &mut Context<'_>) -> Poll<Option<Held>> {
        let mut state = self.shared.lock();
        match &mut *state {
            State::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Told(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Told(outcome) => Poll::Ready(Some(outcome)),
                _ => Poll::Ready(None),
            },
            State::Taken | State::TellerGone | State::WaiterGone => Poll::Ready(None),
        }
    }
}

impl Drop for Waiter {
    /// Nobody will take the outcome: one told already is dropped now (not
    /// with the block, which other tasks' cells may keep for long), one told
    /// later is dropped as it is told.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let left = std::mem::replace(&mut *self.shared.lock(), State::WaiterGone);
        // Dropped outside the lock: an outcome's payload may be anything.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker;

    use super::*;
    use crate::testing::WakeCounter;

    fn outcome(id: u64) -> Outcome {
        crate::testing::failed_outcome(id)
    }

    fn id_of(polled: Poll<Option<Held>>) -> Option<u64> {
        match polled {
            Poll::Ready(Some(Held::Error(error))) => Some(error.id),
            _ => None,
        }
    }

    #[test]
    fn telling_hands_back_the_waker_and_wakes_only_when_asked() {
        let (teller, mut waiter) = outcome_cell();
        let (woken, waker) = WakeCounter::new();
        let mut cx = Context::from_waker(&waker);
        assert!(waiter.poll(&mut cx).is_pending());
        assert!(waiter.poll(&mut cx).is_pending());
        let mut batch = Wakes::default();
        teller.tell(outcome(7)).keep_in(&mut batch);
        assert_eq!(woken.count(), 0, "not woken while the batch settles");
        batch.wake_all();
        assert_eq!(woken.count(), 1);
        assert_eq!(id_of(waiter.poll(&mut cx)), Some(7));
        assert!(matches!(waiter.poll(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn an_outcome_told_before_the_first_poll_is_there_and_wakes_nobody() {
        let (teller, mut waiter) = outcome_cell();
        assert!(teller.tell(outcome(3)).0.is_none());
        let waker = noop_waker();
        assert_eq!(
            id_of(waiter.poll(&mut Context::from_waker(&waker))),
            Some(3)
        );
    }

    #[test]
    fn wakes_kept_for_a_batch_are_woken_when_it_is_dropped() {
        let (teller, mut waiter) = outcome_cell();
        let (woken, waker) = WakeCounter::new();
        assert!(waiter.poll(&mut Context::from_waker(&waker)).is_pending());
        {
            let mut batch = Wakes::default();
            teller.tell(outcome(1)).keep_in(&mut batch);
        }
        assert_eq!(woken.count(), 1);
    }

    #[test]
    fn a_teller_dropped_without_telling_ends_the_wait() {
        let (teller, mut waiter) = outcome_cell();
        let (woken, waker) = WakeCounter::new();
        let mut cx = Context::from_waker(&waker);
        assert!(waiter.poll(&mut cx).is_pending());
        drop(teller);
        assert_eq!(woken.count(), 1);
        assert!(matches!(waiter.poll(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn an_outcome_for_a_dropped_handle_is_dropped_at_once() {
        let (teller, waiter) = outcome_cell();
        let shared = waiter.shared.clone();
        drop(waiter);
        assert!(teller.tell(outcome(5)).0.is_none());
        assert!(matches!(*shared.lock(), State::WaiterGone));
    }

    #[test]
    fn an_outcome_told_to_a_handle_dropped_unpolled_is_freed_with_the_handle() {
        // A thread of its own, so both cells come from one fresh block.
        std::thread::spawn(|| {
            let (teller, waiter) = outcome_cell();
            // A sibling cell, kept: the block outlives the handle.
            let (_kept_teller, kept_waiter) = outcome_cell();
            assert!(Arc::ptr_eq(&waiter.shared.block, &kept_waiter.shared.block));
            let worker: Arc<str> = Arc::from("worker-2");
            let output = TaskOutput {
                id: 4,
                payload: Bytes::new(),
                attempts: 1,
                worker: Arc::clone(&worker),
                run_time: Duration::ZERO,
                queue_time: Duration::ZERO,
            };
            assert!(teller.tell(Ok(output)).0.is_none());
            assert_eq!(Arc::strong_count(&worker), 2, "the cell holds the outcome");
            drop(waiter);
            assert_eq!(Arc::strong_count(&worker), 1, "freed with the handle");
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn a_result_comes_out_as_it_went_in_with_the_handle_s_id() {
        let (teller, mut waiter) = outcome_cell();
        let output = TaskOutput {
            id: 9,
            payload: Bytes::from_static(b"\x91\x01"),
            attempts: 3,
            worker: Arc::from("worker-4"),
            run_time: Duration::new(5, 123_456_789),
            queue_time: Duration::from_nanos(17),
        };
        let told = TaskOutput {
            id: 0,
            ..output.clone()
        };
        assert!(teller.tell(Ok(told)).0.is_none());
        let waker = noop_waker();
        let held = match waiter.poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Some(held)) => held,
            _ => panic!("told"),
        };
        assert_eq!(held.into_outcome(9), Ok(output));
    }

    #[test]
    fn a_duration_too_long_for_nanoseconds_reads_as_the_longest() {
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::from_secs(1)), 1_000_000_000);
    }

    #[test]
    fn the_cell_and_its_teller_stay_small() {
        // A queued task holds its cell: with an 88-byte state a block of 16
        // is under 90 bytes a task. The teller is in the task's record,
        // which stays at 128 bytes with it (see `Cell`).
        assert!(std::mem::size_of::<Mutex<State>>() <= 88);
        assert!(std::mem::size_of::<Teller>() <= 16);
    }

    #[test]
    fn a_block_serves_sixteen_cells_and_is_freed_with_its_last_side() {
        // A thread of its own, so its block is fresh.
        std::thread::spawn(|| {
            let cells: Vec<(Teller, Waiter)> = (0..BLOCK).map(|_| outcome_cell()).collect();
            let first = &cells[0].1.shared.block;
            assert!(cells
                .iter()
                .all(|(_, waiter)| Arc::ptr_eq(&waiter.shared.block, first)));
            let indexes: Vec<u8> = cells.iter().map(|(_, w)| w.shared.index).collect();
            assert_eq!(indexes, (0..16).collect::<Vec<u8>>());
            let (_, next) = outcome_cell();
            assert!(
                !Arc::ptr_eq(&next.shared.block, first),
                "the seventeenth cell is carved from a new block"
            );
            let block = Arc::downgrade(first);
            let mut cells = cells.into_iter();
            let (teller, waiter) = cells.next().expect("sixteen cells");
            drop(cells);
            assert!(block.upgrade().is_some(), "a teller and a waiter keep it");
            drop(waiter);
            assert!(block.upgrade().is_some(), "the teller keeps it");
            drop(teller);
            assert!(block.upgrade().is_none(), "freed with its last side");
        })
        .join()
        .expect("the test thread");
    }
}
