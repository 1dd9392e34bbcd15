//! [`Completions`]: one channel that receives the outcomes of many tasks, for
//! callers that submit in bulk and want no handle (and no wake-up) per task.
//!
//! The channel is an inbox under one lock. A lane does not send each outcome
//! on its own: it keeps the outcomes a read settled ([`Deliveries`]) and hands
//! them over under one lock, waking the receiver once. A channel with a send
//! per outcome made every outcome fight over the channel's shared counters
//! between the lanes and the receiver, and woke the receiver for each: bulk
//! callers ran slower than with a handle a task.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use super::handle::{TaskError, TaskOutput};

/// A task's outcome as [`Completions`] delivers it: the task's id is in both
/// [`TaskOutput::id`] and [`TaskError::id`].
pub type Completion = Result<TaskOutput, TaskError>;

/// Where the outcomes of tasks submitted with
/// [`Pool::submit_each_to`](super::Pool::submit_each_to) arrive: each accepted
/// task's outcome exactly once, as the pool settles it (a worker's results a
/// read's worth at a time, in the order that read settled them).
///
/// Cheaper per task than a [`TaskHandle`](super::TaskHandle) each: no answer
/// cell of its own, and a caller woken once for the outcomes a worker's read
/// settled together. Cancel a task with [`Pool::cancel`](super::Pool::cancel);
/// it then arrives here as a [`FinalStatus::Cancelled`](super::FinalStatus)
/// error (unless it finished first). Outcomes that arrive after the channel
/// was dropped are dropped.
///
/// ```
/// # #[allow(dead_code)]
/// # async fn demo(pool: pool_core::Pool) {
/// use pool_core::{Completions, Task};
///
/// let mut done = Completions::new();
/// let tasks = (0..3u32).map(|n| Task::msgpack("echo", &n).expect("a u32 encodes"));
/// let ids: Vec<u64> = pool
///     .submit_each_to(tasks, &done.sink())
///     .await
///     .into_iter()
///     .filter_map(Result::ok)
///     .collect();
/// let mut outcomes = Vec::new();
/// while outcomes.len() < ids.len() {
///     done.recv_many(&mut outcomes, 64).await;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Completions {
    inbox: Arc<Inbox>,
}

impl Default for Completions {
    fn default() -> Self {
        Self::new()
    }
}

impl Completions {
    /// An empty channel of outcomes.
    pub fn new() -> Self {
        Self {
            inbox: Arc::new(Inbox::default()),
        }
    }

    /// Waits for at least one outcome, then appends every one that is there
    /// (at most `limit`) to `buf`; returns how many it appended. Waits forever
    /// when no submitted task is left to settle.
    ///
    /// # Cancel safety
    /// Cancel safe: no outcome is lost when the future is dropped.
    pub async fn recv_many(&mut self, buf: &mut Vec<Completion>, limit: usize) -> usize {
        let limit = limit.max(1);
        // A loop that always finds outcomes waiting still lets the runtime's
        // other tasks run, as a tokio channel's receiver does.
        tokio::task::coop::consume_budget().await;
        poll_fn(|cx| {
            let mut inbox = self.inbox.lock();
            if inbox.outcomes.is_empty() {
                if !inbox
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inbox.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let taken = limit.min(inbox.outcomes.len());
            buf.extend(inbox.outcomes.drain(..taken));
            Poll::Ready(taken)
        })
        .await
    }

    /// An outcome that has arrived, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<Completion> {
        self.inbox.lock().outcomes.pop_front()
    }

    /// Where tasks are submitted to be answered here: give it to
    /// [`Pool::submit_each_to`](super::Pool::submit_each_to), from any task.
    pub fn sink(&self) -> CompletionSink {
        CompletionSink(Arc::clone(&self.inbox))
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        let left = {
            let mut inbox = self.inbox.lock();
            inbox.listening = false;
            std::mem::take(&mut inbox.outcomes)
        };
        // Dropped outside the lock: an outcome's payload may be anything.
        drop(left);
    }
}

/// The sending side of a [`Completions`] channel (cheap to clone).
#[derive(Debug, Clone)]
pub struct CompletionSink(Arc<Inbox>);

impl CompletionSink {
    /// The inbox one task is answered in.
    pub(crate) fn inbox(&self) -> Arc<Inbox> {
        Arc::clone(&self.0)
    }
}

/// What a [`Completions`] channel and its sinks share.
#[derive(Debug)]
pub(crate) struct Inbox(Mutex<InboxState>);

/// A [`Completions`] channel's state, under its inbox's lock.
#[derive(Debug)]
struct InboxState {
    /// Delivered, not yet received.
    outcomes: VecDeque<Completion>,
    /// The receiver's waker while it waits.
    waker: Option<Waker>,
    /// False once the [`Completions`] was dropped: nothing is kept any more.
    listening: bool,
}

