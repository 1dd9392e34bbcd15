//! The task ledger: the one place a task is settled. A task's answer channel
//! ([`Answer`]) can only be used through this module, and each way of settling
//! consumes it, so a task is answered at most once by construction; each
//! outcome is counted before the caller is told, so the counters and the
//! answers cannot disagree: a failure (failed, cancelled, dead-lettered) here,
//! a completion by its lane, whose proof ([`Counted`]) completing takes.

use std::sync::Arc;

use super::completions::{Completion, Inbox};
use super::handle::{FinalStatus, TaskError};
use super::metrics::Stats;
use super::outcome_cell::{outcome_cell, Held, HeldOutput, Teller, Waiter, Wake, Wakes};
use super::tally::Counted;
use super::Failure;

/// The caller's side of one task: answered exactly once, by [`completed`] or
/// [`failed`](Answer::failed), through its own handle's channel or through a
/// [`Completions`](super::Completions) channel shared by many tasks.
///
/// An answer dropped untold (its task was dropped with a pool that stopped
/// working: a panicked actor, a lane gone) still ends its task for the
/// caller: the handle, or the channel, hears "shutting down". Only a task the
/// pool never accepted is let go without a word ([`withdraw`](Answer::withdraw)):
/// its caller had the refusal from the submit.
///
/// [`completed`]: Answer::completed
pub(crate) enum Answer {
    /// The task's [`TaskHandle`](super::TaskHandle) waits on this.
    Handle(Teller),
    /// The task was submitted with [`Pool::submit_each_to`](super::Pool::submit_each_to).
    Shared(SharedAnswer),
}

/// A task's place in a shared [`Completions`](super::Completions) channel:
/// its inbox and the task's id, for the outcome it is given when dropped
/// untold. The id is `None` once the outcome was handed over (task ids start
/// at 1, so the answer is as small as a handle's and `Pending` stays small).
pub(crate) struct SharedAnswer {
    inbox: Arc<Inbox>,
    id: Option<std::num::NonZeroU64>,
}

impl SharedAnswer {
    /// The answer of task `id` through `inbox`.
    pub(crate) fn new(inbox: Arc<Inbox>, id: u64) -> Self {
        Self {
            inbox,
            id: std::num::NonZeroU64::new(id),
        }
    }

    /// The inbox, for the outcome: nothing is left for `drop` to say.
    fn take(mut self) -> Arc<Inbox> {
        self.id = None;
        Arc::clone(&self.inbox)
    }
}

impl Drop for SharedAnswer {
    /// Dropped untold: the channel hears the task ended "shutting down", as a
    /// handle whose answer was dropped does.
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let gone = Err(TaskError {
                id: id.get(),
                status: FinalStatus::Failed,
                failure: Failure::ShuttingDown,
                attempts: 0,
                worker: None,
            });
            if let Some(waker) = self.inbox.deliver(std::iter::once(gone)) {
                waker.wake();
            }
        }
    }
}

impl Answer {
    /// A new answer and the side its task handle waits on.
    pub(crate) fn new() -> (Self, Waiter) {
        let (teller, waiter) = outcome_cell();
        (Self::Handle(teller), waiter)
    }

    /// Settles the task with its result, its completion `counted` by its lane;
    /// the caller is woken (or its `Completions` channel handed the outcome)
    /// with the others of `wakes`.
    #[inline]
    pub(crate) fn completed(
        self,
        _counted: Counted,
        id: u64,
        output: HeldOutput,
        wakes: &mut Wakes,
    ) {
        match self {
            Self::Handle(teller) => teller.tell_held(Held::Output(output)).keep_in(wakes),
            Self::Shared(answer) => {
                wakes.deliver(answer.take(), Held::Output(output).into_outcome(id))
            }
        }
    }

    /// Lets go of a task the pool never accepted: its caller was refused by
    /// the submit itself, so its channel hears nothing of it.
    pub(crate) fn withdraw(self) {
        match self {
            Self::Handle(teller) => drop(teller),
            Self::Shared(answer) => drop(answer.take()),
        }
    }

