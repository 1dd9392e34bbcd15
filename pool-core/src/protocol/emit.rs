//! Writing MessagePack by hand, for the fast paths of the task hot path (the
//! manager's `task` writer and the worker SDK's `result` writer), the
//! counterpart of [`cursor`](super::cursor).
//!
//! A writer first adds up the encoded size of its frame's body with the `*_len`
//! functions, checks it against the frame limit with [`Scratch::frame`] (which
//! starts the fixed bytes with the length prefix), puts the remaining fixed
//! bytes together on the stack in a [`Scratch`] and appends them and the
//! borrowed strings and payloads to the output in a few pieces. Every marker is
//! the smallest form, as `rmp::encode` (and so serde) writes it, so the bytes
//! are exactly serde's.
//!
//! ```
//! use pool_core::protocol::emit::{bin_head_len, Scratch};
//!
//! // The frame of a body holding `bin` b"hi": prefix, marker and length.
//! let len = bin_head_len(2) + 2;
//! let mut head = Scratch::frame(len, 1024).expect("fits");
//! head.bin_head(2);
//! let mut frame = head.bytes().to_vec();
//! frame.extend_from_slice(b"hi");
//! assert_eq!(frame, b"\x00\x00\x00\x04\xc4\x02hi");
//! ```

use super::FrameError;

