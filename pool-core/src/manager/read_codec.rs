//! The decoder of a worker's output on the manager's side: [`FrameCodec`]'s
//! framing, reading frames into buffers that earlier frames were read into once
//! nothing sliced from them is alive any more.
//!
//! A result's payload reaches its caller as a slice of the buffer its frame was
//! read into (never copied), so that buffer stays shared until the caller drops
//! the result, and the reader cannot simply read on into it. Left to itself it
//! then takes a fresh allocation for every large frame, and for 1 MiB payloads
//! fresh memory costs a page fault per 4 KiB on top of the copy out of the pipe
//! (glibc returns freed blocks of that size to the system). This codec gives
//! each read room for the whole frame it is in, keeps the last [`KEEP`] buffers
//! it moved off (up to [`KEEP_MAX`] bytes each) and reads into one of them again
//! once it is unshared: everything sliced from it is gone. A buffer still shared
//! is never written to (`BytesMut::try_reclaim` says which are not).

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::protocol::{result_parts, FrameCodec, FrameError};

/// Spent read buffers kept per worker.
const KEEP: usize = 4;
/// A buffer larger than this is not kept: at most `KEEP` × this much stays
/// allocated per worker once the frames read into it are gone.
const KEEP_MAX: usize = 2 * 1024 * 1024;
/// The length prefix of a frame.
const PREFIX: usize = 4;

/// [`FrameCodec`] with its read buffers reused; see the module doc.
#[derive(Debug)]
pub(crate) struct ReadCodec {
    frames: FrameCodec,
    /// Room a fresh read is given when nothing tells how large the next frame is.
    read_buffer: usize,
    /// The last frame's length, prefix included: the room a read is given after
    /// a frame (large frames tend to follow large ones).
    last_frame: usize,
    /// The size of the buffer reads go into now, when this codec chose it.
    current: Option<usize>,
    /// Buffers read into before, some still shared with frames handed out.
    spent: VecDeque<BytesMut>,
}

impl ReadCodec {
    /// Frames of at most `max_frame` bytes, read `read_buffer` bytes at a time
    /// at least.
    pub(crate) fn new(max_frame: usize, read_buffer: usize) -> Self {
        Self {
            frames: FrameCodec::new(max_frame),
            read_buffer,
            last_frame: 0,
            current: None,
            spent: VecDeque::with_capacity(KEEP),
        }
    }

    /// Makes sure `src` has room for `room.needed` bytes in all, moving what it
    /// holds into a spent buffer that is unshared again and has room for
    /// `room.hoped`, or else into a fresh one of `room.needed`.
    fn make_room(&mut self, src: &mut BytesMut, room: Room) {
        if src.capacity() >= room.needed {
            return;
        }
        let reclaimed = self
            .spent
            .iter_mut()
            .position(|spent| spent.try_reclaim(room.hoped))
            .and_then(|at| self.spent.remove(at));
        let mut next = reclaimed.unwrap_or_else(|| BytesMut::with_capacity(room.needed));
        next.extend_from_slice(src);
        let size = next.capacity();
        let mut old = std::mem::replace(src, next);
        // Only a buffer of known size is kept: the one reads went into before is
        // FramedRead's own at first.
        if self
            .current
            .replace(size)
            .is_some_and(|kept| kept <= KEEP_MAX)
        {
            old.clear();
            if self.spent.len() == KEEP {
                self.spent.pop_front();
            }
            self.spent.push_back(old);
        }
    }

    /// The room the next read needs: the frame whose prefix is in, whole (none
    /// when its length is over the maximum: the framing refuses it); else a read
    /// buffer's worth, and as much as the last frame if a spent buffer has it (a
    /// fresh allocation that large could end up holding only small frames,
    /// pinned by one small result).
    fn room_wanted(&self, src: &BytesMut) -> Option<Room> {
        match src.get(..PREFIX) {
            Some(&[a, b, c, d]) => {
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                (len <= self.frames.max_frame()).then_some(Room {
                    needed: PREFIX + len,
                    hoped: PREFIX + len,
                })
            }
            _ => Some(Room {
                needed: src.len() + self.read_buffer,
                hoped: src.len() + self.read_buffer.max(self.last_frame),
            }),
        }
    }

