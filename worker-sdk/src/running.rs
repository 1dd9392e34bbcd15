//! The tasks a worker runs on tokio tasks of their own (handlers that had to
//! wait): their cancellation signals by task id, their task ids by tokio id,
//! and whether each has written its reply.
//!
//! A task that replied is done as far as the manager knows, which may send the
//! same id again at once (a retry with no backoff) while the tokio task is
//! still winding down, not yet reaped. Such a task is let go when its id comes
//! again: it is no longer counted, its id is free, and its reaping later
//! touches nothing of the new task's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use crate::cancel::Cancel;

/// A task on its own tokio task.
struct Spawned {
    cancel: Cancel,
    /// Set by the task just before it writes its reply.
    replied: Replied,
    tokio_id: Id,
}

/// Whether a spawned task has written its reply: set by the task, read by the
/// dispatcher.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replied(Arc<AtomicBool>);

impl Replied {
    /// Marks the reply as written; called before writing it, so that the
    /// same id read after the reply always finds it set.
    pub(crate) fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The tasks in flight on tokio tasks of their own.
#[derive(Default)]
pub(crate) struct Running {
    set: JoinSet<()>,
    by_task: HashMap<u64, Spawned>,
    ids: HashMap<Id, u64>,
    /// The signal of a task that finished in its first poll, for the next task
    /// (see [`Cancel::reuse`]).
    pub(crate) spare: Option<Cancel>,
}

impl Running {
    /// Tasks holding a run slot: those that have not been let go.
    pub(crate) fn len(&self) -> usize {
        self.by_task.len()
    }

    /// Whether no tokio task is left, let-go ones included.
    pub(crate) fn is_idle(&self) -> bool {
        self.set.is_empty()
    }

    /// Runs task `id`'s `future` on a tokio task of its own, its cancellation
    /// signal `cancel`; `replied` is what the future marks before it writes
    /// its reply.
    pub(crate) fn spawn<F>(&mut self, id: u64, cancel: Cancel, replied: Replied, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let tokio_id = self.set.spawn(future).id();
        self.by_task.insert(
            id,
            Spawned {
                cancel,
                replied,
                tokio_id,
            },
        );
        self.ids.insert(tokio_id, id);
    }

    /// The next tokio task to end (pending while none runs).
    pub(crate) async fn join_next(&mut self) -> Option<Result<(Id, ()), JoinError>> {
        self.set.join_next_with_id().await
    }

    /// Drops the entries of a tokio task that ended (none when it was let go).
    pub(crate) fn forget(&mut self, joined: Result<(Id, ()), JoinError>) {
        let tokio_id = match joined {
            Ok((id, ())) => id,
            Err(e) => e.id(),
        };
        if let Some(task_id) = self.ids.remove(&tokio_id) {
            self.by_task.remove(&task_id);
        }
    }

    /// Whether task `id` runs here and has not replied yet. One that replied
    /// is let go now (see the module doc).
    pub(crate) fn holds_unanswered(&mut self, id: u64) -> bool {
        if !self.by_task.contains_key(&id) {
            return false;
        }
        self.reap_finished();
        match self.by_task.get(&id) {
            None => false,
            Some(spawned) if spawned.replied.is_set() => {
                if let Some(spawned) = self.by_task.remove(&id) {
                    self.ids.remove(&spawned.tokio_id);
                }
                false
            }
            Some(_) => true,
        }
    }

    /// Fires task `id`'s cancellation signal; false when it does not run here.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        self.by_task
            .get(&id)
            .map(|spawned| spawned.cancel.cancel())
            .is_some()
    }

    /// Fires every running task's cancellation signal.
    pub(crate) fn cancel_all(&self) {
        for spawned in self.by_task.values() {
            spawned.cancel.cancel();
        }
    }

    /// Forgets every tokio task that has ended by now.
    fn reap_finished(&mut self) {
        while let Some(joined) = self.set.try_join_next_with_id() {
            self.forget(joined);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that replied and is not reaped yet is let go when its id comes
    /// again; one that has not replied is still held; the let-go task's end
    /// drops nothing of the entry made for its id since.
    #[tokio::test]
    async fn a_task_that_replied_is_let_go_when_its_id_comes_again() {
        let mut running = Running::default();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let replied = Replied::default();
        let marks = replied.clone();
        running.spawn(7, Cancel::default(), replied, async move {
            marks.mark();
            let _ = wait.await;
        });
        let (_keep, pending) = tokio::sync::oneshot::channel::<()>();
        running.spawn(8, Cancel::default(), Replied::default(), async move {
            let _ = pending.await;
        });
        tokio::task::yield_now().await;
        while !running.by_task[&7].replied.is_set() {
            tokio::task::yield_now().await;
        }
        assert!(running.holds_unanswered(8));
        assert!(!running.holds_unanswered(7));
        assert_eq!(running.len(), 1);
        // Its retry runs under the same id; the old task's end leaves it.
        running.spawn(7, Cancel::default(), Replied::default(), async {
            std::future::pending::<()>().await;
        });
        release.send(()).unwrap();
        let joined = running.join_next().await.unwrap();
        running.forget(joined);
        assert!(running.holds_unanswered(7));
        assert!(running.cancel(7));
        assert_eq!(running.len(), 2);
    }
}
