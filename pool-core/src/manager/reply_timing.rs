//! When a worker writes a finished task's reply, as its `ready` said: what its
//! death tells about which of its tasks ran (`docs/PROTOCOL.md`, "Batched
//! replies").

/// When a worker writes a finished task's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyTiming {
    /// Before it starts any later task (the protocol's rule): when it dies, the
    /// oldest unanswered tasks are the ones that were running.
    BeforeNextTask,
    /// Possibly after later tasks started (`ready.batches_replies`): when it
    /// dies holding more than one unanswered task, which of them ran (and which
    /// one killed it) is unknown.
    Batched,
}

impl ReplyTiming {
    /// What a worker whose `ready` carried `batches_replies` does.
    pub(crate) fn declared(batches_replies: bool) -> Self {
        if batches_replies {
            Self::Batched
        } else {
            Self::BeforeNextTask
        }
    }

    /// Whether a death leaves unknown which of the worker's tasks killed it:
    /// then none of the suspects ([`ReplyTiming::suspects`]) is blamed, and
    /// each runs its next attempt alone. `running` is how many had started
    /// by the pool's count (up to the worker's concurrency) and `unanswered`
    /// how many reached the worker; `culprit_known` says that the pool killed
    /// the worker for one of them (its timeout, or a cancel it ignored).
    ///
    /// A worker that replies before its next task knows of no task that ran
    /// but the running ones: a death is ambiguous when more than one ran at
    /// once and the pool did not name the culprit (a crash, or a freeze that
    /// made it a zombie). One that batches its replies may have run any of its
    /// unanswered tasks, and may have finished some with their replies
    /// unwritten, whatever the pool killed it for.
    pub(crate) fn death_is_ambiguous(
        self,
        running: usize,
        unanswered: usize,
        culprit_known: bool,
    ) -> bool {
        match self {
            Self::BeforeNextTask => running > 1 && !culprit_known,
            Self::Batched => unanswered > 1,
        }
    }

    /// Whether an unanswered attempt of an ambiguous death is a suspect (it
    /// may have run): every one of a worker that batched its replies, and the
    /// running ones of one that did not (those waiting in its prefetch window
    /// never started).
    pub(crate) fn suspects(self, started: bool) -> bool {
        self == Self::Batched || started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_tasks_running_at_once_make_a_death_ambiguous_unless_the_pool_named_the_culprit() {
        let replies = ReplyTiming::BeforeNextTask;
        assert!(
            !replies.death_is_ambiguous(1, 5, false),
            "one ran: it is to blame"
        );
        assert!(replies.death_is_ambiguous(2, 2, false));
        assert!(
            !replies.death_is_ambiguous(3, 3, true),
            "killed for a known task"
        );
        assert!(replies.suspects(true));
        assert!(!replies.suspects(false), "a task in the window never ran");
    }

    #[test]
    fn a_batching_worker_s_death_with_several_unanswered_is_always_ambiguous() {
        let replies = ReplyTiming::Batched;
        assert!(replies.death_is_ambiguous(1, 2, true));
        assert!(!replies.death_is_ambiguous(1, 1, false));
        assert!(replies.suspects(false));
    }
}
