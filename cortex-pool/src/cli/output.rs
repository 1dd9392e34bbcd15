//! One output line of `cortex-pool run`:
//! `{"id", "status", "result" | "error": {"kind", "message"}, "attempts", "worker", "duration_ms"}`.
//!
//! Each line is written straight into its own buffer, keys in alphabetical order
//! (the order they always had), with the worker's MessagePack result transcoded
//! to JSON without building a tree of values in between.

use std::io::Write;

use pool_core::protocol::cursor;
use pool_core::{FinalStatus, SubmitError, TaskError, TaskOutput};

use super::json_str;
use serde::Serialize;

/// How one input line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Failed,
    DeadLetter,
    Invalid,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::DeadLetter => "dead_letter",
            Self::Invalid => "invalid",
        }
    }
}

/// A finished line: its JSON (one object, no newline) and what the summary needs.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) status: Status,
    pub(crate) duration_ms: f64,
    pub(crate) json: Vec<u8>,
}

impl Line {
    /// The line as text (it is JSON, so always UTF-8).
    pub(crate) fn into_text(self) -> String {
        String::from_utf8(self.json)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// Room for a typical line, so most lines take one allocation.
const LINE_CAPACITY: usize = 160;

/// The line of a task that produced a result.
pub(crate) fn ok(id: &str, out: &TaskOutput, duration_ms: f64) -> Line {
    ok_after(id, out, out.attempts, duration_ms)
}

/// [`ok`], counting `attempts` (the daemon's count, across the pool's restarts).
pub(crate) fn ok_after(id: &str, out: &TaskOutput, attempts: u32, duration_ms: f64) -> Line {
    result_line(id, &out.payload, attempts, &out.worker, duration_ms)
}

/// The line of a task whose last attempt, on `worker`, returned `payload`.
fn result_line(id: &str, payload: &[u8], attempts: u32, worker: &str, duration_ms: f64) -> Line {
    let mut json = Vec::with_capacity(LINE_CAPACITY + payload.len() * 2);
    json.extend_from_slice(b"{\"attempts\":");
    scalar(&mut json, attempts);
    json.extend_from_slice(b",\"duration_ms\":");
    scalar(&mut json, round3(duration_ms));
    json.extend_from_slice(b",\"id\":");
    json_str::push(&mut json, id);
    result(&mut json, payload);
    json.extend_from_slice(b",\"status\":\"ok\",\"worker\":");
    json_str::push(&mut json, worker);
    json.push(b'}');
    Line {
        status: Status::Ok,
        duration_ms,
        json,
    }
}

/// `,"result":<the payload as JSON>`, or `,"result_hex":"…"` when the payload is
/// not MessagePack that JSON can express.
fn result(json: &mut Vec<u8>, payload: &[u8]) {
    let mark = json.len();
    json.extend_from_slice(b",\"result\":");
    // A payload that is one string (an echo's, often) needs no transcoder.
    let mut rd = payload;
    if let Some(text) = cursor::string(&mut rd).filter(|_| rd.is_empty()) {
        return json_str::push(json, text);
    }
    let mut from = rmp_serde::Deserializer::from_read_ref(payload);
    let mut to = serde_json::Serializer::new(&mut *json);
    if serde_transcode::transcode(&mut from, &mut to).is_err() {
        json.truncate(mark);
        json.extend_from_slice(b",\"result_hex\":\"");
        for b in payload {
            // Writing into a `Vec` cannot fail.
            let _ = write!(json, "{b:02x}");
        }
        json.push(b'"');
    }
}

/// The line of a task that ended without a result.
pub(crate) fn failed(id: &str, err: &TaskError, duration_ms: f64) -> Line {
    failed_after(id, err, err.attempts, duration_ms)
}

/// [`failed`], counting `attempts` (the daemon's count, across the pool's restarts).
pub(crate) fn failed_after(id: &str, err: &TaskError, attempts: u32, duration_ms: f64) -> Line {
    let status = status_of(err.status);
    let failure = err.failure.to_string();
    let error = ErrorFields {
        kind: err.failure.kind(),
        message: &failure,
        attempts,
        worker: err.worker.as_deref(),
        line: None,
    };
    error_line(id, status, &error, duration_ms)
}

/// The line of a task whose result line, `len` bytes, is longer than the task
/// source can store (`max`): failed, with the error kind `result_too_large`.
pub(crate) fn too_large(id: &str, attempts: u32, len: usize, max: usize, duration_ms: f64) -> Line {
    let message = too_large_message(len, max);
    let error = ErrorFields {
        attempts,
        ..ErrorFields::new(TOO_LARGE, &message)
    };
    error_line(id, Status::Failed, &error, duration_ms)
}

/// The error kind of a result too large for the task source.
pub(crate) const TOO_LARGE: &str = "result_too_large";

/// Why a result line of `len` bytes was not stored.
pub(crate) fn too_large_message(len: usize, max: usize) -> String {
    format!(
        "the result line is {len} bytes; the daemon keeps at most {max} (the task store's \
         or queue's limit, or what one reply to a client carries)"
    )
}

/// The line status of a task that ended as `status`.
fn status_of(status: FinalStatus) -> Status {
    match status {
        // Out of attempts: dead-lettered by the pool, or by whoever keeps the
        // task's retries (the daemon's task source) when the pool does not.
        FinalStatus::DeadLettered | FinalStatus::Exhausted => Status::DeadLetter,
        _ => Status::Failed,
    }
}

/// The line of a task cancelled by a second interrupt whose worker did not answer
/// in time: it is not waited for (its worker is killed as `run` exits).
pub(crate) fn abandoned(id: &str, duration_ms: f64) -> Line {
    let message = "interrupted twice: cancelled and not waited for";
    error_line(
        id,
        Status::Failed,
        &ErrorFields::new("cancelled", message),
        duration_ms,
    )
}

/// The line of a task the pool refused: its input (a priority out of range, a
/// payload no frame can carry), a full queue, a pool that stopped or is
/// shutting down.
pub(crate) fn refused(id: &str, refused: &SubmitError) -> Line {
    refused_after(id, refused, 0, 0.0)
}

/// [`refused`], counting `attempts` (a daemon's claimed attempt, which the
/// pool would not take) over `duration_ms`.
pub(crate) fn refused_after(
    id: &str,
    refused: &SubmitError,
    attempts: u32,
    duration_ms: f64,
) -> Line {
    let message = refused.to_string();
    let error = ErrorFields {
        attempts,
        ..ErrorFields::new(refused_kind(refused), &message)
    };
    error_line(id, Status::Failed, &error, duration_ms)
}

/// The error kind of a refusal by the pool.
pub(crate) fn refused_kind(refused: &SubmitError) -> &'static str {
    match refused {
        SubmitError::QueueFull(_) => "queue_full",
        SubmitError::InvalidPriority(_) | SubmitError::PayloadTooLarge { .. } => "invalid_input",
        SubmitError::Failed { .. } => "pool_failed",
        _ => "shutting_down",
    }
}

/// The line of an input line that is not a valid task.
pub(crate) fn invalid(line_no: u64, message: &str) -> Line {
    invalid_with_id(None, line_no, message)
}

/// The line of an input line that is not a valid task, under the user's own id
/// when it had one (its line number otherwise); `line` is always there.
pub(crate) fn invalid_with_id(id: Option<&str>, line_no: u64, message: &str) -> Line {
    let id = id.map_or_else(|| line_no.to_string(), str::to_owned);
    let error = ErrorFields {
        line: Some(line_no),
        ..ErrorFields::new("invalid_input", message)
    };
    error_line(&id, Status::Invalid, &error, 0.0)
}

/// What a line without a result says besides its id and status.
struct ErrorFields<'a> {
    kind: &'a str,
    message: &'a str,
    attempts: u32,
    worker: Option<&'a str>,
    /// The input line, for a line that is not a valid task.
    line: Option<u64>,
}