/// Bytes of the smallest MessagePack unsigned integer holding `v`
/// (what [`Scratch::uint`] writes).
#[inline]
pub fn uint_len(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Bytes of a `str` marker with its length, a fixstr up to 31 bytes (what
/// [`Scratch::str_head`] writes).
#[inline]
pub fn str_head_len(len: usize) -> usize {
    match len {
        0..=0x1f => 1,
        0x20..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Bytes of a `bin` marker with its length (what [`Scratch::bin_head`] writes).
#[inline]
pub fn bin_head_len(len: usize) -> usize {
    match len {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// A few bytes of a frame put together on the stack (at most
/// [`Scratch::CAPACITY`]), appended to the output in one piece.
#[derive(Debug, Clone, Copy)]
pub struct Scratch {
    buf: [u8; Scratch::CAPACITY],
    len: usize,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// The most bytes one `Scratch` holds: a length prefix, a map marker, a
    /// few fixed keys and the markers of the values between them.
    pub const CAPACITY: usize = 48;

    /// An empty buffer.
    #[inline]
    pub const fn new() -> Self {
        Self {
            buf: [0; Self::CAPACITY],
            len: 0,
        }
    }

    /// Starts a frame whose body is `len` bytes: a buffer holding its `u32`
    /// big-endian length prefix.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when `len` exceeds `max_frame` or a `u32`, as
    /// [`encode_frame`](super::encode_frame) reports it.
    #[inline]
    pub fn frame(len: usize, max_frame: usize) -> Result<Self, FrameError> {
        let mut head = Self::new();
        head.put(&frame_prefix(len, max_frame)?);
        Ok(head)
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    /// When the buffer would hold more than [`Scratch::CAPACITY`] bytes (a
    /// writer's fixed pieces are far shorter).
    #[inline]
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The smallest MessagePack unsigned integer holding `v`, as
    /// `rmp::encode::write_uint` writes it ([`uint_len`] bytes).
    #[inline]
    pub fn uint(&mut self, v: u64) {
        if let Ok(small) = u8::try_from(v) {
            if small <= 0x7f {
                self.put(&[small]);
            } else {
                self.put(&[0xcc, small]);
            }
        } else if let Ok(v) = u16::try_from(v) {
            self.put(&[0xcd]);
            self.put(&v.to_be_bytes());
        } else if let Ok(v) = u32::try_from(v) {
            self.put(&[0xce]);
            self.put(&v.to_be_bytes());
        } else {
            self.put(&[0xcf]);
            self.put(&v.to_be_bytes());
        }
    }

    /// A `str` marker and length, as `rmp::encode::write_str_len` writes it
    /// ([`str_head_len`] bytes). `len` fits in a `u32`, as anything inside a
    /// frame checked by [`Scratch::frame`] does.
    #[inline]
    pub fn str_head(&mut self, len: usize) {
        if len <= 0x1f {
            self.put(&[0xa0 | len as u8]);
        } else if let Ok(len) = u8::try_from(len) {
            self.put(&[0xd9, len]);
        } else if let Ok(len) = u16::try_from(len) {
            self.put(&[0xda]);
            self.put(&len.to_be_bytes());
        } else {
            self.put(&[0xdb]);
            self.put(&(len as u32).to_be_bytes());
        }
    }

    /// A `bin` marker and length, as `rmp::encode::write_bin_len` writes it
    /// ([`bin_head_len`] bytes). `len` fits in a `u32`, as anything inside a
    /// frame checked by [`Scratch::frame`] does.
    #[inline]
    pub fn bin_head(&mut self, len: usize) {
        if let Ok(len) = u8::try_from(len) {
            self.put(&[0xc4, len]);
        } else if let Ok(len) = u16::try_from(len) {
            self.put(&[0xc5]);
            self.put(&len.to_be_bytes());
        } else {
            self.put(&[0xc6]);
            self.put(&(len as u32).to_be_bytes());
        }
    }

    /// The bytes put so far.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The `u32` big-endian length prefix of a frame whose body is `len` bytes.
///
/// # Errors
/// [`FrameError::TooLarge`] when `len` exceeds `max_frame` or a `u32`.
#[inline]
pub(super) fn frame_prefix(len: usize, max_frame: usize) -> Result<[u8; 4], FrameError> {
    match u32::try_from(len) {
        Ok(prefix) if len <= max_frame => Ok(prefix.to_be_bytes()),
        _ => Err(FrameError::TooLarge {
            len,
            max: max_frame,
        }),
    }
}

/// The values on either side of each change in the encoded width of an
/// unsigned integer (and of a string's or a byte string's length), and the
/// largest: what a test of a writer built on this module should try.
pub const UINT_EDGES: [u64; 13] = [
    0,
    1,
    0x1f,
    0x20,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_integers_are_written_as_rmp_writes_them_and_their_length_is_right() {
        for v in UINT_EDGES {
            let mut ours = Scratch::new();
            ours.uint(v);
            let mut theirs = Vec::new();
            rmp::encode::write_uint(&mut theirs, v).unwrap();
            assert_eq!(ours.bytes(), theirs, "{v}");
            assert_eq!(uint_len(v), theirs.len(), "{v}");
        }
    }

    #[test]
    fn str_and_bin_heads_are_written_as_rmp_writes_them_and_their_length_is_right() {
        for len in UINT_EDGES.map(|v| usize::try_from(v.min(0xffff_ffff)).unwrap()) {
            let n = u32::try_from(len).unwrap();
            let mut ours = Scratch::new();
            ours.str_head(len);
            let mut theirs = Vec::new();
            rmp::encode::write_str_len(&mut theirs, n).unwrap();
            assert_eq!(ours.bytes(), theirs, "str {len}");
            assert_eq!(str_head_len(len), theirs.len(), "str {len}");
            let mut ours = Scratch::new();
            ours.bin_head(len);
            let mut theirs = Vec::new();
            rmp::encode::write_bin_len(&mut theirs, n).unwrap();
            assert_eq!(ours.bytes(), theirs, "bin {len}");
            assert_eq!(bin_head_len(len), theirs.len(), "bin {len}");
        }
    }

    #[test]
    fn a_frame_starts_with_its_length_and_one_over_the_limit_is_refused() {
        assert_eq!(
            Scratch::frame(0x0102, 0x0102).unwrap().bytes(),
            [0, 0, 1, 2]
        );
        let err = Scratch::frame(0x0103, 0x0102).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 0x0103,
                    max: 0x0102
                }
            ),
            "{err}"
        );
        let over_u32 = usize::try_from(u64::from(u32::MAX) + 1).unwrap();
        let err = Scratch::frame(over_u32, usize::MAX).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == over_u32));
    }

    #[test]
    fn pieces_are_kept_in_order_up_to_the_capacity() {
        let mut head = Scratch::new();
        head.put(b"ab");
        head.uint(300);
        head.put(&[7; Scratch::CAPACITY - 5]);
        assert_eq!(head.bytes().len(), Scratch::CAPACITY);
        assert_eq!(&head.bytes()[..5], b"ab\xcd\x01\x2c");
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_piece_past_the_capacity_panics_instead_of_being_cut() {
        let mut head = Scratch::new();
        head.put(&[0; Scratch::CAPACITY]);
        head.put(b"x");
    }
}
