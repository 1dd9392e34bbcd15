//! One input line of `cortex-pool run`: `{"id", "type", "payload", "priority", "timeout_ms"}`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use pool_core::protocol::emit::Scratch;
use pool_core::Task;

use super::task_fields;

/// The longest duration, in milliseconds, any user input may give (a task's
/// `timeout_ms`, the duration flags): [`pool_core::task::MAX_TIMEOUT`].
pub(crate) const MAX_DURATION_MS: u64 = pool_core::task::MAX_TIMEOUT.as_millis() as u64;

/// A parsed task line.
#[derive(Debug)]
pub(crate) struct TaskLine {
    pub(crate) id: String,
    pub(crate) task: Task,
}

/// Why an input line is not a task: the user's id when the line had one, and a
/// message that names what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// The line's own `id`, when it is a JSON object with a string `id`.
    pub(crate) id: Option<String>,
    /// What was wrong.
    pub(crate) message: String,
}

/// The ids already used in one input, with the line that used each first
/// (hashed with foldhash: seeded per process, and much cheaper than SipHash on
/// every line).
#[derive(Debug, Default)]
pub(crate) struct Ids(HashMap<String, u64, foldhash::fast::RandomState>);

impl Ids {
    /// Marks the id an invalid line `line_no` answers under as used: its own
    /// `id`, else its line number (unless an earlier line used it).
    pub(crate) fn use_for_invalid(&mut self, id: Option<&str>, line_no: u64) {
        let id = id.map_or_else(|| line_no.to_string(), str::to_owned);
        self.0.entry(id).or_insert(line_no);
    }
}

/// A UTF-8 byte-order mark, which some editors (Windows's) put before a
/// file's first line: not part of the line.
pub(crate) const BOM: &str = "\u{feff}";

/// The first line of an input without its byte-order mark, if it has one.
pub(crate) fn without_bom(first_line: &[u8]) -> &[u8] {
    first_line
        .strip_prefix(BOM.as_bytes())
        .unwrap_or(first_line)
}

/// Parses the bytes of line `line_no` (1-based) of an input in which `ids` were
/// already used: bytes that are not UTF-8, JSON errors (with the real line and
/// column) and a repeated id make the line invalid. An invalid line uses its id
/// too (its own, else its line number: the id its output line carries), so no
/// task runs under an id an invalid line answered under.
pub(crate) fn parse_line(bytes: &[u8], line_no: u64, ids: &mut Ids) -> Result<TaskLine, Invalid> {
    let mut invalid = |id: Option<String>, message: String| {
        ids.use_for_invalid(id.as_deref(), line_no);
        Invalid { id, message }
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let message = format!(
                "line {line_no} is not valid UTF-8 (column {})",
                e.valid_up_to() + 1
            );
            return Err(invalid(None, message));
        }
    };
    let parsed = match parse(text, line_no) {
        Ok(parsed) => parsed,
        Err(e) => {
            let id = e.id.or_else(|| own_id(text));
            return Err(invalid(id, at_line(e.message, line_no)));
        }
    };
    if let Some(first) = ids.0.get(&parsed.id) {
        return Err(Invalid {
            id: Some(parsed.id.clone()),
            message: format!("duplicate id {:?}: already used on line {first}", parsed.id),
        });
    }
    ids.0.insert(parsed.id.clone(), line_no);
    Ok(parsed)
}

/// The `id` of a line that is a JSON object with a string `id`, valid or not.
fn own_id(text: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut map)) => match map.remove("id") {
            Some(serde_json::Value::String(id)) => Some(id),
            _ => None,
        },
        _ => None,
    }
}

/// serde_json counts lines within the text it was given (always line 1 here):
/// name the input's real line instead.
fn at_line(message: String, line_no: u64) -> String {
    match message.rfind(" at line 1 column ") {
        Some(at) => format!(
            "{} at line {line_no} column {}",
            &message[..at],
            &message[at + " at line 1 column ".len()..]
        ),
        None => message,
    }
}

/// `message` of a text read from byte `start` of its line, its `at line 1
/// column N` moved to count from the line's start.
fn shifted(message: &str, start: usize) -> String {
    const AT: &str = " at line 1 column ";
    match message.rfind(AT) {
        Some(at) => match message[at + AT.len()..].parse::<usize>() {
            Ok(column) => format!("{}{AT}{}", &message[..at], column + start),
            Err(_) => message.to_owned(),
        },
        None => message.to_owned(),
    }
}

/// MessagePack's `nil`.
const MSGPACK_NIL: u8 = 0xc0;

