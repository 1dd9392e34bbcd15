//! One spare buffer per thread for encoding large typed results.
//!
//! A typed handler's result is encoded into a `Vec` sized like its input. For a
//! large one (1 MiB), a fresh `Vec` each time is fresh memory: glibc hands such
//! blocks back to the system when two of them are free at the top of its heap,
//! and every page of the next one faults again. Instead, the buffer a large
//! result was written from is kept (one per thread, up to [`KEEP_MAX`]) and the
//! next large result is encoded into it. Results under [`KEEP_MIN`] never touch
//! it: the small path stays as it was.

use std::cell::Cell;

use crate::handler::Encoded;

/// Results of this many bytes or more are encoded into the spare buffer.
pub(crate) const KEEP_MIN: usize = 64 * 1024;
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

/// Keeps a written result's buffer for the next large result on this thread,
/// if it is an SDK-encoded one of a size worth keeping.
#[cold]
#[inline(never)]
pub(crate) fn give_back(encoded: Encoded) {
    if let Encoded::Vec(buf) = encoded {
        if (KEEP_MIN..=KEEP_MAX).contains(&buf.capacity()) {
            SPARE.set(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_given_back_is_the_next_one_taken() {
        let buf = take(KEEP_MIN);
        let at = buf.as_ptr();
        give_back(Encoded::Vec(buf));
        let again = take(KEEP_MIN - 1);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        assert!(again.capacity() >= KEEP_MIN);
    }

    #[test]
    fn small_huge_and_raw_results_are_not_kept() {
        for capacity in [16, KEEP_MAX + 1] {
            give_back(Encoded::Vec(Vec::with_capacity(capacity)));
            assert_eq!(SPARE.take().capacity(), 0, "capacity {capacity}");
        }
        give_back(Encoded::Bytes(bytes::Bytes::from(vec![0u8; KEEP_MIN])));
        assert_eq!(SPARE.take().capacity(), 0);
    }

    #[test]
    fn a_spare_too_small_grows_to_the_room_asked_for() {
        give_back(Encoded::Vec(Vec::with_capacity(KEEP_MIN)));
        let buf = take(2 * KEEP_MIN);
        assert!(buf.capacity() >= 2 * KEEP_MIN);
    }
}
