//! One spare buffer per thread for encoding typed results.
//!
//! A typed handler's result is encoded into a `Vec` sized like its input. A fresh
//! `Vec` each time costs an allocation and a free per task (for a small result,
//! about as much as the rest of its encoding); for a large one (1 MiB) it is also
//! fresh memory: glibc hands such blocks back to the system when two of them are
//! free at the top of its heap, and every page of the next one faults again.
//! Instead, the buffer a result was written from is kept (one per thread, up to
//! [`KEEP_MAX`]) and the next result on that thread is encoded into it.

use std::cell::Cell;

use crate::handler::Encoded;

/// A buffer larger than this is not kept (at most this much stays allocated per
/// thread between tasks).
pub(crate) const KEEP_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer with room for `capacity` bytes: this thread's spare when it
/// has one.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let mut buf = SPARE.take();
    buf.clear();
    buf.reserve(capacity);
    buf
}

/// Keeps a written result's buffer for the next result on this thread, if it is
/// an SDK-encoded one of a size worth keeping.
#[inline]
pub(crate) fn give_back(encoded: Encoded) {
    if let Encoded::Vec(buf) = encoded {
        if buf.capacity() <= KEEP_MAX {
            SPARE.set(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        for capacity in [16, 64 * 1024, KEEP_MAX] {
            let buf = take(capacity);
            let at = buf.as_ptr();
            give_back(Encoded::Vec(buf));
            let again = take(capacity - 1);
            assert_eq!(again.as_ptr(), at, "capacity {capacity}");
            assert!(again.is_empty());
            assert!(again.capacity() >= capacity);
        }
    }

    #[test]
    fn huge_and_raw_results_are_not_kept() {
        give_back(Encoded::Vec(Vec::with_capacity(KEEP_MAX + 1)));
        assert_eq!(SPARE.take().capacity(), 0);
        give_back(Encoded::Bytes(bytes::Bytes::from(vec![0u8; 1024])));
        assert_eq!(SPARE.take().capacity(), 0);
    }

    #[test]
    fn a_spare_too_small_grows_to_the_room_asked_for() {
        give_back(Encoded::Vec(Vec::with_capacity(1024)));
        let buf = take(64 * 1024);
        assert!(buf.capacity() >= 64 * 1024);
    }
}