    /// Settles the task without a result, counted by how it ended.
    pub(crate) fn failed(self, stats: &Stats, error: TaskError) {
        Stats::bump(match error.status {
            FinalStatus::Cancelled => &stats.cancelled,
            FinalStatus::DeadLettered => &stats.dead_lettered,
            FinalStatus::Failed | FinalStatus::Exhausted => &stats.failed,
        });
        self.tell(Err(error)).now();
    }

    /// Hands the outcome over. A caller that stopped listening (dropped its
    /// handle or its channel) is not waiting: nothing to tell.
    fn tell(self, outcome: Completion) -> Wake {
        match self {
            Self::Handle(teller) => teller.tell(outcome),
            Self::Shared(answer) => Wake::of(answer.take().deliver(std::iter::once(outcome))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::manager::handle::Outcome;

    fn error(status: FinalStatus) -> TaskError {
        TaskError {
            id: 1,
            status,
            failure: Failure::Cancelled,
            attempts: 1,
            worker: None,
        }
    }

    /// The outcome the handle's side holds, without waiting.
    fn told(waiter: &mut Waiter) -> Option<Outcome> {
        let waker = futures_util::task::noop_waker();
        match waiter.poll(&mut std::task::Context::from_waker(&waker)) {
            std::task::Poll::Ready(told) => told.map(|held| held.into_outcome(1)),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn each_outcome_is_counted_once_before_the_caller_hears_it() {
        let stats = Stats::new();
        let mut lane = stats.tallies.writer(1);
        let (answer, mut rx) = Answer::new();
        let mut wakes = Wakes::default();
        answer.completed(
            lane.completed(0),
            1,
            HeldOutput {
                payload: bytes::Bytes::new(),
                attempts: 1,
                worker: "worker-0".into(),
                run_ns: 0,
                queue_ns: 0,
            },
            &mut wakes,
        );
        wakes.wake_all();
        assert!(matches!(told(&mut rx).map(|o| o.is_ok()), Some(true)));
        assert_eq!(stats.tallies.totals().completed, 1);
        for status in [
            FinalStatus::Cancelled,
            FinalStatus::DeadLettered,
            FinalStatus::Failed,
            FinalStatus::Exhausted,
        ] {
            let (answer, mut rx) = Answer::new();
            answer.failed(&stats, error(status));
            let got = told(&mut rx).map(|o| o.err().map(|e| e.status));
            assert!(matches!(got, Some(Some(s)) if s == status), "{status:?}");
        }
        assert_eq!(stats.cancelled.load(Relaxed), 1);
        assert_eq!(stats.dead_lettered.load(Relaxed), 1);
        assert_eq!(stats.failed.load(Relaxed), 2);
        assert_eq!(stats.tallies.totals().completed, 1);
    }

    #[test]
    fn a_shared_answer_dropped_untold_ends_its_task_and_a_withdrawn_one_says_nothing() {
        let mut done = crate::Completions::new();
        let sink = done.sink();
        drop(Answer::Shared(SharedAnswer::new(sink.inbox(), 7)));
        let err = done
            .try_recv()
            .expect("the dropped answer's task ended")
            .expect_err("without a result");
        assert_eq!(
            (err.id, err.status, err.failure.kind(), err.attempts),
            (7, FinalStatus::Failed, "shutting_down", 0)
        );
        Answer::Shared(SharedAnswer::new(sink.inbox(), 8)).withdraw();
        let stats = Stats::new();
        Answer::Shared(SharedAnswer::new(sink.inbox(), 9))
            .failed(&stats, error(FinalStatus::Failed));
        let told = done.try_recv().expect("the failed task's outcome");
        assert_eq!(
            told.expect_err("failed").id,
            1,
            "the outcome told, not a second one"
        );
        assert!(
            done.try_recv().is_none(),
            "a withdrawn or told answer adds nothing"
        );
    }

    #[test]
    fn a_caller_that_dropped_its_handle_is_still_counted() {
        let stats = Stats::new();
        let (answer, rx) = Answer::new();
        drop(rx);
        answer.failed(&stats, error(FinalStatus::Failed));
        assert_eq!(stats.failed.load(Relaxed), 1);
    }
}
