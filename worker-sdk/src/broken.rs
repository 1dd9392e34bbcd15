//! The signal that the link broke (a write failed: the manager is no longer
//! listening), set once by whichever thread's write failed and awaited by the
//! dispatcher in every round of its loop.
//!
//! A `CancellationToken` does the same job, but each poll of its wait takes the
//! lock of its waiter list to update the waker: about 560 instructions in every
//! round of the loop, a tenth of what a worker spends on a task. Here a poll
//! with the waker it was last polled with reads one flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

/// The link broke; shared by the writers and the dispatcher.
#[derive(Debug, Default)]
pub(crate) struct Broken {
    set: AtomicBool,
    waiter: AtomicWaker,
}

impl Broken {
    /// Marks the link broken and wakes the waiting dispatcher.
    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.waiter.wake();
    }

    /// Whether the link broke.
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
}

/// Completes once the link broke. Cancel safe; meant to be kept (pinned) for a
/// whole loop, not made anew each round.
pub(crate) struct WhenBroken {
    broken: Arc<Broken>,
    /// The waker registered last: not registered again while it is the one
    /// polling.
    registered: Option<Waker>,
}

impl WhenBroken {
    pub(crate) fn new(broken: Arc<Broken>) -> Self {
        Self {
            broken,
            registered: None,
        }
    }
}

impl Future for WhenBroken {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let known = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !known {
            self.broken.waiter.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        // Read after the waker is in place: a `set` in between wakes it.
        if self.broken.is_set() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use pool_core::testing::WakeCounter;

    use super::*;

    #[test]
    fn setting_the_signal_on_another_thread_wakes_the_waiting_task() {
        let broken = Arc::new(Broken::default());
        let (woken, waker) = WakeCounter::new();
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(WhenBroken::new(Arc::clone(&broken)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        // Polled again by the same task: still waiting, still woken later.
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        let setter = Arc::clone(&broken);
        std::thread::spawn(move || setter.set())
            .join()
            .expect("setter");
        assert_eq!(woken.count(), 1);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_task_polling_the_wait_is_the_one_woken() {
        let broken = Arc::new(Broken::default());
        let (first, first_waker) = WakeCounter::new();
        let (second, second_waker) = WakeCounter::new();
        let mut wait = Box::pin(WhenBroken::new(Arc::clone(&broken)));
        for waker in [&first_waker, &second_waker] {
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending());
        }
        broken.set();
        assert_eq!(first.count(), 0);
        assert_eq!(second.count(), 1);
    }

    #[test]
    fn a_wait_made_after_the_signal_is_ready_at_once() {
        let broken = Arc::new(Broken::default());
        broken.set();
        let waker = futures_util::task::noop_waker();
        let mut wait = Box::pin(WhenBroken::new(broken));
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
    }
}