/// The MessagePack encoding of a JSON payload's text (`nil` when there is
/// none). Missing or `null`: MessagePack `nil`; otherwise transcoded with no
/// tree of values in between.
fn msgpack(payload: Option<&str>) -> Result<Vec<u8>, String> {
    let Some(text) = payload else {
        return Ok(vec![MSGPACK_NIL]);
    };
    if let Some(encoded) = plain_msgpack(text) {
        return Ok(encoded);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut from = serde_json::Deserializer::from_str(text);
    let mut to = rmp_serde::Serializer::new(&mut out).with_struct_map();
    serde_transcode::transcode(&mut from, &mut to).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The MessagePack `str` of `json` when it is a JSON string with no escape in
/// it (see [`plain_string`]), written without a transcoder; `None` for any
/// other JSON, which the caller transcodes.
pub(crate) fn plain_msgpack(json: &str) -> Option<Vec<u8>> {
    plain_string(json).map(msgpack_str)
}

/// The contents of `json` when it is a JSON string with no escape in it (the
/// text between its quotes is then the string itself), which needs no
/// transcoder. `json` is valid JSON: no control character can be inside.
fn plain_string(json: &str) -> Option<&str> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    let short = u32::try_from(inner.len()).is_ok();
    (short && memchr::memchr(b'\\', inner.as_bytes()).is_none()).then_some(inner)
}

/// `text` as a MessagePack `str`, as `rmp_serde` writes it.
fn msgpack_str(text: &str) -> Vec<u8> {
    let mut head = Scratch::new();
    head.str_head(text.len());
    let mut out = Vec::with_capacity(head.bytes().len() + text.len());
    out.extend_from_slice(head.bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Why a line is not a task: what is wrong, and the line's own `id` when its
/// fields were read (an invalid line answers under it).
#[derive(Debug)]
pub(crate) struct NotATask {
    pub(crate) id: Option<String>,
    pub(crate) message: String,
}

impl From<String> for NotATask {
    fn from(message: String) -> Self {
        Self { id: None, message }
    }
}

/// Parses line `line_no` (1-based). A task without an id gets its line number.
pub(crate) fn parse(line: &str, line_no: u64) -> Result<TaskLine, NotATask> {
    let raw = task_fields::read(line).map_err(|e| e.to_string())?;
    let own = |message: String| NotATask {
        id: raw.id.as_deref().map(str::to_owned),
        message,
    };
    if raw.task_type.is_empty() {
        return Err(own("\"type\" must not be empty".to_owned()));
    }
    let payload = msgpack(raw.payload).map_err(|e| {
        // The transcoder read the payload alone: its column counts from there.
        let start = raw
            .payload
            .map_or(0, |p| p.as_ptr() as usize - line.as_ptr() as usize);
        own(format!("payload: {}", shifted(&e, start)))
    })?;
    // A too wide integer was transcoded as a float (`0xcb`): the text is
    // looked at only when the encoding holds that byte somewhere.
    if memchr::memchr(0xcb, &payload).is_some() {
        if let Some(why) = raw.payload_unfit(line) {
            return Err(own(format!("payload: {why}")));
        }
    }
    if let Some(why) = raw.out_of_range() {
        return Err(own(why));
    }
    let mut task = Task::new(&*raw.task_type, payload);
    if let Some(priority) = raw.priority {
        task = task.with_priority(priority);
    }
    if let Some(ms) = raw.timeout_ms {
        task = task.with_timeout(Duration::from_millis(ms));
    }
    let id = raw.id.map_or_else(|| line_no.to_string(), Cow::into_owned);
    Ok(TaskLine { id, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_payload_is_encoded_as_the_transcoder_encodes_it() {
        let long = format!("\"{}\"", "y".repeat(300));
        let samples = [
            "\"\"",
            "\"x\"",
            "\"grüße 日本 🎉\"",
            "\"a \\\"quoted\\\" word\"",
            "\"tab\\tand \\u00e9\"",
            long.as_str(),
        ];
        for json in samples {
            let mut want = Vec::new();
            let mut from = serde_json::Deserializer::from_str(json);
            let mut to = rmp_serde::Serializer::new(&mut want).with_struct_map();
            serde_transcode::transcode(&mut from, &mut to).unwrap();
            assert_eq!(msgpack(Some(json)).unwrap(), want, "{json}");
        }
        assert_eq!(
            plain_string("\"a\\\"b\""),
            None,
            "an escape goes to the transcoder"
        );
        assert_eq!(plain_string("\"plain\""), Some("plain"));
        assert_eq!(plain_string("12"), None);
    }

    #[test]
    fn a_full_line_parses_and_the_payload_becomes_msgpack() {
        let line = r#"{"id":"a","type":"echo","payload":{"x":1},"priority":0,"timeout_ms":50}"#;
        let t = parse(line, 3).unwrap();
        assert_eq!(t.id, "a");
        assert_eq!(t.task.priority, 0);
        assert_eq!(t.task.timeout, Some(Duration::from_millis(50)));
        let back: serde_json::Value = rmp_serde::from_slice(&t.task.payload).unwrap();
        assert_eq!(back, serde_json::json!({"x": 1}));
    }

    #[test]
    fn a_payload_keeps_its_keys_in_order_and_a_missing_one_is_nil() {
        let t = parse(
            r#"{"type":"echo","payload":{"z":[1,-2,0.5],"a":"\u00e9"}}"#,
            1,
        )
        .unwrap();
        let mut expected = Vec::new();
        expected.push(0x82); // a map of two
        expected.extend_from_slice(&[0xa1, b'z', 0x93, 0x01, 0xfe, 0xcb]);
        expected.extend_from_slice(&0.5f64.to_be_bytes());
        expected.extend_from_slice(&[0xa1, b'a', 0xa2, 0xc3, 0xa9]);
        assert_eq!(t.task.payload.as_ref(), expected.as_slice());
        for line in [r#"{"type":"echo"}"#, r#"{"type":"echo","payload":null}"#] {
            assert_eq!(parse(line, 1).unwrap().task.payload.as_ref(), [0xc0]);
        }
    }

    #[test]
    fn a_missing_id_becomes_the_line_number() {
        assert_eq!(parse(r#"{"type":"echo"}"#, 7).unwrap().id, "7");
    }

    #[test]
    fn parse_errors_name_the_real_line_and_column_and_keep_the_users_id() {
        let mut ids = Ids::default();
        let bad = parse_line(b"{\"type\": 1}", 42, &mut ids).unwrap_err();
        assert!(
            bad.message.ends_with("at line 42 column 10"),
            "{}",
            bad.message
        );
        assert_eq!(bad.id, None);
        let with_id = parse_line(
            br#"{"id":"mine","type":"echo","priority":500}"#,
            3,
            &mut ids,
        );
        assert_eq!(with_id.unwrap_err().id.as_deref(), Some("mine"));
        let utf8 = parse_line(b"{\"type\":\"\xff\"}", 5, &mut ids).unwrap_err();
        assert!(
            utf8.message.contains("line 5 is not valid UTF-8"),
            "{}",
            utf8.message
        );
    }

    /// MessagePack has no integer past 64 bits: transcoded, the number
    /// would reach the worker as a float.
    #[test]
    fn a_payload_integer_wider_than_64_bits_is_refused_by_its_place() {
        let mut ids = Ids::default();
        let line = br#"{"id":"big","type":"echo","payload":[1, -99999999999999999999]}"#;
        let bad = parse_line(line, 9, &mut ids).unwrap_err();
        assert_eq!(bad.id.as_deref(), Some("big"));
        assert!(
            bad.message
                .contains("payload: integer -99999999999999999999")
                && bad.message.ends_with("at line 9 column 41"),
            "{}",
            bad.message
        );
        let fine = parse_line(
            br#"{"type":"echo","payload":[1.5e30, 18446744073709551615]}"#,
            10,
            &mut ids,
        );
        assert!(fine.is_ok());
    }

    #[test]
    fn a_repeated_id_is_invalid_and_names_its_first_line() {
        let mut ids = Ids::default();
        parse_line(br#"{"id":"a","type":"echo"}"#, 1, &mut ids).unwrap();
        parse_line(br#"{"type":"echo"}"#, 2, &mut ids).unwrap();
        let again = parse_line(br#"{"id":"a","type":"echo"}"#, 3, &mut ids).unwrap_err();
        assert_eq!(again.id.as_deref(), Some("a"));
        assert!(
            again.message.contains("duplicate id \"a\""),
            "{}",
            again.message
        );
        assert!(again.message.contains("line 1"), "{}", again.message);
        let clash = parse_line(br#"{"id":"2","type":"echo"}"#, 4, &mut ids).unwrap_err();
        assert!(clash.message.contains("duplicate id"), "{}", clash.message);
    }

    /// An invalid line answers under its own id, else its line number: a later
    /// line with that id is a duplicate, so no two output lines share an id.
    #[test]
    fn an_invalid_line_uses_its_id_too() {
        let mut ids = Ids::default();
        parse_line(b"not json", 1, &mut ids).unwrap_err();
        parse_line(br#"{"id":"k","type":"echo","typo":1}"#, 2, &mut ids).unwrap_err();
        parse_line(b"\xff", 3, &mut ids).unwrap_err();
        for (line, no) in [
            (&br#"{"id":"1","type":"echo"}"#[..], 4),
            (br#"{"id":"k","type":"echo"}"#, 5),
            (br#"{"id":"3","type":"echo"}"#, 6),
        ] {
            let dup = parse_line(line, no, &mut ids).unwrap_err();
            assert!(dup.message.contains("duplicate id"), "{}", dup.message);
        }
        parse_line(br#"{"id":"fresh","type":"echo"}"#, 7, &mut ids).unwrap();
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        assert!(parse("not json", 1).is_err());
        assert!(parse(r#"{"payload":1}"#, 1).is_err());
        assert!(parse(r#"{"type":"echo","priority":101}"#, 1).is_err());
        assert!(parse(r#"{"type":"echo","timeout_ms":0}"#, 1).is_err());
        assert!(parse(r#"{"type":"echo","typo":1}"#, 1).is_err());
        let huge = parse(r#"{"type":"echo","timeout_ms":68719476735}"#, 1)
            .unwrap_err()
            .message;
        assert!(huge.contains("timeout_ms 68719476735"), "{huge}");
    }
}
