//! A task's outcome cell: where its settlement leaves the outcome for the
//! task's [`TaskHandle`](super::TaskHandle), and the handle's waker.
//!
//! Unlike a oneshot channel, telling does not wake the caller: it hands back
//! the waker ([`Wake`]), so a lane that settles a whole read of results wakes
//! their callers once the read is settled. A caller that awaits many handles
//! in turn (say, on the thread of a runtime's `block_on`) is then woken once
//! a read instead of once for every result that overtook it: each such wake
//! is a system call for the lane's thread and a thread switch for the caller.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::clock::nanos;
use super::handle::{Outcome, TaskError, TaskOutput};

/// A new cell: the settlement's side and the handle's side.
pub(crate) fn outcome_cell() -> (Teller, Waiter) {
    let cells = Arc::new(Cells::One(Mutex::new(State::Waiting(None))));
    sides(cells, 0)
}

/// The most cells a [`CellBlock`] holds. A block's cells share one count of
/// their sides, which the lane that tells and the caller that takes both
/// change: with 256 cells a block, both were at the same count all the time
/// and `pool-bench tput` ran about 5 % slower than with a cell apiece; with
/// 16 it runs as fast, the caller's thread spending a fifth fewer
/// instructions a task (`docs/benchmarks.md`).
pub(crate) const BLOCK_MAX: usize = 16;

/// The cells of tasks submitted together, in one block (a cell of its own
/// costs a task an allocation and a free: about 300 instructions, a quarter
/// of what the caller's thread spent on it; a block costs two allocations,
/// its count's and its cells'). [`CellBlock::next`] hands out each cell's two
/// sides in turn, starting a block when none is started or the last one is
/// used up. A block is freed with the last side of its last cell: a handle
/// kept long keeps the block's other cells (at most `BLOCK_MAX - 1`, 88
/// bytes each, emptied of their outcomes) allocated with it.
#[derive(Default)]
pub(crate) struct CellBlock {
    cells: Option<Arc<Cells>>,
    next: u32,
}

impl CellBlock {
    /// The next cell's two sides. A new block is sized for the `wanted` cells
    /// still expected (at most [`BLOCK_MAX`]; a full block when `wanted` is
    /// 0, for tasks beyond what was expected).
    pub(crate) fn next(&mut self, wanted: usize) -> (Teller, Waiter) {
        let cells = match self.cells.take() {
            Some(cells) if usize::try_from(self.next).is_ok_and(|at| at < cells.len()) => cells,
            _ => {
                self.next = 0;
                Arc::new(Cells::new(wanted))
            }
        };
        let at = self.next;
        self.next += 1;
        let sides = sides(Arc::clone(&cells), at);
        self.cells = Some(cells);
        sides
    }
}

/// The two sides of cell `at` of `cells`.
fn sides(cells: Arc<Cells>, at: u32) -> (Teller, Waiter) {
    (
        Teller {
            cells: Arc::clone(&cells),
            at,
            told: false,
        },
        Waiter {
            cells,
            at,
            settled: false,
        },
    )
}

/// One cell (a task submitted on its own), or a block's. The kind takes 8
/// bytes beside the 88 of a cell.
enum Cells {
    One(Mutex<State>),
    Many(Box<[Mutex<State>]>),
}

impl Cells {
    /// `wanted` cells, at most [`BLOCK_MAX`] (0: as many).
    fn new(wanted: usize) -> Self {
        match wanted {
            1 => Self::One(Mutex::new(State::Waiting(None))),
            0 => Self::new(BLOCK_MAX),
            n => Self::Many(
                (0..n.min(BLOCK_MAX))
                    .map(|_| Mutex::new(State::Waiting(None)))
                    .collect(),
            ),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(cells) => cells.len(),
        }
    }

    /// Cell `at`, locked. `at` is one [`CellBlock::next`] handed out, so
    /// within the block.
    fn lock(&self, at: u32) -> MutexGuard<'_, State> {
        let cell = match self {
            Self::One(cell) => cell,
            Self::Many(cells) => &cells[at as usize],
        };
        // Every change of the state is one assignment: a panic elsewhere while
        // it was held leaves it whole.
        cell.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    /// Nobody to wake (the caller was not polling, or hears through a channel
    /// that woke it).
    pub(crate) fn none() -> Self {
        Self(None)
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
            batch.0.push(waker);
        }
    }
}

/// Callers told their outcomes, to be woken together: by [`Wakes::wake_all`],
/// or when dropped (a panic between telling and waking leaves no caller
/// waiting).
#[derive(Default)]
pub(crate) struct Wakes(Vec<Waker>);

