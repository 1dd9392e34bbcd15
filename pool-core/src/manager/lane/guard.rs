//! The book's lock guard, which leaves behind, as it is let go, how many
//! tasks the worker holds: a hint the desk reads without taking the lock.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::MutexGuard;

use super::Book;

/// What the occupancy hint holds for a worker the queue may not feed
/// (retiring, suspect, running a task alone, its input closed).
pub(crate) const NOT_FED: u32 = u32::MAX;

/// A worker's unanswered tasks as last seen under its book's lock, or
/// [`NOT_FED`]. Written only by [`BookGuard`] as it lets the lock go, so once
/// nobody holds the lock it is exact; while someone does, it may be behind.
/// It only lets the desk skip workers without a free run slot unlocked: a
/// hint that is behind costs a look under the lock, or a task left for the
/// actor's dispatch, never a task.
#[derive(Debug, Default)]
pub(crate) struct Occupancy(AtomicU32);

impl Occupancy {
    /// The last count left behind ([`NOT_FED`] when not fed).
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }
}

/// The book, locked; as it is let go it leaves the worker's occupancy behind.
pub(crate) struct BookGuard<'a> {
    pub(super) book: MutexGuard<'a, Book>,
    pub(super) occupancy: &'a Occupancy,
}

impl Deref for BookGuard<'_> {
    type Target = Book;

    fn deref(&self) -> &Book {
        &self.book
    }
}

impl DerefMut for BookGuard<'_> {
    fn deref_mut(&mut self) -> &mut Book {
        &mut self.book
    }
}

impl Drop for BookGuard<'_> {
    /// Stored while the lock is still held, so the stores follow the lock's
    /// order and the last one is the book as it was left.
    fn drop(&mut self) {
        let held = if self.book.takes_from_queue() {
            u32::try_from(self.book.len()).unwrap_or(NOT_FED - 1)
        } else {
            NOT_FED
        };
        self.occupancy.0.store(held, Relaxed);
    }
}
