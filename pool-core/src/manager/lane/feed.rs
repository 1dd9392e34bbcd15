//! A lane's refill: after its reader settled results, the lane takes tasks
//! from the head of the shared queue into the room they left in its worker's
//! window and writes them at once, so a busy worker is fed without a hop
//! through the actor. The actor still hands tasks to idle workers (where the
//! balance policy picks), routes tasks no lane takes, and holds the rest.

use std::sync::Arc;

use tokio::time::Instant;

use super::super::outbox::Outbox;

use super::super::routing::TaskTypes;
use super::attempt::{Target, Unwritable};
use super::queue::{Head, SharedQueue};
use super::{keep_earliest, Lane};

/// Where a lane refills from, and what it may take.
pub(crate) struct Feed {
    queue: SharedQueue,
    /// The most unanswered tasks its worker holds (`worker_concurrency` plus
    /// `prefetch`).
    window: usize,
    /// Set once the worker is ready: the task types it takes.
    types: Option<TaskTypes>,
    /// The type of the last task it took: the queue shares one allocation of
    /// a type's name between tasks, so the next task of that type is told by
    /// its pointer, without a string comparison.
    last_type: Option<Arc<str>>,
}

/// What one refill did.
#[derive(Default)]
pub(crate) struct Refilled {
    /// The earliest deadline of the attempts that run at once.
    pub(crate) deadline: Option<Instant>,
    /// Queue slots given back by tasks leaving the queue for the first time.
    pub(crate) freed_slots: usize,
    /// Tasks whose frame could not be encoded: to be failed.
    pub(crate) unwritable: Vec<Unwritable>,
    /// The worker has room the lane did not fill although tasks may wait for
    /// it (the lane may not feed it, the actor holds tasks, or the head of the
    /// queue is not for this worker): the actor's dispatch pass decides.
    pub(crate) stalled: bool,
}

impl Feed {
    pub(crate) fn new(queue: SharedQueue, window: usize) -> Self {
        Self {
            queue,
            window,
            types: None,
            last_type: None,
        }
    }

    /// The worker is ready: it takes `types`.
    pub(crate) fn connect(&mut self, types: TaskTypes) {
        self.types = Some(types);
    }

    /// Fills the room in the worker's window from the head of the queue, while
    /// the head is a task the worker takes, and queues what it took in `out`,
    /// after the frames waiting in the book's batch (under the lane's lock, so
    /// the worker reads its tasks in the book's order). Nothing when the actor
    /// stopped the lane feeding, or before the worker is ready.
    pub(crate) fn refill(
        &mut self,
        lane: &Lane,
        target: &Target<'_>,
        out: &mut Outbox,
    ) -> Refilled {
        let mut refilled = Refilled {
            stalled: true,
            ..Refilled::default()
        };
        let Some(types) = &self.types else {
            return refilled;
        };
        let mut book = lane.book();
        if book.len() >= self.window {
            refilled.stalled = false;
            return refilled;
        }
        if !book.feeds || book.runs_alone() {
            return refilled;
        }
        let now = Instant::now();
        {
            // The lane's lock, then the queue's: never the other way round.
            let mut waiting = self.queue.lock();
            if !waiting.lanes_may_take {
                return refilled;
            }
            while book.len() < self.window {
                let last = &self.last_type;
                let head = waiting.pop_if(|p| {
                    let task_type = &p.task.task_type;
                    book.may_take(p)
                        && (last.as_ref().is_some_and(|t| Arc::ptr_eq(t, task_type))
                            || types.accepts(task_type))
                });
                let Head::Taken(pending) = head else {
                    break;
                };
                if !last
                    .as_ref()
                    .is_some_and(|t| Arc::ptr_eq(t, &pending.task.task_type))
                {
                    self.last_type = Some(pending.task.task_type.clone());
                }
                match book.start_attempt(target, pending, now) {
                    Ok(written) => {
                        refilled.freed_slots += usize::from(written.freed_slot);
                        if let Some(deadline) = written.deadline {
                            if book.needs_timer(deadline) {
                                keep_earliest(&mut refilled.deadline, deadline);
                            }
                        }
                    }
                    Err(failed) => refilled.unwritable.push(*failed),
                }
            }
            refilled.stalled = book.len() < self.window && !waiting.tasks.is_empty();
            waiting.publish(&target.shared.stats);
        }
        book.flush(|piece| out.push(piece));
        refilled
    }
}
