//! The worker's framing of what the manager writes: [`FrameCodec`]'s, with
//! each large frame read into a buffer of its own.
//!
//! A frame is handed on as a slice of the buffer it was read into, and a
//! task's payload as a slice of its frame. A handler that wants its input as
//! an owned buffer (a `serde_bytes::ByteBuf`) can have that buffer without a
//! copy only when nothing else holds the memory it lies in: not the read
//! buffer, not a frame read after it. So a frame of [`APART_MIN`] bytes or
//! more is read into a buffer of exactly its size, and handed out whole; the
//! next read goes into a new buffer. Smaller frames share read buffers as
//! [`FrameCodec`] reads them.

use bytes::{Buf, Bytes, BytesMut};
use pool_core::protocol::{FrameCodec, FrameError};
use tokio_util::codec::Decoder;

use crate::dispatch::APART_MIN;

/// The length prefix of a frame.
const PREFIX: usize = 4;
/// The room reads get after a large frame was handed out whole (what
/// `FramedRead` starts with): the next read brings at least the next frame's
/// length.
const READ_AFTER: usize = 8 * 1024;

/// [`FrameCodec`], with large frames in buffers of their own (see the module
/// doc). A stateless `Copy` value, as [`FrameCodec`] is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskFrames {
    frames: FrameCodec,
}

impl TaskFrames {
    /// Frames of at most `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> Self {
        Self {
            frames: FrameCodec::new(max_frame),
        }
    }
}

impl Decoder for TaskFrames {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.frames.frame_len(src)? else {
            return Ok(None);
        };
        // A small frame, as `FrameCodec` reads it.
        if len < APART_MIN {
            return Ok(FrameCodec::take_frame(src, len));
        }
        let whole = PREFIX + len;
        match src.len() {
            // All of it, and nothing after it: the buffer is the frame's alone.
            read if read == whole => {
                let mut frame = std::mem::replace(src, BytesMut::with_capacity(READ_AFTER));
                frame.advance(PREFIX);
                Ok(Some(frame.freeze()))
            }
            // More after it (a buffer that had room to spare): shared, as
            // `FrameCodec` shares it.
            read if read > whole => Ok(FrameCodec::take_frame(src, len)),
            // Part of it: the rest is read into a buffer of exactly its size.
            _ => {
                if src.capacity() < whole {
                    let mut own = BytesMut::with_capacity(whole);
                    own.extend_from_slice(src);
                    *src = own;
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => self.frames.decode_eof(src),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).expect("a test frame fits");
        [&len.to_be_bytes()[..], body].concat()
    }

    /// Feeds `stream` to the codec `chunk` bytes at a time, as reads would;
    /// the frames it hands out.
    fn read_in_chunks(stream: &[u8], chunk: usize) -> Vec<Bytes> {
        let mut codec = TaskFrames::new(4 * APART_MIN);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                // A read fills what room the buffer has, as a pipe read would.
                if buf.capacity() == buf.len() {
                    buf.reserve(chunk);
                }
                let room = (buf.capacity() - buf.len()).min(piece.len());
                buf.extend_from_slice(&piece[..room]);
                piece = &piece[room..];
                while let Some(frame) = codec.decode(&mut buf).expect("well framed") {
                    frames.push(frame);
                }
            }
        }
        assert!(buf.is_empty(), "every byte framed");
        frames
    }

    #[test]
    fn frames_of_every_size_come_out_as_they_went_in() {
        let bodies: Vec<Vec<u8>> = [3, APART_MIN - 1, APART_MIN, 10, 2 * APART_MIN + 5, 0, 7]
            .iter()
            .zip(1u8..)
            .map(|(&len, fill)| vec![fill; len])
            .collect();
        let stream: Vec<u8> = bodies.iter().flat_map(|b| framed(b)).collect();
        for chunk in [1000, 4096, 65_536, stream.len()] {
            let frames = read_in_chunks(&stream, chunk);
            let got: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            let want: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
            assert_eq!(got, want, "read {chunk} bytes at a time");
        }
    }

    #[test]
    fn a_large_frame_is_the_only_holder_of_its_buffer() {
        let body = vec![5u8; APART_MIN + 100];
        let stream: Vec<u8> = [framed(&body), framed(b"after")].concat();
        let mut frames = read_in_chunks(&stream, 8192).into_iter();
        let large = frames.next().expect("the large frame");
        assert_eq!(&large[..], &body[..]);
        // Unique: turning it into a `Vec` reuses its memory.
        let at = large.as_ptr();
        let owned = Vec::from(large);
        assert_eq!(owned.len(), body.len());
        assert!(
            owned.as_ptr() <= at && at as usize - owned.as_ptr() as usize == PREFIX,
            "the frame's own buffer, not a copy"
        );
        assert_eq!(frames.next().as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn a_frame_above_the_maximum_is_refused_as_frame_codec_refuses_it() {
        let mut codec = TaskFrames::new(APART_MIN);
        let mut buf = BytesMut::from(&framed(&vec![0u8; APART_MIN + 1])[..8]);
        let ours = codec.decode(&mut buf).map_err(|e| e.to_string());
        let mut buf = BytesMut::from(&framed(&vec![0u8; APART_MIN + 1])[..8]);
        let theirs = FrameCodec::new(APART_MIN)
            .decode(&mut buf)
            .map_err(|e| e.to_string());
        assert_eq!(ours, theirs);
        assert!(ours.is_err());
    }

    #[test]
    fn a_large_frame_cut_short_by_the_end_of_input_is_truncated() {
        let mut codec = TaskFrames::new(4 * APART_MIN);
        let mut buf = BytesMut::from(&framed(&vec![0u8; APART_MIN])[..100]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { .. })
        ));
    }
}
