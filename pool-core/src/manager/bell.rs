//! A bell: callers ring the actor after queueing tasks; the desk rings a
//! lane after leaving tasks in its worker's batch.

use std::future::poll_fn;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

/// A flag and its listener's waker: others ring, one task hears. Rings
/// before it listens count as one, and only the first of them wakes it.
#[derive(Default)]
pub(crate) struct Bell {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl Bell {
    /// Rings: the listener hears it once, now or when it next listens.
    pub(crate) fn ring(&self) {
        if !self.rung.swap(true, AcqRel) {
            self.waker.wake();
        }
    }

    /// Ready (and quiet again) when rung; else the listener's waker is kept,
    /// and a ring that came meanwhile is seen.
    pub(crate) fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.rung.swap(false, Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Resolves once the bell rang since it last resolved.
    pub(crate) async fn rung(&self) {
        poll_fn(|cx| self.poll_rung(cx)).await;
    }
}

/// A listener kept across the rounds of its task's loop: it registers its
/// waker only when the waker changed or a ring took it, where
/// [`Bell::poll_rung`] registers it on every poll (an `AtomicWaker`'s
/// exchange and a clone of the waker).
#[derive(Default)]
pub(crate) struct Listener {
    /// The waker the bell holds for this listener, if it still holds it.
    registered: Option<Waker>,
}

impl Listener {
    /// [`Bell::poll_rung`] for a listener that keeps its registration.
    pub(crate) fn poll_rung(&mut self, bell: &Bell, cx: &mut Context<'_>) -> Poll<()> {
        if bell.rung.swap(false, Acquire) {
            // The ring that set the flag took the waker (`AtomicWaker::wake`).
            self.registered = None;
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        bell.waker.register(cx.waker());
        self.registered = Some(cx.waker().clone());
        if bell.rung.swap(false, Acquire) {
            self.registered = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    use futures_util::task::{waker, ArcWake};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Woken(AtomicUsize);

    impl ArcWake for Woken {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_kept_listener_is_woken_by_every_ring_it_waits_for() {
        let bell = Bell::default();
        let woken = Arc::new(Woken::default());
        let waker = waker(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let mut listener = Listener::default();
        for round in 1..=3 {
            // Polled twice while waiting: registered once, still woken.
            assert!(listener.poll_rung(&bell, &mut cx).is_pending());
            assert!(listener.poll_rung(&bell, &mut cx).is_pending());
            bell.ring();
            assert_eq!(woken.0.load(SeqCst), round, "the ring took the waker");
            assert!(listener.poll_rung(&bell, &mut cx).is_ready());
        }
    }

    #[test]
    fn rings_before_a_listener_polls_count_as_one() {
        let bell = Bell::default();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut listener = Listener::default();
        bell.ring();
        bell.ring();
        assert!(listener.poll_rung(&bell, &mut cx).is_ready());
        assert!(listener.poll_rung(&bell, &mut cx).is_pending());
    }

    #[test]
    fn a_listener_polled_by_another_task_moves_its_waker() {
        let bell = Bell::default();
        let first = Arc::new(Woken::default());
        let second = Arc::new(Woken::default());
        let mut listener = Listener::default();
        for woken in [&first, &second] {
            let waker = waker(Arc::clone(woken));
            assert!(listener
                .poll_rung(&bell, &mut Context::from_waker(&waker))
                .is_pending());
        }
        bell.ring();
        assert_eq!(first.0.load(SeqCst), 0);
        assert_eq!(second.0.load(SeqCst), 1);
    }
}