impl<'a> ErrorFields<'a> {
    /// No attempt ran, on no worker.
    fn new(kind: &'a str, message: &'a str) -> Self {
        Self {
            kind,
            message,
            attempts: 0,
            worker: None,
            line: None,
        }
    }
}

/// A line without a result: `error: {kind, message}`, with the attempts and the
/// worker of the last one (0 and `null` when none ran).
fn error_line(id: &str, status: Status, error: &ErrorFields<'_>, duration_ms: f64) -> Line {
    let mut json = Vec::with_capacity(LINE_CAPACITY + error.message.len());
    json.extend_from_slice(b"{\"attempts\":");
    scalar(&mut json, error.attempts);
    json.extend_from_slice(b",\"duration_ms\":");
    scalar(&mut json, round3(duration_ms));
    json.extend_from_slice(b",\"error\":{\"kind\":");
    scalar(&mut json, error.kind);
    json.extend_from_slice(b",\"message\":");
    scalar(&mut json, error.message);
    json.extend_from_slice(b"},\"id\":");
    scalar(&mut json, id);
    if let Some(line) = error.line {
        json.extend_from_slice(b",\"line\":");
        scalar(&mut json, line);
    }
    json.extend_from_slice(b",\"status\":");
    scalar(&mut json, status.as_str());
    json.extend_from_slice(b",\"worker\":");
    scalar(&mut json, error.worker);
    json.push(b'}');
    Line {
        status,
        duration_ms,
        json,
    }
}

