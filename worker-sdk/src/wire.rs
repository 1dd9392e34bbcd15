//! The worker's hot path on the wire: reading a `task` frame and writing a `result`
//! frame without serde.
//!
//! Both are shortcuts for the common case and agree byte for byte with
//! `pool_core::protocol` (the tests below check it): [`decode`] reads a `task` map
//! whose keys come in the order the manager writes them by comparing raw bytes (no
//! UTF-8 check of a key it already knows, nor of a task type the caller knows; no
//! serde) and hands anything else —
//! another message, another key order, an unknown or repeated key, an unexpected
//! value type — to [`decode_to_worker`], so results and errors stay exactly the
//! protocol's. [`encode_result`] writes the bytes `encode_frame` writes
//! for `FromWorker::Result`.
//!
//! The reads are `pool_core::protocol::cursor`'s, which inline into [`task`].

use bytes::BytesMut;
use pool_core::protocol::cursor::{bin, exact as key, str_bytes, uint};
use pool_core::protocol::emit::{bin_head_len, uint_len, Scratch};
use pool_core::protocol::layout::{
    ATTEMPT_KEY, PAYLOAD_KEY, RESULT_HEAD, TASK_HEAD, TASK_TYPE_KEY, TIMEOUT_KEY,
};
use pool_core::protocol::{decode_to_worker, require_map, FrameError, ToWorker};

/// A frame from the manager, as the dispatcher reads it.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame<'a> {
    Task(Task<'a>),
    /// Any other message (never a `task`).
    Other(ToWorker<'a>),
    /// A map whose `type` this worker does not know: to be ignored
    /// (PROTOCOL.md: the protocol grows by new messages).
    Unknown,
}

/// The `type` of a message body, the rest of it unread.
#[derive(serde::Deserialize)]
struct Typed<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

/// The types of the messages a manager sends that this worker knows.
const KNOWN_TYPES: [&str; 4] = ["hello", "task", "cancel", "shutdown"];

/// A `task` frame (`pool_core::protocol::TaskFrame`, its type perhaps unread).
#[derive(Debug, PartialEq)]
pub(crate) struct Task<'a> {
    pub(crate) id: u64,
    pub(crate) task_type: TaskType<'a>,
    pub(crate) payload: &'a [u8],
    pub(crate) attempt: u32,
    pub(crate) timeout_ms: u64,
}

/// A task's type.
#[derive(Debug, PartialEq)]
pub(crate) enum TaskType<'a> {
    /// The type [`decode`] was told it knows: the same bytes.
    Known,
    /// Another type.
    Named(&'a str),
}

/// Decodes a frame body sent by the manager (a `task` without serde). A task of
/// type `known` (the one the last task had, say) is given as [`TaskType::Known`].
///
/// # Errors
/// [`FrameError::Malformed`] when the body is not a known message.
pub(crate) fn decode<'a>(body: &'a [u8], known: Option<&str>) -> Result<Frame<'a>, FrameError> {
    if let Some(task) = task(body, known) {
        return Ok(Frame::Task(task));
    }
    let message = match decode_to_worker(body) {
        Ok(message) => message,
        // A message of a type this worker does not know is skipped; a body
        // that is no map is no message at all.
        Err(e) if require_map(body).is_err() => return Err(e),
        Err(e) => {
            return match rmp_serde::from_slice::<Typed<'_>>(body) {
                Ok(Typed { kind }) if !KNOWN_TYPES.contains(&kind) => Ok(Frame::Unknown),
                _ => Err(e),
            }
        }
    };
    Ok(match message {
        ToWorker::Task(task) => Frame::Task(Task {
            id: task.id,
            task_type: TaskType::Named(task.task_type),
            payload: task.payload,
            attempt: task.attempt,
            timeout_ms: task.timeout_ms,
        }),
        other => Frame::Other(other),
    })
}

/// Appends the frame of `{"type": "result", "id": id, "payload": payload}` to `dst`.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body would exceed `max_frame` (`dst` is left
/// as it was).
pub(crate) fn encode_result(
    id: u64,
    payload: &[u8],
    dst: &mut BytesMut,
    max_frame: usize,
) -> Result<(), FrameError> {
    // Prefix and everything before the payload, built on the stack and appended in
    // one piece (at most 4 + 16 + 9 + 8 + 5 = 42 bytes).
    let mut head = Scratch::frame(result_len(id, payload.len()), max_frame)?;
    put_result_head(&mut head, id, payload.len());
    dst.reserve(head.bytes().len() + payload.len());
    dst.extend_from_slice(head.bytes());
    dst.extend_from_slice(payload);
    Ok(())
}

