//! The fields `submit` fills into a task line before sending it: a generated
//! `id` where the line has none (so a batch sent again after a lost
//! connection is taken once), and the `--priority` and `--timeout-ms`
//! defaults where the line sets none. The fields are spliced into the text:
//! the rest of the line, its payload included, is sent as written (key
//! order, number spelling, big integers).

use std::fmt::Write;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

/// Whether a top-level key is present, whatever its value (`null` too).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Self(true))
    }
}

/// The top-level keys `submit` may fill in (a key inside the payload is
/// not one of them).
#[derive(Deserialize)]
struct TopLevel {
    #[serde(default)]
    id: Present,
    #[serde(default)]
    priority: Present,
    #[serde(default)]
    timeout_ms: Present,
}

/// `line` with a generated `id`, and `priority` and `timeout_ms` where given,
/// written first, each only when the line has no such top-level key. A line
/// that is not a JSON object is sent as it is, for the daemon to refuse with
/// its own reason.
pub(super) fn filled(line: String, priority: Option<u8>, timeout_ms: Option<u64>) -> String {
    let Some(members) = line.trim_start().strip_prefix('{') else {
        return line;
    };
    let Ok(top) = serde_json::from_str::<TopLevel>(&line) else {
        return line;
    };
    let mut head = String::with_capacity(64);
    if !top.id.0 {
        // A ULID: digits and capitals, nothing to escape.
        head.push_str("\"id\":\"");
        head.push_str(&crate::daemon::durable::ids::generate());
        head.push('"');
    }
    if let Some(p) = priority.filter(|_| !top.priority.0) {
        if !head.is_empty() {
            head.push(',');
        }
        let _ = write!(head, "\"priority\":{p}");
    }
    if let Some(ms) = timeout_ms.filter(|_| !top.timeout_ms.0) {
        if !head.is_empty() {
            head.push(',');
        }
        let _ = write!(head, "\"timeout_ms\":{ms}");
    }
    if head.is_empty() {
        return line;
    }
    let comma = if members.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    let mut out = String::with_capacity(line.len() + head.len() + 2);
    out.push('{');
    out.push_str(&head);
    out.push_str(comma);
    out.push_str(members);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn id_of(line: &str) -> String {
        let value: Value = serde_json::from_str(line).unwrap();
        value["id"].as_str().unwrap().to_owned()
    }

    #[test]
    fn an_object_without_an_id_gets_one_and_keeps_the_rest_as_written() {
        let out = filled(
            r#" {"type":"echo", "payload": {"b":1.50,"a":[1e2]}}"#.to_owned(),
            None,
            None,
        );
        assert_eq!(id_of(&out).len(), 26, "{out}");
        assert!(
            out.ends_with(r#""type":"echo", "payload": {"b":1.50,"a":[1e2]}}"#),
            "{out}"
        );
        let empty: Value = serde_json::from_str(&filled("{ }".to_owned(), None, None)).unwrap();
        assert_eq!(empty.as_object().unwrap().len(), 1, "{empty}");
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
            assert!(out.ends_with(&line[1..]), "{out}");
        }
    }

    #[test]
    fn lines_with_an_id_or_that_are_no_object_are_left_as_they_are() {
        for line in [
            r#"{"id":"mine","type":"echo"}"#,
            r#"{"type":"echo","id":null}"#,
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
            r#"{"priority":5,"timeout_ms":100,"id":"b","type":"echo","payload":{"z":1,"a":18446744073709551616}}"#
        );
        let nested = r#"{"id":"c","payload":{"priority":1}}"#;
        let out = filled(nested.to_owned(), Some(5), None);
        assert!(out.starts_with(r#"{"priority":5,"#), "{out}");
    }
}
