//! Fast paths for the two messages of the task hot path: a worker's `result` and
//! the manager's `task`.
//!
//! serde decodes an internally tagged enum by first buffering the whole map into
//! an intermediate tree (allocations per field), because the tag may come last.
//! These readers walk the MessagePack map directly, borrowing from the frame, and
//! give up (return `None`) on anything unusual — another message type, an
//! unknown or repeated key, a value of an unexpected MessagePack type, trailing
//! bytes — so the caller falls back to serde and the outcome, errors included,
//! is exactly serde's. Only the common case gets faster: a `result` whose keys
//! come in the order the SDKs write them is read by comparing raw bytes (no
//! UTF-8 check of keys it already knows), any other order through `rmp`.
//!
//! [`encode_task`] writes a `task` frame byte for byte as
//! [`encode_frame`](super::encode_frame) writes it through serde (tests below).

use bytes::BytesMut;

use super::cursor::{bin as raw_bin, exact, uint as raw_uint};
use super::emit::{bin_head_len, str_head_len, uint_len, Scratch};
use super::layout::{ATTEMPT_KEY, PAYLOAD_KEY, RESULT_HEAD, TASK_HEAD, TASK_TYPE_KEY, TIMEOUT_KEY};
use super::{FrameError, FromWorker, TaskFrame, ToWorker};

/// The most bytes a `task` frame (prefix and body) takes besides its type's
/// and its payload's bytes: the keys, and the longest id, type and payload
/// heads, attempt and timeout MessagePack can write.
pub(crate) const TASK_FRAME_FIXED_MAX: usize = 4
    + TASK_HEAD.len()
    + 9
    + TASK_TYPE_KEY.len()
    + 5
    + PAYLOAD_KEY.len()
    + 5
    + ATTEMPT_KEY.len()
    + 5
    + TIMEOUT_KEY.len()
    + 9;

/// Appends the frame (prefix and body) of `ToWorker::Task(task)` to `dst`, the
/// bytes serde writes for it, without serde.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body would exceed `max_frame` (`dst` is left
/// as it was).
///
/// Marked inline: the compiler stopped inlining it into the one hot caller
/// (`Book::encode`) when that grew, which cost ~80 instructions a task.
#[inline]
pub(crate) fn encode_task(
    task: &TaskFrame<'_>,
    dst: &mut BytesMut,
    max_frame: usize,
) -> Result<(), FrameError> {
    let (head, middle, tail, len) = task_parts(task, max_frame)?;
    dst.reserve(4 + len);
    dst.extend_from_slice(head.bytes());
    dst.extend_from_slice(task.task_type.as_bytes());
    dst.extend_from_slice(middle.bytes());
    dst.extend_from_slice(task.payload);
    dst.extend_from_slice(tail.bytes());
    Ok(())
}

/// [`encode_task`] without the payload's bytes: appends the frame up to the
/// payload to `dst` and returns the bytes that follow it. The frame is these,
/// the payload, then the returned bytes: a large payload is written from its
/// own buffer instead of being copied into the frame.
///
/// # Errors
/// As [`encode_task`] (`dst` is left as it was).
pub(crate) fn encode_task_around(
    task: &TaskFrame<'_>,
    dst: &mut BytesMut,
    max_frame: usize,
) -> Result<Scratch, FrameError> {
    let (head, middle, tail, _) = task_parts(task, max_frame)?;
    dst.extend_from_slice(head.bytes());
    dst.extend_from_slice(task.task_type.as_bytes());
    dst.extend_from_slice(middle.bytes());
    Ok(tail)
}