/// Appends one JSON scalar (a number, a string with its escapes, or `null`).
/// Writing into a `Vec` cannot fail, and none of these values is refused by
/// JSON (a non-finite float is written as `null`).
fn scalar(json: &mut Vec<u8>, value: impl Serialize) {
    let _ = value.serialize(&mut serde_json::Serializer::new(json));
}

/// The `duration_ms` and `id` of a result line this module wrote (its second
/// and third keys, after `attempts`), read without parsing the line: `None`
/// for text that does not begin as result lines do (an error line has its
/// `error` before its `id`), does not end as an object does, or whose id has
/// an escape in it.
pub(crate) fn written_head(line: &str) -> Option<(f64, &str)> {
    let rest = line
        .strip_prefix("{\"attempts\":")
        .filter(|_| line.ends_with('}'))?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let rest = rest
        .get(digits..)
        .filter(|_| digits > 0)?
        .strip_prefix(",\"duration_ms\":")?;
    let end = rest.bytes().position(|b| b == b',')?;
    let duration_ms = decimal(&rest[..end])?;
    let rest = rest[end..].strip_prefix(",\"id\":\"")?;
    let len = json_str::plain_len(rest.as_bytes());
    (rest.as_bytes().get(len) == Some(&b'"')).then(|| (duration_ms, &rest[..len]))
}

