//! Turning what the queue holds (result lines, dead letters) into
//! [`TaskRecord`]s.

use async_nats::jetstream::Message;
use serde_json::Value;
use task_source::{ErrorInfo, NewTask, SourceError, TaskRecord, TaskState};

use crate::message::{Body, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_ERROR_KIND, HEADER_ID};

/// The record of a settled task from its result line (the bucket's value).
pub(crate) fn from_line(id: &str, line: &str, at_ms: u64) -> TaskRecord {
    let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
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
            task_type: value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            payload: "null".into(),
            priority: 50,
            timeout_ms: None,
        },
        state,
        attempts: value
            .get("attempts")
            .and_then(Value::as_u64)
            .map_or(1, |a| a as u32),
        error,
        line: Some(line.to_owned()),
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
            priority: 50,
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
