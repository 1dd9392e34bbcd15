//! The ready order of the waiting tasks ([`ReadyOrder`]): queued ones by
//! priority, then by acceptance; retrying ones by their due time until it
//! passes.

use std::collections::BTreeSet;

use task_source::TaskState;

/// Every waiting task's place.
#[derive(Debug, Default)]
pub(super) struct ReadyOrder {
    /// Queued tasks, and retrying ones past their due time: `(priority, seq)`.
    pub(super) ready: BTreeSet<(u8, i64)>,
    /// Retrying tasks not yet moved to `ready`: `(due_ms, priority, seq)`.
    pub(super) due: BTreeSet<(u64, u8, i64)>,
}

impl ReadyOrder {
    /// Puts task `seq` in the order as its `state` says (nowhere unless it
    /// waits).
    pub(super) fn wait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        match state {
            TaskState::Queued => {
                self.ready.insert((priority, seq));
            }
            TaskState::Retrying => {
                self.due.insert((due_ms, priority, seq));
            }
            _ => {}
        }
    }

    /// Takes task `seq` out of the order, where its `state` puts it: only a
    /// waiting task is there ([`wait`](Self::wait)), so a running one, at
    /// every settlement, costs no search of either set. (Should a bug leave
    /// another task's key there, a claim drops it.)
    pub(super) fn unwait(&mut self, seq: i64, state: TaskState, priority: u8, due_ms: u64) {
        if matches!(state, TaskState::Queued | TaskState::Retrying)
            && !self.ready.remove(&(priority, seq))
        {
            self.due.remove(&(due_ms, priority, seq));
        }
    }

    /// Moves the retrying tasks due by `now_ms` to the ready ones.
    pub(super) fn promote_due(&mut self, now_ms: u64) {
        while let Some(&(due_ms, priority, seq)) = self.due.first() {
            if due_ms > now_ms {
                break;
            }
            self.due.remove(&(due_ms, priority, seq));
            self.ready.insert((priority, seq));
        }
    }
}