/// The bytes of a `result` frame before its payload of `payload_len` bytes
/// (prefix included): the frame is these, then the payload, so a large payload
/// can be written from its own buffer.
///
/// # Errors
/// [`FrameError::TooLarge`] when the body would exceed `max_frame`.
pub(crate) fn result_head(
    id: u64,
    payload_len: usize,
    max_frame: usize,
) -> Result<Scratch, FrameError> {
    let mut head = Scratch::frame(result_len(id, payload_len), max_frame)?;
    put_result_head(&mut head, id, payload_len);
    Ok(head)
}

/// The body length of a `result` frame.
#[inline]
fn result_len(id: u64, payload_len: usize) -> usize {
    RESULT_HEAD.len() + uint_len(id) + PAYLOAD_KEY.len() + bin_head_len(payload_len) + payload_len
}

/// Puts the map's bytes before the payload after the frame's prefix.
#[inline]
fn put_result_head(head: &mut Scratch, id: u64, payload_len: usize) {
    head.put(RESULT_HEAD);
    head.uint(id);
    head.put(PAYLOAD_KEY);
    head.bin_head(payload_len);
}

/// A `task` map with its keys in the order the manager writes them (`type`, `id`,
/// `task_type`, `payload`, `attempt`, `timeout_ms`); `None` for anything else,
/// which the caller leaves to serde.
fn task<'a>(body: &'a [u8], known: Option<&str>) -> Option<Task<'a>> {
    let mut rd = body;
    key(&mut rd, TASK_HEAD)?;
    let id = uint(&mut rd)?;
    key(&mut rd, TASK_TYPE_KEY)?;
    let task_type = task_type(&mut rd, known)?;
    key(&mut rd, PAYLOAD_KEY)?;
    let payload = bin(&mut rd)?;
    key(&mut rd, ATTEMPT_KEY)?;
    let attempt = u32::try_from(uint(&mut rd)?).ok()?;
    key(&mut rd, TIMEOUT_KEY)?;
    let timeout_ms = uint(&mut rd)?;
    rd.is_empty().then_some(Task {
        id,
        task_type,
        payload,
        attempt,
        timeout_ms,
    })
}

