//! A bell: callers ring the actor after queueing tasks; the desk rings a
//! lane after leaving tasks in its worker's batch.

use std::future::poll_fn;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::task::{Context, Poll};

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
