//! How far a worker's frames may run ahead of its link.
//!
//! A task taken from the shared queue into a worker's batch leaves the queue
//! for good: while its frame waits in the lane for the link to take it, no
//! other worker can start it, a task of higher priority queued later cannot
//! pass it, and its caller, if it awaits tasks in order, holds the results
//! of the worker that took the tasks after it. With small tasks the window
//! bounds this by itself. With large ones a worker's run slots alone can pin
//! tens of megabytes in the lane (64 slots of 1 MiB), all of it taken from
//! the queue at once and written over many milliseconds. So a task joins a
//! worker's batch only while fewer than [`LINK_AHEAD`] bytes of frames wait
//! for its link (one always does when the link took everything); the rest
//! stay queued until the link took them, when the lane's writer refills the
//! worker at once ([`LinkAhead::take_waited`]), or, for a worker the actor
//! feeds (its results go to the actor), wakes the actor to.
//!
//! The lane's output publishes how far the link took the stream of frames;
//! whoever fills the book (a lane's refill, the actor's dispatch pass, a
//! caller's hand-off) reads it under the book's lock, and marks that it left
//! room for the link. The mark and the position are read and written in
//! opposite orders on the two sides, sequentially consistent, so a writer
//! that catches up just as a filler gives up always sees the mark, or the
//! filler sees the position and fills.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

/// Bytes of frames a worker's batch and output may hold that its link has not
/// taken, before more tasks wait in the queue instead: one pipe's worth as
/// `transport-ipc` asks for them (`DEFAULT_PIPE_SIZE`), so a pipe the worker
/// empties is filled again in one write.
pub(crate) const LINK_AHEAD: usize = 1 << 20;

#[cfg(feature = "test-util")]
thread_local! {
    /// The bound a test set for the pools this thread drives
    /// ([`crate::testing::set_link_ahead`]); 0 for [`LINK_AHEAD`]. Per
    /// thread, so that tests run side by side each keep their own.
    static TEST_BOUND: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Sets the bound for the pools this thread drives (0: [`LINK_AHEAD`]).
#[cfg(feature = "test-util")]
pub(crate) fn set_test_bound(bytes: usize) {
    TEST_BOUND.with(|bound| bound.set(bytes));
}

/// The bound in force: [`LINK_AHEAD`], or the one a test set.
fn bound() -> usize {
    #[cfg(feature = "test-util")]
    {
        let set = TEST_BOUND.with(std::cell::Cell::get);
        if set > 0 {
            return set;
        }
    }
    LINK_AHEAD
}

/// Shared by a worker's book and its output: how far the link took the
/// stream of frames, and whether a filler left room for it.
#[derive(Debug, Default)]
pub(crate) struct LinkAhead {
    /// Bytes of the stream of batched frames the link took.
    taken: AtomicU64,
    /// A filler left room in the worker's window because the bound's bytes
    /// (normally [`LINK_AHEAD`]) waited for the link: the lane's writer refills once it caught up.
    waited: AtomicBool,
}

impl LinkAhead {
    /// The link took the stream's first `taken` bytes (the output, after a
    /// write).
    pub(crate) fn publish(&self, taken: u64) {
        self.taken.store(taken, SeqCst);
    }

    /// Bytes the link may still be given now, with `batched` bytes put in the
    /// batch so far: 0 when the bound's bytes (normally [`LINK_AHEAD`]) wait, in which case the
    /// writer is told to refill once it took them.
    pub(crate) fn room(&self, batched: u64) -> usize {
        let room = || {
            let waiting = batched.saturating_sub(self.taken.load(SeqCst));
            bound().saturating_sub(usize::try_from(waiting).unwrap_or(usize::MAX))
        };
        match room() {
            0 => {
                self.mark_waited();
                // A write that caught up before the mark did not see it.
                room()
            }
            room => room,
        }
    }

    /// A filler stopped for the link: the lane's writer refills once it
    /// took what waits.
    pub(crate) fn mark_waited(&self) {
        self.waited.store(true, SeqCst);
    }

    /// Whether a filler stopped for the link since this was last asked (the
    /// output, after a write that left nothing waiting, and after
    /// [`publish`](Self::publish)).
    pub(crate) fn take_waited(&self) -> bool {
        self.waited.load(SeqCst) && self.waited.swap(false, SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_what_the_link_has_not_taken_under_the_bound() {
        let link = LinkAhead::default();
        assert_eq!(link.room(0), LINK_AHEAD);
        assert_eq!(link.room(1000), LINK_AHEAD - 1000);
        link.publish(1000);
        assert_eq!(link.room(1000), LINK_AHEAD);
        assert!(!link.take_waited(), "nobody stopped for the link");
    }

    #[test]
    fn a_full_link_asks_its_writer_to_refill_once() {
        let link = LinkAhead::default();
        assert_eq!(link.room(LINK_AHEAD as u64 + 5), 0);
        assert!(link.take_waited());
        assert!(!link.take_waited(), "asked once");
    }

    #[test]
    fn a_link_that_took_everything_has_all_its_room_and_no_mark() {
        let link = LinkAhead::default();
        link.publish(3 * LINK_AHEAD as u64);
        assert_eq!(link.room(3 * LINK_AHEAD as u64), LINK_AHEAD);
        assert!(!link.take_waited());
    }
}