impl Wakes {
    /// Wakes every caller kept so far.
    pub(crate) fn wake_all(&mut self) {
        for waker in self.0.drain(..) {
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
pub(crate) struct Teller {
    cells: Arc<Cells>,
    at: u32,
    /// It told: dropping it has nothing left to do.
    told: bool,
}

impl Teller {
    /// Leaves `outcome` for the handle, and returns the handle's waker to
    /// wake. An outcome for a handle that was dropped is dropped.
    pub(crate) fn tell(self, outcome: Outcome) -> Wake {
        self.tell_held(Held::new(outcome))
    }

    /// [`tell`](Self::tell) with the outcome as the cell holds it.
    pub(crate) fn tell_held(mut self, held: Held) -> Wake {
        self.told = true;
        let mut state = self.cells.lock(self.at);
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
        if self.told {
            return;
        }
        let mut state = self.cells.lock(self.at);
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

/// The handle's side.
pub(crate) struct Waiter {
    cells: Arc<Cells>,
    at: u32,
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
        let mut state = self.cells.lock(self.at);
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
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.cells.lock(self.at);
        // A told outcome nobody will take goes now, not with the block.
        let left = match &*state {
            State::Waiting(_) | State::Told(_) => std::mem::replace(&mut *state, State::WaiterGone),
            State::Taken | State::TellerGone | State::WaiterGone => return,
        };
        drop(state);
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::task::noop_waker;

    use super::*;
    use crate::manager::handle::FinalStatus;
    use crate::manager::Failure;
    use crate::testing::WakeCounter;

    fn outcome(id: u64) -> Outcome {
        Err(TaskError {
            id,
            status: FinalStatus::Failed,
            failure: Failure::Cancelled,
            attempts: 1,
            worker: None,
        })
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
        let cells = Arc::clone(&waiter.cells);
        drop(waiter);
        assert!(teller.tell(outcome(5)).0.is_none());
        assert!(matches!(*cells.lock(0), State::WaiterGone));
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
    fn the_cell_stays_small_while_its_task_waits() {
        // A queued task holds its cell. With an 88-byte state `pool-bench mem`
        // measures 170 B a queued task in all, beyond the payload (cells in
        // blocks); issue 10 allows 200 B.
        assert!(std::mem::size_of::<Mutex<State>>() <= 88);
    }

    #[test]
    fn the_cells_of_a_block_are_each_their_own() {
        let mut block = CellBlock::default();
        let (first_teller, mut first) = block.next(3);
        let (second_teller, mut second) = block.next(3);
        let (third_teller, third) = block.next(3);
        let cells = block.cells.clone().expect("started");
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(second_teller.tell(outcome(2)).0.is_none());
        assert!(
            first.poll(&mut cx).is_pending(),
            "told the second, not the first"
        );
        assert_eq!(id_of(second.poll(&mut cx)), Some(2));
        drop(first_teller);
        assert!(
            matches!(first.poll(&mut cx), Poll::Ready(None)),
            "its teller is gone"
        );
        drop(third);
        assert!(third_teller.tell(outcome(3)).0.is_none());
        assert!(matches!(*cells.lock(2), State::WaiterGone));
        assert!(matches!(*cells.lock(1), State::Taken));
    }

    #[test]
    fn a_used_up_block_makes_way_for_a_new_one_of_the_cells_still_wanted() {
        let len = |block: &CellBlock| block.cells.as_ref().map(|cells| cells.len());
        let mut block = CellBlock::default();
        assert_eq!(
            len(&block),
            None,
            "nothing allocated before a cell is wanted"
        );
        let first = block.next(2);
        let _second = block.next(1);
        assert_eq!(len(&block), Some(2));
        let third = block.next(5);
        assert_eq!(len(&block), Some(5), "a new block for what is still wanted");
        assert!(!Arc::ptr_eq(&first.1.cells, &third.1.cells));
        let mut beyond = CellBlock::default();
        let _ = beyond.next(0);
        assert_eq!(len(&beyond), Some(BLOCK_MAX), "none expected: a full block");
        let mut many = CellBlock::default();
        let _ = many.next(10_000);
        assert_eq!(len(&many), Some(BLOCK_MAX), "at most the most");
    }

    #[test]
    fn a_block_lives_until_the_last_side_of_its_cells_goes() {
        let mut block = CellBlock::default();
        let (untold, untold_waiter) = block.next(2);
        let (teller, mut waiter) = block.next(2);
        let watch = Arc::downgrade(block.cells.as_ref().expect("started"));
        drop(block);
        drop(untold);
        drop(untold_waiter);
        assert!(teller.tell(outcome(4)).0.is_none());
        assert!(watch.upgrade().is_some(), "a waiter still holds it");
        let waker = noop_waker();
        assert_eq!(
            id_of(waiter.poll(&mut Context::from_waker(&waker))),
            Some(4)
        );
        drop(waiter);
        assert!(watch.upgrade().is_none(), "freed with the last side");
    }

    #[test]
    fn a_dropped_handle_s_told_outcome_goes_with_it_not_with_the_block() {
        let mut block = CellBlock::default();
        let (teller, waiter) = block.next(2);
        let _neighbour = block.next(2);
        let payload = Bytes::from(vec![7u8; 1024]);
        let told = TaskOutput {
            id: 0,
            payload: payload.clone(),
            attempts: 1,
            worker: Arc::from("worker-1"),
            run_time: Duration::ZERO,
            queue_time: Duration::ZERO,
        };
        assert!(teller.tell(Ok(told)).0.is_none());
        drop(waiter);
        assert!(
            payload.is_unique(),
            "the cell let go of the outcome while its neighbour keeps the block"
        );
    }
}
