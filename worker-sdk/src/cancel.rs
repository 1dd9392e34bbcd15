//! [`Cancel`]: one task's cancellation signal, shared by the dispatcher (which
//! fires it) and the task's context (which reads it).
//!
//! Most tasks finish in their first poll and are never cancelled: for them a
//! [`CancellationToken`] per task (an allocation, a mutex taken on each clone and
//! drop) was a large share of what the SDK cost. So the signal is a reference-
//! counted cell whose token is made only when someone needs one — a handler that
//! asks for it (or awaits [`TaskContext::cancelled`](crate::TaskContext::cancelled)),
//! or the dispatcher cancelling the task — and the dispatcher gives a finished
//! task's cell to the next task when nothing else holds it any more.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// A task's cancellation signal; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Cancel(Arc<OnceLock<CancellationToken>>);

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("is_cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    /// The token, made now if nobody asked for it before. Every clone gets the
    /// same one, so a cancel fires every token ever handed out.
    pub(crate) fn token(&self) -> &CancellationToken {
        self.0.get_or_init(CancellationToken::new)
    }

    /// Fires the signal (and the token, made now if there was none).
    pub(crate) fn cancel(&self) {
        self.token().cancel();
    }

    /// Whether the signal fired. Without a token nobody cancelled anything.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.get().is_some_and(CancellationToken::is_cancelled)
    }

    /// This cell, unfired and without a token, for another task; `None` while
    /// anyone else (a clone of the finished task's context) still holds it.
    pub(crate) fn reuse(mut self) -> Option<Self> {
        Arc::get_mut(&mut self.0)?.take();
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_fires_tokens_handed_out_before_and_after_it() {
        let cancel = Cancel::default();
        let shared = cancel.clone();
        assert!(!shared.is_cancelled());
        let before = shared.token().clone();
        cancel.cancel();
        assert!(shared.is_cancelled());
        assert!(before.is_cancelled());
        assert!(shared.token().is_cancelled());
    }

    #[test]
    fn debug_shows_whether_it_fired() {
        let cancel = Cancel::default();
        assert_eq!(format!("{cancel:?}"), "Cancel { is_cancelled: false }");
        cancel.cancel();
        assert_eq!(format!("{cancel:?}"), "Cancel { is_cancelled: true }");
    }

    #[test]
    fn a_token_cancelled_by_its_holder_counts_as_cancelled() {
        let cancel = Cancel::default();
        cancel.clone().token().cancel();
        assert!(cancel.is_cancelled());
    }

    #[test]
    fn a_cell_is_reused_only_once_nobody_else_holds_it_and_comes_back_unfired() {
        let cancel = Cancel::default();
        let held = cancel.clone();
        cancel.cancel();
        assert!(cancel.reuse().is_none(), "a clone still holds it");
        let again = held.reuse().expect("the last holder");
        assert!(!again.is_cancelled());
        assert!(!again.token().is_cancelled());
    }
}
