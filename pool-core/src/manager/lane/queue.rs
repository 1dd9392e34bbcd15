//! The queue of waiting tasks, shared by callers (who add their tasks to it
//! themselves and ring the actor), the actor (which hands them to idle workers
//! and puts retries back) and every lane (which refills its own worker from it
//! as results come back, with no hop through the actor).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::super::actor::Pending;
use super::super::bell::Bell;
use super::super::handoff::Left;
use super::super::metrics::QueueDepth;
use crate::queue::PriorityQueue;

/// The waiting tasks, and whether lanes may take from them on their own.
#[derive(Default)]
pub(crate) struct Waiting {
    pub(crate) tasks: PriorityQueue<Pending>,
    /// The names of the task types callers queued, shared between their tasks.
    names: TypeNames,
    /// Lanes refill from the queue only while nothing is held for a worker of
    /// its type (the actor alone weighs held tasks against queued ones).
    pub(crate) lanes_may_take: bool,
    /// Callers no longer add tasks here (the pool is shutting down, or its
    /// actor is gone): what they submit goes to the actor, which refuses it.
    pub(crate) closed: bool,
}

/// What [`Waiting::pop_if`] found at the head of the queue.
pub(crate) enum Head {
    /// The head, taken.
    Taken(Pending),
    /// The head, left in place: the test refused it.
    Refused,
    Empty,
}

impl Waiting {
    /// Queues a caller's task, its type's name shared with the earlier tasks
    /// of that type (see [`TypeNames`]).
    pub(crate) fn push_new(&mut self, mut pending: Pending) {
        self.names.share(&mut pending.task.task_type);
        self.tasks.push(pending.task.priority, pending);
    }

    /// Its depth, for a metrics snapshot (read there, under the lock, rather
    /// than written to shared gauges by every change).
    pub(crate) fn depth(&self) -> QueueDepth {
        QueueDepth {
            len: self.tasks.len() as u64,
            by_band: self.tasks.depth_by_band().map(|depth| depth as u64),
        }
    }

    /// What the queue leaves for the actor after a hand-off: tasks the desk
    /// may still hand out, or it is closed to callers or holds back from
    /// lanes while tasks are held for a type (the actor decides), or nothing.
    pub(crate) fn left(&self) -> Left {
        if self.closed || !self.lanes_may_take {
            Left::Unknown
        } else if self.tasks.is_empty() {
            Left::Nothing
        } else {
            Left::Tasks
        }
    }

    /// Takes the head of the queue if `test` accepts it, in one step (a lane
    /// may take the head between a separate look and take).
    pub(crate) fn pop_if(&mut self, test: impl FnOnce(&Pending) -> bool) -> Head {
        match self.tasks.peek() {
            None => Head::Empty,
            Some(head) if !test(head) => Head::Refused,
            Some(_) => self.tasks.pop().map_or(Head::Empty, Head::Taken),
        }
    }
}

/// Distinct task types whose names are shared between queued tasks.
const MAX_SHARED_NAMES: usize = 1024;

/// The names of the task types callers queued: every task of a type gets one
/// allocation of its name (up to [`MAX_SHARED_NAMES`] distinct types; beyond,
/// tasks keep their own), so tasks made on many threads hold one copy, and a
/// lane tells the next task's type by its pointer. The last name is compared
/// first: a batch is often of one type.
#[derive(Default)]
struct TypeNames {
    known: HashSet<Arc<str>>,
    last: Option<Arc<str>>,
}

impl TypeNames {
    fn share(&mut self, name: &mut Arc<str>) {
        if let Some(last) = &self.last {
            if Arc::ptr_eq(last, name) {
                return;
            }
            if **last == **name {
                *name = last.clone();
                return;
            }
        }
        if let Some(known) = self.known.get(name) {
            *name = known.clone();
            self.last = Some(known.clone());
        } else if self.known.len() < MAX_SHARED_NAMES {
            self.known.insert(name.clone());
            self.last = Some(name.clone());
        }
    }
}

/// The shared queue: [`Waiting`] behind one lock, and the bell callers ring
/// after adding tasks. A holder of this lock never takes a lane's lock (a lane
/// takes its own, then this one).
#[derive(Clone, Default)]
pub(crate) struct SharedQueue(Arc<Inner>);

impl std::fmt::Debug for SharedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never waits for the lock: a holder may be the one formatting.
        let waiting = self.0.waiting.try_lock().ok().map(|w| w.tasks.len());
        f.debug_struct("SharedQueue")
            .field("waiting", &waiting)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    waiting: Mutex<Waiting>,
    bell: Bell,
}

impl SharedQueue {
    /// The queue, locked (see [`Lane::book`](super::Lane::book) on poisoning).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the actor that tasks were added (rings after adding them).
    pub(crate) fn ring(&self) {
        self.0.bell.ring();
    }

    /// Resolves once the bell rang since it last resolved.
    pub(crate) async fn rung(&self) {
        self.0.bell.rung().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_of_one_type_share_its_name_whichever_allocation_they_came_with() {
        let mut names = TypeNames::default();
        let mut first: Arc<str> = Arc::from("resize");
        names.share(&mut first);
        for other in ["thumb", "resize", "thumb", "resize"] {
            let mut name: Arc<str> = Arc::from(other);
            names.share(&mut name);
            assert_eq!(&*name, other);
            if other == "resize" {
                assert!(Arc::ptr_eq(&name, &first), "a second copy of {other}");
            }
        }
        assert_eq!(names.known.len(), 2);
    }

    #[tokio::test]
    async fn rings_before_the_actor_listens_are_heard_once_and_a_later_one_wakes_it() {
        let queue = SharedQueue::default();
        queue.ring();
        queue.ring();
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.rung())
            .await
            .expect("a ring before listening is heard");
        let mut listening = std::pin::pin!(queue.rung());
        assert!(
            futures_util::poll!(listening.as_mut()).is_pending(),
            "two rings were heard as two"
        );
        let ringer = queue.clone();
        tokio::spawn(async move { ringer.ring() });
        tokio::time::timeout(std::time::Duration::from_secs(5), listening)
            .await
            .expect("a ring while listening wakes the listener");
    }
}
