//! One input line of `cortex-pool run`: `{"id", "type", "payload", "priority", "timeout_ms"}`.

use std::time::Duration;

use pool_core::Task;
use serde::Deserialize;

/// The longest duration, in milliseconds, any user input may give (a task's
/// `timeout_ms`, the duration flags): [`pool_core::task::MAX_TIMEOUT`].
pub(crate) const MAX_DURATION_MS: u64 = pool_core::task::MAX_TIMEOUT.as_millis() as u64;

/// A parsed task line.
#[derive(Debug)]
pub(crate) struct TaskLine {
    pub(crate) id: String,
    pub(crate) task: Task,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<String>,
    #[serde(rename = "type")]
    task_type: String,
    #[serde(default)]
    payload: serde_json::Value,
    priority: Option<u8>,
    timeout_ms: Option<u64>,
}

/// Parses line `line_no` (1-based). A task without an id gets its line number.
pub(crate) fn parse(line: &str, line_no: u64) -> Result<TaskLine, String> {
    let raw: Raw = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if raw.task_type.is_empty() {
        return Err("\"type\" must not be empty".to_owned());
    }
    let payload = rmp_serde::to_vec_named(&raw.payload).map_err(|e| e.to_string())?;
    let mut task = Task::new(raw.task_type, payload);
    if let Some(priority) = raw.priority {
        if priority > pool_core::task::PRIORITY_LOWEST {
            return Err(format!("priority {priority} is out of range 0..=100"));
        }
        task = task.with_priority(priority);
    }
    if let Some(ms) = raw.timeout_ms {
        if ms == 0 {
            return Err("timeout_ms must be greater than zero".to_owned());
        }
        if ms > MAX_DURATION_MS {
            return Err(format!(
                "timeout_ms {ms} is above the maximum {MAX_DURATION_MS} (365 days)"
            ));
        }
        task = task.with_timeout(Duration::from_millis(ms));
    }
    let id = raw.id.unwrap_or_else(|| line_no.to_string());
    Ok(TaskLine { id, task })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_missing_id_becomes_the_line_number() {
        assert_eq!(parse(r#"{"type":"echo"}"#, 7).unwrap().id, "7");
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        assert!(parse("not json", 1).is_err());
        assert!(parse(r#"{"payload":1}"#, 1).is_err());
        assert!(parse(r#"{"type":"echo","priority":101}"#, 1).is_err());
        assert!(parse(r#"{"type":"echo","timeout_ms":0}"#, 1).is_err());
        assert!(parse(r#"{"type":"echo","typo":1}"#, 1).is_err());
        let huge = parse(r#"{"type":"echo","timeout_ms":68719476735}"#, 1).unwrap_err();
        assert!(huge.contains("timeout_ms 68719476735"), "{huge}");
    }
}
