//! Length-prefixed framing and MessagePack encoding, once for every transport.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio_util::codec::Decoder;

use super::{FrameError, FromWorker, ToWorker};

/// Default maximum frame body: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

const PREFIX: usize = 4;

/// Splits a byte stream into frame bodies.
///
/// The length is checked against the maximum *before* any buffer is reserved for
/// the body, so a corrupt or hostile prefix cannot make the reader allocate.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec that refuses bodies longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// The configured maximum body length.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The body length the frame leading `src` announces, once its length
    /// prefix is in (`None` before); refused past the maximum.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a length above the maximum.
    #[inline(always)]
    pub fn frame_len(&self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(&[a, b, c, d]) = src.get(..PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(Some(len))
    }

    /// The body of the frame leading `src`, of `len` bytes
    /// ([`frame_len`](Self::frame_len)), split off `src` when it is all
    /// there; else room is reserved for the rest of it.
    #[inline(always)]
    pub fn take_frame(src: &mut BytesMut, len: usize) -> Option<Bytes> {
        if src.len() < PREFIX + len {
            src.reserve(PREFIX + len - src.len());
            return None;
        }
        src.advance(PREFIX);
        Some(src.split_to(len).freeze())
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        Ok(self
            .frame_len(src)?
            .and_then(|len| Self::take_frame(src, len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let expected = if src.len() >= PREFIX {
                    PREFIX + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                } else {
                    PREFIX
                };
                Err(FrameError::Truncated {
                    expected,
                    got: src.len(),
                })
            }
        }
    }
}

/// Appends one frame (prefix and MessagePack body) holding `message` to `dst`.
///
/// The body is written straight into `dst`, so a payload is copied exactly once.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body exceeds `max_frame` (then `dst` is left as
/// it was), [`FrameError::Malformed`] when the value cannot be encoded.
pub fn encode_frame<T: Serialize + ?Sized>(
    message: &T,
    dst: &mut BytesMut,
    max_frame: usize,
) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = dst.writer();
    let encoded = rmp_serde::encode::write_named(&mut writer, message);
    let dst = writer.into_inner();
    if let Err(e) = encoded {
        dst.truncate(start);
        return Err(FrameError::Malformed(e.to_string()));
    }
    let len = dst.len() - start - PREFIX;
    match super::emit::frame_prefix(len, max_frame) {
        Ok(prefix) => {
            dst[start..start + PREFIX].copy_from_slice(&prefix);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

/// Decodes a frame body sent by a worker. Borrowed fields point into `body`.
///
/// # Errors
/// [`FrameError::Malformed`] when the body is not a known message.
pub fn decode_from_worker(body: &[u8]) -> Result<FromWorker<'_>, FrameError> {
    if let Some(message) = super::fast::result(body) {
        return Ok(message);
    }
    require_map(body)?;
    rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Decodes a frame body sent by the manager. Borrowed fields point into `body`.
///
/// # Errors
/// [`FrameError::Malformed`] when the body is not a known message.
pub fn decode_to_worker(body: &[u8]) -> Result<ToWorker<'_>, FrameError> {
    if let Some(message) = super::fast::task(body) {
        return Ok(message);
    }
    require_map(body)?;
    rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests;

/// A body is a MessagePack map (PROTOCOL.md: "never an array"); serde would also
/// take an array of the fields in order, so anything else is refused before it.
///
/// # Errors
/// [`FrameError::Malformed`] naming the marker the body starts with, or saying
/// it is empty.
pub fn require_map(body: &[u8]) -> Result<(), FrameError> {
    match body.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => Ok(()),
        Some(marker) => Err(FrameError::Malformed(format!(
            "the body must be a MessagePack map, not marker 0x{marker:02x}"
        ))),
        None => Err(FrameError::Malformed("the body is empty".to_owned())),
    }
}