/// A task's type: [`TaskType::Known`] when its bytes are `known`'s, without a
/// UTF-8 check (they are those of a `str`), otherwise checked.
#[inline(always)]
fn task_type<'a>(rd: &mut &'a [u8], known: Option<&str>) -> Option<TaskType<'a>> {
    let bytes = str_bytes(rd)?;
    if known.is_some_and(|known| known.as_bytes() == bytes) {
        return Some(TaskType::Known);
    }
    std::str::from_utf8(bytes).ok().map(TaskType::Named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_core::protocol::emit::UINT_EDGES;
    use pool_core::protocol::{encode_frame, FromWorker, TaskFrame};

    fn frame_of(message: &ToWorker<'_>) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_frame(message, &mut buf, usize::MAX >> 1).expect("encode");
        buf
    }

    /// The protocol's message for `frame`, decoded with `known` as the known type.
    fn as_message<'a>(frame: Frame<'a>, known: Option<&'a str>) -> ToWorker<'a> {
        match frame {
            Frame::Task(task) => ToWorker::Task(TaskFrame {
                id: task.id,
                task_type: match task.task_type {
                    TaskType::Known => known.expect("a known type was given"),
                    TaskType::Named(name) => name,
                },
                payload: task.payload,
                attempt: task.attempt,
                timeout_ms: task.timeout_ms,
            }),
            Frame::Other(other) => {
                assert!(
                    !matches!(other, ToWorker::Task(_)),
                    "a task as another frame"
                );
                other
            }
            Frame::Unknown => panic!("a known message read as unknown"),
        }
    }

    #[test]
    fn task_frames_decode_as_the_protocol_decodes_them() {
        for payload in [
            &b""[..],
            b"\x92\x01\x02",
            &[7u8; 300][..],
            &[1u8; 70_000][..],
        ] {
            for id in [0, 1, 127, 128, 255, 256, 65_536, u64::MAX] {
                for task_type in [
                    "echo",
                    "",
                    "ünïcödé",
                    "a-rather-long-task-type-name-over-31",
                ] {
                    let message = ToWorker::Task(TaskFrame {
                        id,
                        task_type,
                        payload,
                        attempt: 3,
                        timeout_ms: u64::from(u32::MAX) + 1,
                    });
                    let frame = frame_of(&message);
                    let body = &frame[4..];
                    assert_eq!(decode_to_worker(body).expect("decodes"), message);
                    for known in [None, Some("echo"), Some(task_type), Some("echo2")] {
                        let decoded = decode(body, known).expect("decodes");
                        let Frame::Task(task) = &decoded else {
                            panic!("not a task: {decoded:?}");
                        };
                        assert_eq!(
                            task.task_type == TaskType::Known,
                            known == Some(task_type),
                            "{task_type:?} known as {known:?}"
                        );
                        assert_eq!(as_message(decoded, known), message);
                    }
                }
            }
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_protocol() {
        let other = [
            ToWorker::Cancel { id: 9 },
            ToWorker::Shutdown { graceful: true },
        ];
        for message in other {
            let frame = frame_of(&message);
            assert_eq!(task(&frame[4..], None), None);
            let decoded = decode(&frame[4..], None).expect("decodes");
            assert_eq!(decoded, Frame::Other(message.clone()));
        }
        // A task map with an unknown seventh key, a repeated key, a wrong value type.
        let odd: [&[u8]; 3] = [
            b"\x87\xa4type\xa4task\xa2id\x01\xa9task_type\xa4echo\xa7payload\xc4\x00\xa7attempt\x01\xaatimeout_ms\x01\xa1x\x01",
            b"\x86\xa4type\xa4task\xa2id\x01\xa2id\x01\xa7payload\xc4\x00\xa7attempt\x01\xaatimeout_ms\x01",
            b"\x86\xa4type\xa4task\xa2id\xa1x\xa9task_type\xa4echo\xa7payload\xc4\x00\xa7attempt\x01\xaatimeout_ms\x01",
        ];
        for body in odd {
            assert_eq!(task(body, Some("echo")), None);
            assert_eq!(
                decode(body, Some("echo"))
                    .map(|frame| as_message(frame, Some("echo")))
                    .map_err(|e| e.to_string()),
                decode_to_worker(body).map_err(|e| e.to_string())
            );
        }
        assert!(
            decode(b"\xc1", None).is_err(),
            "garbage is an error, as in the protocol"
        );
    }

    #[test]
    fn task_types_in_ascii_and_other_strings() {
        for text in ["echo", "", "ünïcödé", "日本"] {
            let encoded = rmp_serde::to_vec(text).expect("encode");
            let named = task_type(&mut &encoded[..], Some("other"));
            assert_eq!(named, Some(TaskType::Named(text)));
            let known = task_type(&mut &encoded[..], Some(text));
            assert_eq!(known, Some(TaskType::Known));
        }
        // Not UTF-8: refused (the protocol's serde path then reports it), unless it
        // is the known type's bytes, which a `&str` cannot hold.
        assert_eq!(task_type(&mut &b"\xa2\xff\xfe"[..], Some("ec")), None);
        assert_eq!(
            task_type(&mut &b"\xa2\xc3"[..], Some("\u{c3}")),
            None,
            "shorter than announced"
        );
    }

    #[test]
    fn result_frames_are_the_bytes_the_protocol_writes() {
        for payload in [
            &b""[..],
            b"\x01",
            &[7u8; 255][..],
            &[7u8; 256][..],
            &[1u8; 70_000][..],
        ] {
            for id in UINT_EDGES {
                let mut ours = BytesMut::from(&b"earlier"[..]);
                encode_result(id, payload, &mut ours, 1 << 20).expect("fits");
                let mut theirs = BytesMut::from(&b"earlier"[..]);
                encode_frame(&FromWorker::Result { id, payload }, &mut theirs, 1 << 20)
                    .expect("fits");
                assert_eq!(ours, theirs, "id {id}, {} bytes", payload.len());
            }
        }
    }

    #[test]
    fn a_result_over_the_limit_is_refused_and_nothing_written() {
        let mut buf = BytesMut::from(&b"kept"[..]);
        let err = encode_result(1, &[0u8; 100], &mut buf, 50).expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { max: 50, .. }), "{err}");
        assert_eq!(&buf[..], b"kept");
    }
}
