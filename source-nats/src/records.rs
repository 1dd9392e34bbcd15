//! Turning what the queue holds (result lines, dead letters) into
//! [`TaskRecord`]s, and a task's result line into the line stored.

use std::sync::Arc;

use async_nats::jetstream::Message;
use serde_json::Value;
use task_source::{ErrorInfo, NewTask, SourceError, TaskRecord, TaskState};

use crate::message::{
    Body, DEFAULT_PRIORITY, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_ERROR_KIND, HEADER_ID,
};

/// What a task's stored result line carries after the keys of `run`'s
/// output line, for the listings: the task's `type` and `priority`, kept as
/// the text that ends the stored line (`,"type":T,"priority":P}`), so that
/// the `run` line is given back byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed(Arc<str>);

impl Listed {
    /// The keys of a task of type `task_type` at `priority`.
    pub(crate) fn of(task_type: &str, priority: u8) -> Self {
        let task_type = Value::from(task_type);
        Self(format!(r#","type":{task_type},"priority":{priority}}}"#).into())
    }

    /// The keys of `body`'s task.
    pub(crate) fn of_body(body: &Body) -> Self {
        Self::of(&body.task_type, body.priority.min(100))
    }

    /// The line to store for `line`, `run`'s output line (one JSON object):
    /// `line` with these keys after its own. `line` as it is when it is no
    /// object with keys, or when the keys would take it past `max` bytes (a
    /// task type of kilobytes; the server takes no larger message).
    pub(crate) fn stored(&self, line: &str, max: usize) -> String {
        let head = line
            .strip_suffix('}')
            .filter(|head| head.starts_with('{') && !head[1..].trim().is_empty());
        match head {
            Some(head) if head.len() + self.0.len() <= max => format!("{head}{}", self.0),
            _ => line.to_owned(),
        }
    }

    /// `run`'s line of `stored`, a line [`stored`](Self::stored) made with
    /// these keys; `None` when `stored` does not end with them.
    fn run_line(&self, stored: &str) -> Option<String> {
        stored
            .strip_suffix(&*self.0)
            .map(|head| format!("{head}}}"))
    }
}

/// The record of a settled task from its result line (the bucket's value).
/// Its type and priority are the line's `type` and `priority`; a line
/// without them (stored by an earlier version, or no task's) gives an empty
/// type and [`DEFAULT_PRIORITY`]. Its line is `run`'s, without the keys
/// [`Listed::stored`] added.
pub(crate) fn from_line(id: &str, line: &str, at_ms: u64) -> TaskRecord {
    let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    let task_type = value.get("type").and_then(Value::as_str);
    let priority = value
        .get("priority")
        .and_then(Value::as_u64)
        .and_then(|p| u8::try_from(p).ok())
        .filter(|p| *p <= 100);
    let run_line = task_type
        .zip(priority)
        .and_then(|(t, p)| Listed::of(t, p).run_line(line))
        .unwrap_or_else(|| line.to_owned());
    let state = match value.get("status").and_then(Value::as_str) {
        Some("ok") => TaskState::Ok,
        Some("dead_letter") => TaskState::DeadLetter,
        Some("cancelled") => TaskState::Cancelled,
        _ => TaskState::Failed,
    };
    let error = value.get("error").map(|e| ErrorInfo {
        kind: e
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    });
    TaskRecord {
        task: NewTask {
            id: id.to_owned(),
            task_type: task_type.unwrap_or_default().to_owned(),
            payload: "null".into(),
            priority: priority.unwrap_or(DEFAULT_PRIORITY),
            timeout_ms: None,
        },
        state,
        attempts: value
            .get("attempts")
            .and_then(Value::as_u64)
            .map_or(1, |a| a as u32),
        error,
        line: Some(run_line),
        created_ms: at_ms,
        updated_ms: at_ms,
        due_ms: 0,
        history: Vec::new(),
    }
}

/// A dead letter: the task, its stream sequence and its record.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) sequence: u64,
    pub(crate) record: TaskRecord,
}

/// Whether a dead letter's message was a task (one that was not is lettered
/// with the raw bytes it carried, under no task type).
pub(crate) fn is_task(record: &TaskRecord) -> bool {
    !record.task.task_type.is_empty()
}

/// The dead letter stored in `message` (read from the dead-letter stream).
pub(crate) fn dead_letter(message: &Message) -> Result<DeadLetter, SourceError> {
    let info = message
        .info()
        .map_err(|e| SourceError::Backend(format!("a dead letter without its stream info: {e}")))?;
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let at_ms = (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let task = match serde_json::from_slice::<Body>(&message.payload) {
        Ok(body) => body.into_task(),
        Err(_) => NewTask {
            id: header(HEADER_ID),
            task_type: String::new(),
            payload: String::from_utf8_lossy(&message.payload).into_owned(),
            priority: DEFAULT_PRIORITY,
            timeout_ms: None,
        },
    };
    Ok(DeadLetter {
        sequence: info.stream_sequence,
        record: TaskRecord {
            task,
            state: TaskState::DeadLetter,
            attempts: header(HEADER_ATTEMPTS).parse().unwrap_or(0),
            error: Some(ErrorInfo {
                kind: header(HEADER_ERROR_KIND),
                message: header(HEADER_ERROR),
            }),
            line: None,
            created_ms: at_ms,
            updated_ms: at_ms,
            due_ms: 0,
            history: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN_LINE: &str = r#"{"id":"a","status":"ok","result":{"type":"x"},"attempts":1}"#;

    /// A stored line carries the task's type and priority after `run`'s
    /// keys, and gives both back, with `run`'s line byte for byte (a type
    /// that JSON escapes included).
    #[test]
    fn a_stored_line_gives_back_the_type_the_priority_and_the_run_line() {
        for (task_type, priority) in [("echo", 10), ("say \"hi\"\n\u{1}é", 0), ("", 100)] {
            let stored = Listed::of(task_type, priority).stored(RUN_LINE, usize::MAX);
            let value: Value = serde_json::from_str(&stored).expect("JSON");
            assert_eq!(value["type"], task_type, "{stored}");
            assert_eq!(value["priority"], priority, "{stored}");
            assert_eq!(value["result"]["type"], "x", "{stored}");
            let record = from_line("a", &stored, 7);
            assert_eq!(record.task.task_type, task_type);
            assert_eq!(record.task.priority, priority);
            assert_eq!(record.line.as_deref(), Some(RUN_LINE));
            assert_eq!(record.state, TaskState::Ok);
        }
    }

    /// A line stored by an earlier version (no `type`, no `priority`) lists
    /// with an empty type and the default priority, its line as it is.
    #[test]
    fn a_line_without_the_keys_has_no_type_and_the_default_priority() {
        let record = from_line("a", RUN_LINE, 7);
        assert_eq!(record.task.task_type, "");
        assert_eq!(record.task.priority, DEFAULT_PRIORITY);
        assert_eq!(record.line.as_deref(), Some(RUN_LINE));
    }

    /// The keys are left out where they would take the line past the
    /// server's limit, or where the line is no object with keys.
    #[test]
    fn the_keys_are_left_out_past_the_limit_and_from_lines_that_are_no_object() {
        let listed = Listed::of("echo", 10);
        let fits = RUN_LINE.len() - 1 + r#","type":"echo","priority":10}"#.len();
        assert_ne!(listed.stored(RUN_LINE, fits), RUN_LINE);
        assert_eq!(listed.stored(RUN_LINE, fits - 1), RUN_LINE);
        for line in ["{}", "{ }", "[1]", "\"}\"", "{\"id\":\"a\"} "] {
            assert_eq!(listed.stored(line, usize::MAX), line);
        }
    }
}
