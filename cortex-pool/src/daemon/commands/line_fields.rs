//! The fields `submit` fills into a task line before sending it: a generated
//! `id` where the line has none (so a batch sent again after a lost
//! connection is taken once), and the `--priority` and `--timeout-ms`
//! defaults where the line sets none. A top-level key whose value is `null`
//! sets none (the daemon reads it as absent): its `null` is replaced where it
//! stands. The fields are spliced into the text, the missing ones after the
//! line's own keys: the rest of the line, its payload included, is sent as
//! written (key order, number spelling, big integers), and a column the
//! daemon names in a refusal is the line's own (unless a `null` before it
//! was replaced).

use std::fmt::Write;
use std::ops::Range;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A top-level key as the line writes it.
#[derive(Default)]
enum Member<'a> {
    /// No such key.
    #[default]
    Absent,
    /// The key, with its value's text (`null` too).
    Given(&'a RawValue),
}

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(Self::Given)
    }
}

/// What `submit` does about one key of a line.
enum Fill {
    /// The line sets it: left as written.
    Keep,
    /// The line has no such key: written first.
    Add,
    /// The key's value is `null`, at these bytes: replaced there.
    Replace(Range<usize>),
}

impl Member<'_> {
    /// What to do about this key of `line`, which it was read from.
    fn fill(&self, line: &str) -> Fill {
        match self {
            Self::Absent => Fill::Add,
            Self::Given(value) if value.get() == "null" => {
                null_at(line, value.get()).map_or(Fill::Keep, Fill::Replace)
            }
            Self::Given(_) => Fill::Keep,
        }
    }
}

/// Where `null`, a slice of `line` (a value read from it), stands in it.
fn null_at(line: &str, null: &str) -> Option<Range<usize>> {
    let at = (null.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let place = at..at.checked_add(null.len())?;
    (line.get(place.clone()) == Some("null")).then_some(place)
}

/// The top-level keys `submit` may fill in (a key inside the payload is
/// not one of them).
#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow, default)]
    id: Member<'a>,
    /// Only whether the line has one: a line without it is refused, and
    /// sent as it is, so its refusal names the place the user's line ends.
    #[serde(borrow, default, rename = "type")]
    task_type: Member<'a>,
    #[serde(borrow, default)]
    priority: Member<'a>,
    #[serde(borrow, default)]
    timeout_ms: Member<'a>,
}

/// `line` with a generated `id`, and `priority` and `timeout_ms` where given,
/// each only when the line has no such top-level key or its value is `null`:
/// a key the line lacks is written after its own keys, a `null` value is
/// replaced where it stands; and whether the `id` is one it generated (the
/// line had none). A line that is not a JSON object is sent as it is, for
/// the daemon to refuse with its own reason, and so is one without a `type`
/// (its refusal's column, the end of the object, is then the end of the
/// line as written).
pub(super) fn fill(line: String, priority: Option<u8>, timeout_ms: Option<u64>) -> (String, bool) {
    match spliced(&line, priority, timeout_ms) {
        Some((out, generated)) => (out, generated),
        None => (line, false),
    }
}