/// The fixed pieces of a `task` frame (before the type, between the type and
/// the payload, after the payload) and the body's length. Inlined, so the
/// pieces are built where they are used instead of being copied out.
#[inline(always)]
fn task_parts(
    task: &TaskFrame<'_>,
    max_frame: usize,
) -> Result<(Scratch, Scratch, Scratch, usize), FrameError> {
    let kind = task.task_type.as_bytes();
    let len = TASK_HEAD.len()
        + uint_len(task.id)
        + TASK_TYPE_KEY.len()
        + str_head_len(kind.len())
        + kind.len()
        + PAYLOAD_KEY.len()
        + bin_head_len(task.payload.len())
        + task.payload.len()
        + ATTEMPT_KEY.len()
        + uint_len(u64::from(task.attempt))
        + TIMEOUT_KEY.len()
        + uint_len(task.timeout_ms);
    // Everything but the type's and the payload's bytes is built on the stack
    // and appended in three pieces (the longest, the head, is at most
    // 4 + 14 + 9 + 10 + 5 = 42 bytes).
    let mut head = Scratch::frame(len, max_frame)?;
    head.put(TASK_HEAD);
    head.uint(task.id);
    head.put(TASK_TYPE_KEY);
    head.str_head(kind.len());
    let mut middle = Scratch::new();
    middle.put(PAYLOAD_KEY);
    middle.bin_head(task.payload.len());
    let mut tail = Scratch::new();
    tail.put(ATTEMPT_KEY);
    tail.uint(u64::from(task.attempt));
    tail.put(TIMEOUT_KEY);
    tail.uint(task.timeout_ms);
    Ok((head, middle, tail, len))
}

/// A `result` map with its keys in the order the SDKs write them (`type`, `id`,
/// `payload`), read by comparing raw bytes.
fn result_in_order(body: &[u8]) -> Option<FromWorker<'_>> {
    let mut rd = body;
    exact(&mut rd, RESULT_HEAD)?;
    let id = raw_uint(&mut rd)?;
    exact(&mut rd, PAYLOAD_KEY)?;
    let payload = raw_bin(&mut rd)?;
    rd.is_empty().then_some(FromWorker::Result { id, payload })
}

/// A `result` body's id and where in `body` its payload lies, for a reader
/// that splits the payload off its read buffer without the frame around it.
pub(crate) fn result_parts(body: &[u8]) -> Option<(u64, std::ops::Range<usize>)> {
    let Some(FromWorker::Result { id, payload }) = result(body) else {
        return None;
    };
    // `payload` borrows from `body`: its place is the distance between the two.
    let start = (payload.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    Some((id, start..start + payload.len()))
}

/// Reads a map key or a string value.
fn read_str<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    let (s, rest) = rmp::decode::read_str_from_slice(*rd).ok()?;
    *rd = rest;
    Some(s)
}

fn read_bin<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_bin_len(rd).ok()? as usize;
    if rd.len() < len {
        return None;
    }
    let (bin, rest) = rd.split_at(len);
    *rd = rest;
    Some(bin)
}

fn read_uint<T: num_like::FromU64>(rd: &mut &[u8]) -> Option<T> {
    let v: u64 = rmp::decode::read_int(rd).ok()?;
    T::from_u64(v)
}

mod num_like {
    pub(super) trait FromU64: Sized {
        fn from_u64(v: u64) -> Option<Self>;
    }
    impl FromU64 for u64 {
        fn from_u64(v: u64) -> Option<Self> {
            Some(v)
        }
    }
    impl FromU64 for u32 {
        fn from_u64(v: u64) -> Option<Self> {
            u32::try_from(v).ok()
        }
    }
}

/// `{"type": "result", "id": u64, "payload": bin}` in any key order.
pub(super) fn result(body: &[u8]) -> Option<FromWorker<'_>> {
    if let Some(result) = result_in_order(body) {
        return Some(result);
    }
    let mut rd = body;
    let n = rmp::decode::read_map_len(&mut rd).ok()?;
    if n != 3 {
        return None;
    }
    let (mut tag, mut id, mut payload) = (false, None, None);
    for _ in 0..n {
        match read_str(&mut rd)? {
            "type" if !tag => {
                if read_str(&mut rd)? != "result" {
                    return None;
                }
                tag = true;
            }
            "id" if id.is_none() => id = Some(read_uint::<u64>(&mut rd)?),
            "payload" if payload.is_none() => payload = Some(read_bin(&mut rd)?),
            _ => return None,
        }
    }
    if !tag || !rd.is_empty() {
        return None;
    }
    Some(FromWorker::Result {
        id: id?,
        payload: payload?,
    })
}