    /// [`make_room`](Self::make_room) for what [`room_wanted`](Self::room_wanted) says.
    fn make_room_wanted(&mut self, src: &mut BytesMut) {
        if let Some(room) = self.room_wanted(src) {
            self.make_room(src, room);
        }
    }
}

/// Bytes a read buffer must hold in all, and what a reused one should hold.
#[derive(Debug, Clone, Copy)]
struct Room {
    needed: usize,
    hoped: usize,
}

/// A frame as the reader hands it on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A `result` (read by the protocol's fast path), its payload split off the
    /// read buffer alone: no handle on the frame around it is made.
    Result { id: u64, payload: Bytes },
    /// Any other frame's body, to decode.
    Frame(Bytes),
}

/// The `result` whose whole frame leads `src`, if one does: its id, where its
/// payload lies in `src`, and the frame's length.
fn result_at_head(src: &[u8], max_frame: usize) -> Option<(u64, std::ops::Range<usize>, usize)> {
    let len = u32::from_be_bytes(src.get(..PREFIX)?.try_into().ok()?) as usize;
    if len > max_frame {
        return None;
    }
    let (id, payload) = result_parts(src.get(PREFIX..PREFIX + len)?)?;
    Some((
        id,
        PREFIX + payload.start..PREFIX + payload.end,
        PREFIX + len,
    ))
}

