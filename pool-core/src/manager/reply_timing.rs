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

    /// Whether a death with `unanswered` tasks leaves unknown which of them ran:
    /// then none of them is blamed, and each runs its next attempt alone.
    pub(crate) fn death_is_ambiguous(self, unanswered: usize) -> bool {
        self == Self::Batched && unanswered > 1
    }
}