/// The number `text` writes when it is a plain decimal of at most 15 digits
/// (`0.759`, `12.0`: how these lines write a duration), computed as its
/// digits over a power of ten. Both are exact in an `f64`, so the one
/// division rounds correctly, as parsing does. `None` for any other text.
fn decimal(text: &str) -> Option<f64> {
    const TENS: [f64; 16] = [
        1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let short = !whole.is_empty() && whole.len() + fraction.len() <= 15;
    (short && digits(whole) && digits(fraction)).then(|| {
        let mantissa = whole
            .bytes()
            .chain(fraction.bytes())
            .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        mantissa as f64 / TENS[fraction.len()]
    })
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Lines as the daemon's feeder writes them, for other modules' tests.
#[cfg(test)]
pub(crate) mod written {
    use super::{error_line, result_line, ErrorFields, Status};

    /// An ok line of `id` whose result is a small map.
    pub(crate) fn ok(id: &str, duration_ms: f64) -> String {
        let payload = rmp_serde::to_vec_named(&serde_json::json!({"duration_ms": 9, "id": "x"}))
            .expect("encodes");
        result_line(id, &payload, 1, "worker-1", duration_ms).into_text()
    }

    /// A handler's error line of `id`, `failed` or `dead_letter`.
    pub(crate) fn failed(id: &str, status: Status, duration_ms: f64) -> String {
        let error = ErrorFields {
            attempts: 3,
            worker: Some("worker-1"),
            ..ErrorFields::new("handler", "no")
        };
        error_line(id, status, &error, duration_ms).into_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parsed(line: &Line) -> Value {
        serde_json::from_slice(&line.json).expect("every line is JSON")
    }

    #[test]
    fn a_refused_task_s_kind_names_why_it_was_refused() {
        let task = || pool_core::Task::new("echo", vec![0u8; 8]);
        let cases = [
            (
                SubmitError::PayloadTooLarge {
                    task: task(),
                    max_frame: 4,
                },
                "invalid_input",
            ),
            (SubmitError::QueueFull(task()), "queue_full"),
            (SubmitError::ShuttingDown(task()), "shutting_down"),
        ];
        for (refusal, kind) in cases {
            let line = parsed(&refused("t", &refusal));
            assert_eq!(line["error"]["kind"], kind, "{refusal}");
            assert_eq!(line["status"], "failed");
        }
    }

    #[test]
    fn a_result_line_has_every_key_in_alphabetical_order() {
        let payload =
            rmp_serde::to_vec_named(&json!({"b": [1, 2.5, null], "a": "x\"y"})).expect("encodes");
        let line = result_line("id\n1", &payload, 1, "worker-0", 1.23456);
        let text = String::from_utf8(line.json.clone()).expect("UTF-8");
        assert_eq!(
            text,
            r#"{"attempts":1,"duration_ms":1.235,"id":"id\n1","result":{"a":"x\"y","b":[1,2.5,null]},"status":"ok","worker":"worker-0"}"#
        );
        assert_eq!(line.status, Status::Ok);
    }

    #[test]
    fn the_duration_and_id_of_a_written_line_are_read_without_parsing_it() {
        let payload =
            rmp_serde::to_vec_named(&json!({"duration_ms": 9, "id": "x"})).expect("encodes");
        let err = ErrorFields::new("timeout", "late, \"very\"");
        for (line, ms, id) in [
            (result_line("a", &payload, 12, "w", 1.23456), 1.235, "a"),
            (result_line("b-2", &payload, 1, "w", 2.5e-7), 0.0, "b-2"),
            (
                result_line("c", &payload, 1, "w", 86_400_000.5),
                86_400_000.5,
                "c",
            ),
        ] {
            let text = line.into_text();
            let parsed = serde_json::from_str::<Value>(&text).expect("JSON");
            let (read_ms, read_id) = written_head(&text).expect("read");
            assert_eq!((read_ms, read_id), (ms, id), "{text}");
            let parsed_ms = parsed["duration_ms"].as_f64().expect("a number");
            assert_eq!(read_ms.to_bits(), parsed_ms.to_bits(), "{text}");
            assert_eq!(read_id, parsed["id"], "{text}");
        }
        for text in [
            "0",
            "0.0",
            "0.759",
            "12.5",
            "86400000.5",
            "999999999.999999",
            "0.001",
        ] {
            assert_eq!(decimal(text), text.parse().ok(), "{text}");
        }
        for text in [
            "",
            ".5",
            "5.",
            "1e3",
            "-1.0",
            "1.2.3",
            "1234567890.1234567",
            "inf",
        ] {
            assert_eq!(decimal(text), None, "{text}");
        }
        let failed = error_line("d", Status::Failed, &err, 7.0).into_text();
        let invalid = invalid(3, "bad").into_text();
        let escaped = result_line("q\"1", &payload, 1, "w", 1.0).into_text();
        for other in [
            failed.as_str(),
            invalid.as_str(),
            escaped.as_str(),
            r#"{"id":"a","status":"ok","duration_ms":1}"#,
            r#"{"attempts":,"duration_ms":1,"id":"a"}"#,
            r#"{"attempts":1,"duration_ms":null,"id":"a"}"#,
            r#"{"attempts":1,"duration_ms":1.5,"error":{},"id":"a"}"#,
            r#"{"attempts":1,"duration_ms":1.5,"id":"a"#,
            r#"{"attempts":1,"duration_ms":1.5,"id":"a","resu"#,
            "",
        ] {
            assert_eq!(written_head(other), None, "{other}");
        }
    }

    #[test]
    fn a_result_that_is_not_msgpack_is_given_in_hex() {
        let line = result_line("a", &[0xc1, 0x00, 0xff], 2, "worker-3", 0.0);
        let value = parsed(&line);
        assert_eq!(value["result_hex"], "c100ff");
        assert!(value.get("result").is_none(), "{value}");
        assert_eq!(value["attempts"], 2);
        assert_eq!(value["worker"], "worker-3");
    }

    #[test]
    fn out_of_attempts_is_a_dead_letter_line_and_the_rest_failed() {
        assert_eq!(status_of(FinalStatus::DeadLettered), Status::DeadLetter);
        assert_eq!(status_of(FinalStatus::Exhausted), Status::DeadLetter);
        assert_eq!(status_of(FinalStatus::Cancelled), Status::Failed);
        assert_eq!(status_of(FinalStatus::Failed), Status::Failed);
    }

    #[test]
    fn error_lines_carry_kind_message_attempts_worker_and_line() {
        let error = ErrorFields {
            attempts: 3,
            worker: Some("worker-2"),
            ..ErrorFields::new("timeout", "took too long")
        };
        let value = parsed(&error_line("t", Status::DeadLetter, &error, 2.0));
        assert_eq!(
            value,
            json!({"attempts": 3, "duration_ms": 2.0, "error": {"kind": "timeout",
                "message": "took too long"}, "id": "t", "status": "dead_letter",
                "worker": "worker-2"})
        );
        let invalid = parsed(&invalid(9, "bad \"line\""));
        assert_eq!(
            invalid,
            json!({"attempts": 0, "duration_ms": 0.0, "error": {"kind": "invalid_input",
                "message": "bad \"line\""}, "id": "9", "line": 9, "status": "invalid",
                "worker": null})
        );
    }
}