impl Decoder for ReadCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        // A whole result frame needs no room: it is taken apart at once.
        let frame = match result_at_head(src, self.frames.max_frame()) {
            Some((id, payload, len)) => {
                let bytes = if payload.is_empty() {
                    // A slice of no bytes would still hold the buffer.
                    src.advance(len);
                    Bytes::new()
                } else {
                    src.advance(payload.start);
                    let bytes = src.split_to(payload.len()).freeze();
                    // The SDKs write the payload last: usually nothing is after it.
                    if payload.end < len {
                        src.advance(len - payload.end);
                    }
                    bytes
                };
                self.last_frame = len;
                Some(Inbound::Result { id, payload: bytes })
            }
            None => {
                if src.len() >= PREFIX {
                    self.make_room_wanted(src);
                }
                let frame = self.frames.decode(src)?;
                if let Some(body) = &frame {
                    self.last_frame = PREFIX + body.len();
                }
                frame.map(Inbound::Frame)
            }
        };
        // Nothing left to read into: the next read goes into a reclaimed buffer
        // rather than a fresh one. (A whole frame still in `src` is the next
        // call's.)
        if src.len() < PREFIX && src.capacity() == src.len() {
            self.make_room_wanted(src);
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => Ok(self.frames.decode_eof(src)?.map(Inbound::Frame)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// Feeds `bytes` into `src` as a read would, at most `room` of them.
    fn read_into(src: &mut BytesMut, bytes: &mut &[u8]) {
        let n = (src.capacity() - src.len()).min(bytes.len()).max(1);
        src.extend_from_slice(&bytes[..n]);
        *bytes = &bytes[n..];
    }

    /// The body of a frame that is not a result.
    fn body(inbound: Inbound) -> Bytes {
        match inbound {
            Inbound::Frame(body) => body,
            Inbound::Result { id, .. } => panic!("result {id} where a frame was sent"),
        }
    }

    /// The body of a `result` of `id` with `payload`, keys in the SDKs' order
    /// (`type`, `id`, `payload`) or not.
    fn result_body(id: u64, payload: &[u8], in_order: bool) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, 3).expect("map");
        if in_order {
            rmp::encode::write_str(&mut out, "type").expect("key");
            rmp::encode::write_str(&mut out, "result").expect("tag");
        }
        rmp::encode::write_str(&mut out, "id").expect("key");
        rmp::encode::write_uint(&mut out, id).expect("id");
        rmp::encode::write_str(&mut out, "payload").expect("key");
        rmp::encode::write_bin(&mut out, payload).expect("payload");
        if !in_order {
            rmp::encode::write_str(&mut out, "type").expect("key");
            rmp::encode::write_str(&mut out, "result").expect("tag");
        }
        out
    }

    /// Reads the frame of `body` through `codec` as reads would bring it in.
    fn read_inbound(codec: &mut ReadCodec, src: &mut BytesMut, body: &[u8]) -> Inbound {
        let bytes = frame(body);
        let mut rest = &bytes[..];
        loop {
            if let Some(got) = codec.decode(src).expect("decode") {
                return got;
            }
            read_into(src, &mut rest);
        }
    }

    /// [`read_inbound`] of a frame that is not a result: its body.
    fn read_frame(codec: &mut ReadCodec, src: &mut BytesMut, body: &[u8]) -> Bytes {
        self::body(read_inbound(codec, src, body))
    }

    #[test]
    fn a_frame_is_read_into_a_buffer_whose_frames_were_dropped() {
        let body = vec![7u8; 100_000];
        let mut codec = ReadCodec::new(1 << 20, 1024);
        let mut src = BytesMut::new();
        let mut at = Vec::new();
        for _ in 0..6 {
            let got = read_frame(&mut codec, &mut src, &body);
            assert_eq!(&got[..], &body[..]);
            at.push(got.as_ptr() as usize);
            drop(got);
        }
        // Each frame is dropped before the next one's prefix is in: one large
        // buffer serves them all (the small one each read after a frame got, while
        // that frame was alive, only ever holds the next frame's first bytes).
        assert!(
            at.iter().all(|&a| a == at[0]),
            "frames read into fresh buffers: {at:x?}"
        );
    }

    #[test]
    fn after_a_large_frame_still_alive_a_read_gets_a_fresh_buffer_of_the_usual_size() {
        let body = vec![5u8; 100_000];
        let mut codec = ReadCodec::new(1 << 20, 1024);
        let mut src = BytesMut::new();
        let kept = read_frame(&mut codec, &mut src, &body);
        // Nothing spent is free: the next read is not given a 100 kB block that
        // small frames alone could end up pinning.
        assert_eq!(src.capacity(), 1024);
        drop(kept);
        let got = read_frame(&mut codec, &mut src, b"small");
        assert_eq!(&got[..], b"small");
    }

    #[test]
    fn a_buffer_still_shared_is_not_read_into() {
        let body = vec![3u8; 10_000];
        let mut codec = ReadCodec::new(1 << 20, 1024);
        let mut src = BytesMut::new();
        let mut kept = Vec::new();
        for i in 0..6u8 {
            let mut body = body.clone();
            body[0] = i;
            let got = read_frame(&mut codec, &mut src, &body);
            kept.push(got);
        }
        for (i, got) in kept.iter().enumerate() {
            assert_eq!(got[0] as usize, i, "frame {i} was not overwritten");
            assert!(got[1..].iter().all(|&b| b == 3));
        }
    }

    #[test]
    fn a_result_is_its_id_and_its_payload_read_into_the_buffer_without_a_copy() {
        let payload = vec![9u8; 3_000];
        for in_order in [true, false] {
            let bytes = frame(&result_body(42, &payload, in_order));
            let mut codec = ReadCodec::new(1 << 20, 1024);
            let mut src = BytesMut::with_capacity(bytes.len());
            src.extend_from_slice(&bytes);
            let read_at = src.as_ptr() as usize;
            let got = codec.decode(&mut src).expect("decode");
            let Some(Inbound::Result { id, payload: got }) = got else {
                panic!("a result frame came out as {got:?}");
            };
            assert_eq!(id, 42);
            assert_eq!(&got[..], &payload[..]);
            // The payload is the read buffer's own bytes: it lies where it was
            // read, before the frame's bytes after it (none, or the 12 of
            // `"type": "result"`).
            let after_payload = if in_order { 0 } else { 12 };
            assert_eq!(
                got.as_ptr() as usize,
                read_at + bytes.len() - payload.len() - after_payload
            );
            let next = read_frame(&mut codec, &mut src, b"after");
            assert_eq!(&next[..], b"after", "the next frame starts past the result");
        }
    }

    #[test]
    fn a_result_s_buffer_is_read_into_again_once_its_payload_is_dropped() {
        let mut codec = ReadCodec::new(1 << 20, 1024);
        let mut src = BytesMut::new();
        let mut at = Vec::new();
        for i in 0..6u8 {
            let body = result_body(u64::from(i), &vec![i; 100_000], true);
            let Inbound::Result { payload, .. } = read_inbound(&mut codec, &mut src, &body) else {
                panic!("result {i} came out as a frame");
            };
            assert!(payload.iter().all(|&b| b == i));
            at.push(payload.as_ptr() as usize);
        }
        assert!(
            at.iter().all(|&a| a == at[0]),
            "payloads read into fresh buffers: {at:x?}"
        );
    }

    #[test]
    fn an_empty_payload_holds_no_part_of_the_buffer() {
        let bytes = frame(&result_body(7, b"", true));
        let mut codec = ReadCodec::new(1 << 20, 1024);
        // Room left after the frame: the reader keeps reading into this buffer.
        let mut src = BytesMut::with_capacity(bytes.len() + 100);
        src.extend_from_slice(&bytes);
        let capacity = src.capacity();
        let Some(Inbound::Result { id: 7, payload }) = codec.decode(&mut src).expect("decode")
        else {
            panic!("the result did not come out");
        };
        assert!(payload.is_empty());
        assert!(
            src.try_reclaim(capacity),
            "the buffer is the reader's alone while the empty payload lives"
        );
    }

    #[test]
    fn a_whole_result_frame_over_the_maximum_is_refused_not_read() {
        let bytes = frame(&result_body(1, &[5; 40], true));
        let mut codec = ReadCodec::new(16, 16);
        let mut src = BytesMut::from(&bytes[..]);
        let err = codec.decode(&mut src).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { max: 16, .. }), "{err}");
        assert_eq!(&src[..], &bytes[..], "nothing of the frame was consumed");
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        // Every third frame a result, the rest any bytes.
        let bodies: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                let bytes = vec![i as u8; (i as usize * 997) % 5_000];
                match i % 3 {
                    0 => result_body(u64::from(i), &bytes, i % 2 == 0),
                    _ => bytes,
                }
            })
            .collect();
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        for step in [1, 3, 64, 1000, 7000] {
            let mut codec = ReadCodec::new(1 << 20, 16);
            let mut src = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while got.len() < bodies.len() {
                if let Some(inbound) = codec.decode(&mut src).expect("decode") {
                    got.push(inbound);
                    continue;
                }
                let n = step.min(rest.len()).min(src.capacity() - src.len()).max(1);
                src.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            for (i, (got, want)) in (0u32..).zip(got.into_iter().zip(&bodies)) {
                let want = match i % 3 {
                    0 => Inbound::Result {
                        id: u64::from(i),
                        payload: Bytes::from(vec![i as u8; (i as usize * 997) % 5_000]),
                    },
                    _ => Inbound::Frame(Bytes::from(want.clone())),
                };
                assert_eq!(got, want, "frame {i}, reads of {step}");
            }
        }
    }

    #[test]
    fn a_prefix_over_the_maximum_is_refused_before_any_room_is_made() {
        let mut codec = ReadCodec::new(16, 16);
        let mut src = BytesMut::from(&[0, 0, 1, 0, 1, 2][..]);
        let err = codec.decode(&mut src).expect_err("too large");
        assert!(
            matches!(err, FrameError::TooLarge { len: 256, max: 16 }),
            "{err}"
        );
        assert!(src.capacity() < 256);
    }
}