impl Default for Inbox {
    fn default() -> Self {
        Self(Mutex::new(InboxState {
            outcomes: VecDeque::new(),
            waker: None,
            listening: true,
        }))
    }
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // Every change under the lock leaves the state whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `outcomes` in (or drops them, when nobody listens); the
    /// receiver's waker, if it waits, is returned to wake.
    pub(crate) fn deliver(&self, outcomes: impl Iterator<Item = Completion>) -> Option<Waker> {
        let mut inbox = self.lock();
        if !inbox.listening {
            drop(inbox);
            outcomes.for_each(drop);
            return None;
        }
        inbox.outcomes.extend(outcomes);
        inbox.waker.take()
    }
}

/// Outcomes a lane settled for [`Completions`] channels, handed over together
/// by [`flush`](Deliveries::flush) once the lane let go of its book's lock:
/// each run of outcomes for one inbox under one lock of it and one wake.
#[derive(Default)]
pub(crate) struct Deliveries {
    /// The outcomes kept, in the order they were settled.
    outcomes: Vec<Completion>,
    /// Where they go: each inbox with how many of the next outcomes are its.
    runs: Vec<(Arc<Inbox>, usize)>,
}

impl Deliveries {
    /// Keeps `outcome` for `to`. Touches no lock: it runs under a book's.
    pub(crate) fn add(&mut self, to: Arc<Inbox>, outcome: Completion) {
        match self.runs.last_mut() {
            Some((last, count)) if Arc::ptr_eq(last, &to) => *count += 1,
            _ => self.runs.push((to, 1)),
        }
        self.outcomes.push(outcome);
    }

    /// Hands the kept outcomes over and wakes their receivers.
    pub(crate) fn flush(&mut self) {
        let mut outcomes = self.outcomes.drain(..);
        for (to, count) in self.runs.drain(..) {
            if let Some(waker) = to.deliver(outcomes.by_ref().take(count)) {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Context;

    use super::*;
    use crate::testing::{failed_outcome as failed, WakeCounter};

    fn id(outcome: &Completion) -> u64 {
        match outcome {
            Ok(output) => output.id,
            Err(error) => error.id,
        }
    }

    /// One poll of `recv_many` into `buf` (at most 2), with `waker`.
    fn poll_once(done: &mut Completions, buf: &mut Vec<Completion>, waker: &Waker) -> Poll<usize> {
        let mut cx = Context::from_waker(waker);
        let fut = done.recv_many(buf, 2);
        let mut fut = std::pin::pin!(fut);
        fut.as_mut().poll(&mut cx)
    }

    #[test]
    fn a_run_for_one_inbox_arrives_in_order_with_one_wake() {
        let mut done = Completions::new();
        let (counter, waker) = WakeCounter::new();
        let mut buf = Vec::new();
        assert!(poll_once(&mut done, &mut buf, &waker).is_pending());
        let mut kept = Deliveries::default();
        for n in 1..=3 {
            kept.add(done.sink().inbox(), failed(n));
        }
        assert_eq!(counter.count(), 0, "nothing handed over yet");
        kept.flush();
        assert_eq!(counter.count(), 1, "one wake for the run");
        assert_eq!(
            poll_once(&mut done, &mut buf, &waker),
            Poll::Ready(2),
            "at most the limit"
        );
        assert_eq!(done.try_recv().as_ref().map(id), Some(3));
        assert_eq!(buf.iter().map(id).collect::<Vec<_>>(), [1, 2]);
        assert!(done.try_recv().is_none());
    }

    #[test]
    fn outcomes_for_two_inboxes_wait_for_the_flush_and_each_reach_their_own() {
        let (mut a, mut b) = (Completions::new(), Completions::new());
        let mut kept = Deliveries::default();
        kept.add(a.sink().inbox(), failed(1));
        kept.add(b.sink().inbox(), failed(2));
        kept.add(a.sink().inbox(), failed(3));
        assert!(
            a.try_recv().is_none() && b.try_recv().is_none(),
            "nothing handed over before the flush (a lane keeps them under its book's lock)"
        );
        kept.flush();
        let ids = |done: &mut Completions| {
            std::iter::from_fn(|| done.try_recv())
                .map(|o| id(&o))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut a), [1, 3]);
        assert_eq!(ids(&mut b), [2]);
    }

    #[test]
    fn outcomes_for_a_dropped_channel_are_not_kept() {
        let done = Completions::new();
        let sink = done.sink();
        drop(done);
        let mut kept = Deliveries::default();
        kept.add(sink.inbox(), failed(1));
        kept.flush();
        assert!(sink.0.lock().outcomes.is_empty());
    }
}