/// [`fill`]'s line and whether it generated the id, or `None` when the line
/// is sent as it is.
fn spliced(line: &str, priority: Option<u8>, timeout_ms: Option<u64>) -> Option<(String, bool)> {
    line.trim_start().strip_prefix('{')?;
    let top = serde_json::from_str::<TopLevel<'_>>(line).ok()?;
    if matches!(top.task_type, Member::Absent) {
        return None;
    }
    let id = top.id.fill(line);
    // A ULID: digits and capitals, nothing to escape.
    let new_id = (!matches!(id, Fill::Keep))
        .then(|| format!("\"{}\"", crate::daemon::durable::ids::generate()));
    let generated = new_id.is_some();
    let keys = [
        ("id", id, new_id),
        (
            "priority",
            top.priority.fill(line),
            priority.map(|p| p.to_string()),
        ),
        (
            "timeout_ms",
            top.timeout_ms.fill(line),
            timeout_ms.map(|ms| ms.to_string()),
        ),
    ];
    let mut tail = String::new();
    let mut replaced: Vec<(Range<usize>, String)> = Vec::new();
    for (key, fill, value) in keys {
        let Some(value) = value else { continue };
        match fill {
            Fill::Keep => {}
            Fill::Add => {
                if !tail.is_empty() {
                    tail.push(',');
                }
                let _ = write!(tail, "\"{key}\":{value}");
            }
            Fill::Replace(place) => replaced.push((place, value)),
        }
    }
    if tail.is_empty() && replaced.is_empty() {
        return None;
    }
    // The object parsed whole: its last `}` (white space may follow) closes it.
    let close = line.trim_end().len().checked_sub(1)?;
    // It has a `type`: a comma goes between its keys and the added ones.
    let comma = if tail.is_empty() { "" } else { "," };
    replaced.sort_by_key(|(place, _)| place.start);
    let mut out = String::with_capacity(line.len() + tail.len() + 64);
    let mut from = 0;
    for (place, value) in replaced {
        out.push_str(line.get(from..place.start)?);
        out.push_str(&value);
        from = place.end;
    }
    out.push_str(line.get(from..close)?);
    out.push_str(comma);
    out.push_str(&tail);
    out.push_str(line.get(close..)?);
    Some((out, generated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn filled(line: String, priority: Option<u8>, timeout_ms: Option<u64>) -> String {
        fill(line, priority, timeout_ms).0
    }

    fn id_of(line: &str) -> String {
        let value: Value = serde_json::from_str(line).unwrap();
        value["id"].as_str().unwrap().to_owned()
    }

    /// The generated id goes after the line's own keys, so the line is sent
    /// as written up to its closing brace: a column the daemon names in a
    /// refusal is the column in the line as the user wrote it.
    #[test]
    fn an_object_without_an_id_gets_one_and_keeps_the_rest_as_written() {
        let line = r#" {"type":"echo", "payload": {"b":1.50,"a":[1e2]}} "#;
        let (out, generated) = fill(line.to_owned(), None, None);
        assert!(generated);
        assert_eq!(id_of(&out).len(), 26, "{out}");
        assert!(
            out.starts_with(r#" {"type":"echo", "payload": {"b":1.50,"a":[1e2]},"id":""#),
            "{out}"
        );
        assert!(out.ends_with("\"} "), "{out}");
        let empty: Value =
            serde_json::from_str(&filled(r#"{ "type":"t" }"#.to_owned(), None, None)).unwrap();
        assert_eq!(empty.as_object().unwrap().len(), 2, "{empty}");
        assert!(empty["id"].is_string());
    }

    #[test]
    fn an_id_inside_the_payload_is_not_the_line_s_id() {
        // Sent again after a lost connection, a line left without an id
        // would be stored twice under two generated ones.
        for line in [
            r#"{"type":"echo","payload":{"id":7}}"#,
            r#"{"type":"echo","payload":"id"}"#,
            r#"{"type":"id","payload":["\"id\""]}"#,
        ] {
            let out = filled(line.to_owned(), None, None);
            assert_eq!(id_of(&out).len(), 26, "{out}");
            assert!(out.starts_with(&line[..line.len() - 1]), "{out}");
        }
    }

    #[test]
    fn lines_with_an_id_or_that_are_no_object_are_left_as_they_are() {
        assert!(!fill(r#"{"id":"mine","type":"t"}"#.to_owned(), Some(1), None).1);
        for line in [
            r#"{"payload":1}"#,
            "{}",
            r#"{"id":"mine","type":"echo"}"#,
            r#"["type","echo"]"#,
            r#"{"type":"echo""#,
            "not json",
            "",
        ] {
            assert_eq!(filled(line.to_owned(), None, None), line);
        }
    }

    #[test]
    fn defaults_fill_only_missing_fields_and_leave_the_payload_as_written() {
        let set = r#"{"id":"a","type":"echo","priority":1,"timeout_ms":7}"#;
        assert_eq!(filled(set.to_owned(), Some(5), Some(100)), set);
        let line = r#"{"id":"b","type":"echo","payload":{"z":1,"a":18446744073709551616}}"#;
        let out = filled(line.to_owned(), Some(5), Some(100));
        assert_eq!(
            out,
            r#"{"id":"b","type":"echo","payload":{"z":1,"a":18446744073709551616},"priority":5,"timeout_ms":100}"#
        );
        let nested = r#"{"id":"c","type":"t","payload":{"priority":1}}"#;
        let out = filled(nested.to_owned(), Some(5), None);
        assert_eq!(
            out,
            r#"{"id":"c","type":"t","payload":{"priority":1},"priority":5}"#
        );
    }

    /// A `null` top-level `id` sets none (the daemon reads it as absent):
    /// it is replaced where it stands by a generated one, so the line sent
    /// again after a lost connection names the same task, and is not stored
    /// twice under two ids the daemon made up.
    #[test]
    fn a_null_id_is_replaced_where_it_stands() {
        let line = r#"{"type":"echo", "id" : null ,"payload":{"id":null}}"#;
        let out = filled(line.to_owned(), None, None);
        let id = id_of(&out);
        assert_eq!(id.len(), 26, "{out}");
        assert_eq!(
            out,
            format!(r#"{{"type":"echo", "id" : "{id}" ,"payload":{{"id":null}}}}"#)
        );
        let task = crate::daemon::durable::parse::parse(&out).expect("a task");
        assert_eq!(task.id, id, "the daemon takes the client's id");
    }

    /// `priority` and `timeout_ms` set to `null` set none either: the
    /// defaults replace them in place (a key written twice would be refused).
    #[test]
    fn null_priority_and_timeout_take_the_defaults_in_place() {
        let line = r#"{"timeout_ms":null,"id":"a","type":"echo","priority":null}"#;
        let out = filled(line.to_owned(), Some(5), Some(100));
        assert_eq!(
            out,
            r#"{"timeout_ms":100,"id":"a","type":"echo","priority":5}"#
        );
        let task = crate::daemon::durable::parse::parse(&out).expect("a task");
        assert_eq!((task.priority, task.timeout_ms), (5, Some(100)));
        // Without defaults to give, a null is left for the daemon's own.
        assert_eq!(filled(line.to_owned(), None, None), line);
        // Added and replaced at once.
        let out = filled(r#"{"type":"echo","id":null}"#.to_owned(), Some(7), None);
        let id = id_of(&out);
        assert_eq!(
            out,
            format!(r#"{{"type":"echo","id":"{id}","priority":7}}"#)
        );
    }

    /// A line sent again after a lost connection is taken once: its `null`
    /// id was replaced by the same generated id both times.
    #[tokio::test]
    async fn a_line_with_a_null_id_sent_twice_is_stored_once() {
        use crate::daemon::protocol::Reply;
        let daemon = crate::daemon::test_daemon::daemon().await;
        let line = filled(r#"{"id":null,"type":"echo"}"#.to_owned(), None, None);
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            crate::daemon::durable::api::submit(vec![line.clone()], false, 1, true, &daemon, &tx)
                .await
                .unwrap();
            drop(tx);
            while let Some(reply) = rx.recv().await {
                if let Reply::LinesText { lines } = reply {
                    answers.extend(lines);
                }
            }
        }
        let answers: Vec<Value> = answers
            .iter()
            .map(|a| serde_json::from_str(a).unwrap())
            .collect();
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[0]["id"], id_of(&line));
        assert_eq!(answers[1]["id"], id_of(&line));
        assert_eq!(answers[0].get("duplicate"), None, "{answers:?}");
        assert_eq!(answers[1]["duplicate"], true, "{answers:?}");
        let listed = daemon.source.list(task_source::Filter::default()).await;
        assert_eq!(listed.unwrap().len(), 1, "one task stored");
    }
}