/// `{"type": "task", "id", "task_type", "payload", "attempt", "timeout_ms"}` in any
/// key order.
pub(super) fn task(body: &[u8]) -> Option<ToWorker<'_>> {
    let mut rd = body;
    let n = rmp::decode::read_map_len(&mut rd).ok()?;
    if n != 6 {
        return None;
    }
    let mut tag = false;
    let (mut id, mut task_type, mut payload, mut attempt, mut timeout_ms) =
        (None, None, None, None, None);
    for _ in 0..n {
        match read_str(&mut rd)? {
            "type" if !tag => {
                if read_str(&mut rd)? != "task" {
                    return None;
                }
                tag = true;
            }
            "id" if id.is_none() => id = Some(read_uint::<u64>(&mut rd)?),
            "task_type" if task_type.is_none() => task_type = Some(read_str(&mut rd)?),
            "payload" if payload.is_none() => payload = Some(read_bin(&mut rd)?),
            "attempt" if attempt.is_none() => attempt = Some(read_uint::<u32>(&mut rd)?),
            "timeout_ms" if timeout_ms.is_none() => {
                timeout_ms = Some(read_uint::<u64>(&mut rd)?);
            }
            _ => return None,
        }
    }
    if !tag || !rd.is_empty() {
        return None;
    }
    Some(ToWorker::Task(TaskFrame {
        id: id?,
        task_type: task_type?,
        payload: payload?,
        attempt: attempt?,
        timeout_ms: timeout_ms?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::emit::UINT_EDGES;
    use crate::protocol::{ErrorReply, Heartbeat};

    fn body<T: serde::Serialize>(m: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(m).unwrap()
    }

    #[test]
    fn result_matches_serde() {
        for payload in [&b""[..], b"abc", &[7u8; 70_000][..]] {
            for id in [0, 1, 127, 128, 65_536, u64::MAX] {
                let m = FromWorker::Result { id, payload };
                let b = body(&m);
                assert_eq!(result(&b), Some(m.clone()));
                let serde: FromWorker<'_> = rmp_serde::from_slice(&b).unwrap();
                assert_eq!(serde, m);
            }
        }
    }

    #[test]
    fn encode_task_writes_the_bytes_serde_writes() {
        let long_type = "t".repeat(300);
        let types = [
            "",
            "echo",
            "ünïcödé",
            "a-type-name-of-exactly-31-bytes",
            &long_type,
        ];
        let big = vec![7u8; 70_000];
        let payloads = [
            &b""[..],
            b"\x91\x01",
            &[1u8; 255][..],
            &[2u8; 256][..],
            &big,
        ];
        for task_type in types {
            for payload in payloads {
                for n in UINT_EDGES {
                    let frame = TaskFrame {
                        id: n,
                        task_type,
                        payload,
                        attempt: u32::try_from(n).unwrap_or(u32::MAX),
                        timeout_ms: n.rotate_left(7),
                    };
                    let mut fast = BytesMut::from(&b"kept"[..]);
                    encode_task(&frame, &mut fast, usize::MAX >> 1).unwrap();
                    let mut serde = BytesMut::from(&b"kept"[..]);
                    crate::protocol::encode_frame(
                        &ToWorker::Task(frame.clone()),
                        &mut serde,
                        usize::MAX >> 1,
                    )
                    .unwrap();
                    assert_eq!(fast, serde, "{task_type:?}, {} B, {n}", payload.len());
                    assert!(
                        fast.len() - 4 <= TASK_FRAME_FIXED_MAX + task_type.len() + payload.len(),
                        "the bound holds: {task_type:?}, {} B, {n}",
                        payload.len()
                    );
                    let mut around = BytesMut::from(&b"kept"[..]);
                    let tail = encode_task_around(&frame, &mut around, usize::MAX >> 1).unwrap();
                    around.extend_from_slice(payload);
                    around.extend_from_slice(tail.bytes());
                    assert_eq!(
                        around,
                        serde,
                        "around: {task_type:?}, {} B, {n}",
                        payload.len()
                    );
                    assert_eq!(task(&fast[8..]), Some(ToWorker::Task(frame)));
                }
            }
        }
    }

    #[test]
    fn encode_task_refuses_a_body_over_max_frame_as_serde_does_and_writes_nothing() {
        let frame = TaskFrame {
            id: 1,
            task_type: "echo",
            payload: &[0u8; 100],
            attempt: 1,
            timeout_ms: 1000,
        };
        let mut exact = BytesMut::new();
        encode_task(&frame, &mut exact, usize::MAX >> 1).unwrap();
        let body = exact.len() - 4;
        let mut fits = BytesMut::new();
        assert!(encode_task(&frame, &mut fits, body).is_ok());
        let mut fast = BytesMut::from(&b"kept"[..]);
        let fast_err = encode_task(&frame, &mut fast, body - 1).unwrap_err();
        let mut around = BytesMut::from(&b"kept"[..]);
        let around_err = encode_task_around(&frame, &mut around, body - 1)
            .err()
            .map(|e| e.to_string());
        let mut serde = BytesMut::from(&b"kept"[..]);
        let message = ToWorker::Task(frame);
        let serde_err = crate::protocol::encode_frame(&message, &mut serde, body - 1).unwrap_err();
        assert_eq!(fast_err.to_string(), serde_err.to_string());
        assert_eq!(&fast[..], b"kept");
        assert_eq!(&serde[..], b"kept");
        assert_eq!(around_err, Some(serde_err.to_string()));
        assert_eq!(&around[..], b"kept");
    }

    #[test]
    fn task_matches_serde() {
        let m = ToWorker::Task(TaskFrame {
            id: 1 << 40,
            task_type: "echo",
            payload: b"\x91\x01",
            attempt: 3,
            timeout_ms: 300_000,
        });
        let b = body(&m);
        assert_eq!(task(&b), Some(m.clone()));
        let serde: ToWorker<'_> = rmp_serde::from_slice(&b).unwrap();
        assert_eq!(serde, m);
    }

    #[test]
    fn anything_else_falls_back() {
        let others = [
            body(&FromWorker::Heartbeat(Heartbeat::new(1, 2, 3, 4))),
            body(&FromWorker::Error(ErrorReply {
                id: 1,
                kind: "k",
                message: "m",
                retryable: true,
            })),
            body(&ToWorker::Cancel { id: 3 }),
        ];
        for b in &others {
            assert_eq!(result(b), None);
            assert_eq!(task(b), None);
        }
        // Keys in another order still decode; a payload sent as a string does not
        // take the fast path; trailing bytes and repeats fall back.
        let mut reordered = Vec::new();
        rmp::encode::write_map_len(&mut reordered, 3).unwrap();
        rmp::encode::write_str(&mut reordered, "payload").unwrap();
        rmp::encode::write_bin(&mut reordered, b"xy").unwrap();
        rmp::encode::write_str(&mut reordered, "id").unwrap();
        rmp::encode::write_uint(&mut reordered, 9).unwrap();
        rmp::encode::write_str(&mut reordered, "type").unwrap();
        rmp::encode::write_str(&mut reordered, "result").unwrap();
        assert_eq!(
            result(&reordered),
            Some(FromWorker::Result {
                id: 9,
                payload: b"xy"
            })
        );
        let mut trailing = reordered.clone();
        trailing.push(0xc0);
        assert_eq!(result(&trailing), None);
        let mut as_str = Vec::new();
        rmp::encode::write_map_len(&mut as_str, 3).unwrap();
        rmp::encode::write_str(&mut as_str, "type").unwrap();
        rmp::encode::write_str(&mut as_str, "result").unwrap();
        rmp::encode::write_str(&mut as_str, "id").unwrap();
        rmp::encode::write_uint(&mut as_str, 9).unwrap();
        rmp::encode::write_str(&mut as_str, "payload").unwrap();
        rmp::encode::write_str(&mut as_str, "xy").unwrap();
        assert_eq!(result(&as_str), None);
        let mut negative = Vec::new();
        rmp::encode::write_map_len(&mut negative, 3).unwrap();
        rmp::encode::write_str(&mut negative, "type").unwrap();
        rmp::encode::write_str(&mut negative, "result").unwrap();
        rmp::encode::write_str(&mut negative, "id").unwrap();
        rmp::encode::write_sint(&mut negative, -1).unwrap();
        rmp::encode::write_str(&mut negative, "payload").unwrap();
        rmp::encode::write_bin(&mut negative, b"").unwrap();
        assert_eq!(result(&negative), None);
    }
}
