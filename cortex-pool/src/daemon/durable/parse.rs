//! A submitted line (`run`'s input format) → a [`NewTask`] for the source: the
//! same fields and checks as `run`, the payload kept as JSON text, and an id
//! generated when the line has none.

use task_source::NewTask;

use crate::cli::task_fields;

/// Why a line was refused: the reason, and the user's id when the line had one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) id: Option<String>,
    pub(crate) reason: String,
}

/// Parses one line.
pub(crate) fn parse(line: &str) -> Result<NewTask, Refused> {
    let raw = task_fields::read(line).map_err(|e| Refused {
        id: user_id(line),
        reason: format!("invalid_input: {e}"),
    })?;
    let refuse = |reason: String| Refused {
        id: raw.id.as_deref().map(str::to_owned),
        reason: format!("invalid_input: {reason}"),
    };
    if raw.task_type.is_empty() {
        return Err(refuse("\"type\" must not be empty".into()));
    }
    if let Some(why) = raw.payload_unfit(line) {
        return Err(refuse(format!("payload: {why}")));
    }
    if let Some(id) = &raw.id {
        if id.is_empty() || id.len() > 256 {
            return Err(refuse("\"id\" must have 1 to 256 bytes".into()));
        }
    }
    // The same ranges as `run`'s: a timeout up to the pool's `MAX_TIMEOUT`.
    if let Some(why) = raw.out_of_range() {
        return Err(refuse(why));
    }
    let priority = raw.priority.unwrap_or(pool_core::task::PRIORITY_DEFAULT);
    Ok(NewTask {
        id: raw
            .id
            .map_or_else(super::ids::generate, std::borrow::Cow::into_owned),
        task_type: raw.task_type.into_owned(),
        payload: raw.payload.unwrap_or("null").to_owned(),
        priority,
        timeout_ms: raw.timeout_ms,
    })
}

/// The `id` of a line that did not parse as a task, if it is an object with one.
fn user_id(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_tasks_with_their_own_or_a_generated_id() {
        let t = parse(r#"{"id":"a","type":"echo","payload":{"x": 1},"priority":3}"#).unwrap();
        assert_eq!(
            (t.id.as_str(), t.payload.as_str(), t.priority),
            ("a", r#"{"x": 1}"#, 3)
        );
        let t = parse(r#"{"type":"echo"}"#).unwrap();
        assert_eq!(t.id.len(), 26);
        assert_eq!(t.payload, "null");
    }

    #[test]
    fn bad_lines_are_refused_naming_the_field_and_keeping_the_id() {
        let r = parse(r#"{"id":"k","type":"echo","timeout_ms":68719476735}"#).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("k"));
        assert!(r.reason.contains("timeout_ms"), "{}", r.reason);
        assert!(parse(r#"{"type":"echo","priority":101}"#).is_err());
        assert!(parse(r#"{"type":""}"#).is_err());
        let r = parse(r#"{"id":"z","type":"echo","typo":1}"#).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("z"));
        assert!(parse("not json").unwrap_err().id.is_none());
    }

    /// A timeout is checked as `run` checks it: up to the pool's
    /// `MAX_TIMEOUT` (365 days), refused above it with `run`'s words.
    #[test]
    fn timeouts_up_to_365_days_are_taken_as_run_takes_them() {
        let max = pool_core::task::MAX_TIMEOUT.as_millis();
        let longest = format!(r#"{{"type":"echo","timeout_ms":{max}}}"#);
        assert_eq!(parse(&longest).unwrap().timeout_ms, Some(31_536_000_000));
        for ms in [max + 1, 0] {
            let line = format!(r#"{{"type":"echo","timeout_ms":{ms}}}"#);
            let run = crate::cli::input::parse(&line, 1).unwrap_err().message;
            assert_eq!(
                parse(&line).unwrap_err().reason,
                format!("invalid_input: {run}")
            );
        }
    }

    /// The daemon keys tasks by id: one of 1 to 256 bytes (of UTF-8, once
    /// its escapes are read), as operations.md says.
    #[test]
    fn an_id_must_have_1_to_256_bytes() {
        let refused = "invalid_input: \"id\" must have 1 to 256 bytes";
        for id in [String::new(), "a".repeat(257), "é".repeat(129)] {
            let line = format!(r#"{{"id":"{id}","type":"echo"}}"#);
            assert_eq!(
                parse(&line).unwrap_err().reason,
                refused,
                "{} bytes",
                id.len()
            );
        }
        for id in ["a".repeat(256), "é".repeat(128), r"\u00e9".repeat(128)] {
            let line = format!(r#"{{"id":"{id}","type":"echo"}}"#);
            assert!(parse(&line).is_ok(), "{line}");
        }
    }

    /// MessagePack has no integer past 64 bits: the worker would get a float.
    #[test]
    fn a_payload_integer_wider_than_64_bits_is_refused_by_its_column() {
        let line = r#"{"id":"w","type":"echo","payload":{"n":123456789012345678901234567890}}"#;
        let r = parse(line).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("w"));
        assert!(
            r.reason
                .starts_with("invalid_input: payload: integer 123456789012345678901234567890")
                && r.reason.ends_with("at line 1 column 40"),
            "{}",
            r.reason
        );
        let fits = r#"{"type":"echo","payload":{"n":18446744073709551615,"s":"123456789012345678901234567890"}}"#;
        assert!(parse(fits).is_ok());
    }
}
