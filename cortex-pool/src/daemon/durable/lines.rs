//! The JSON lines of look-ups: a settled task's `run`-format line, else
//! `{"id", "status": "queued"|"running"|"retrying"|"unknown"}`.

use serde_json::{json, Value};
use task_source::{TaskRecord, TaskState, TaskStatus};

use crate::daemon::doc::Doc;
use crate::daemon::protocol::LineStatus;

/// The line for `id`, given where the source says it stands.
pub(crate) fn status(id: &str, status: Option<&TaskStatus>) -> Doc {
    match status {
        None => json!({"id": id, "status": "unknown"}).into(),
        Some(s) if s.state.is_settled() => settled(id, s.state, s.line.clone()),
        Some(s) => json!({"id": id, "status": s.state.as_str(), "attempts": s.attempts}).into(),
    }
}

/// The line for `id`, given its record: as [`status`].
pub(crate) fn lookup(id: &str, record: Option<&TaskRecord>) -> Doc {
    let standing = record.map(|r| TaskStatus {
        state: r.state,
        attempts: r.attempts,
        line: r.line.clone(),
    });
    status(id, standing.as_ref())
}

/// The line of `id`, settled in `state`: its stored `run`-format line, else
/// (none stored, or not JSON) `{"id", "status"}`.
/// The stored line is sent as it is, not parsed (it is checked to be JSON).
fn settled(id: &str, state: TaskState, line: Option<String>) -> Doc {
    line.and_then(Doc::text)
        .unwrap_or_else(|| json!({"id": id, "status": state.as_str()}).into())
}

/// The status to send beside the line of a task settled in `state`, when the
/// feeder writes that line (`ok`, `failed` and `dead_letter` lines, for the
/// states of the same names); `None` for any other line, which the client
/// reads whole. The client reads an ok line's `id` and `duration_ms` from its
/// beginning; a failed or dead-letter line it parses.
pub(crate) fn written_status(state: TaskState) -> Option<LineStatus> {
    match state {
        TaskState::Ok => Some(LineStatus::Ok),
        TaskState::Failed => Some(LineStatus::Failed),
        TaskState::DeadLetter => Some(LineStatus::DeadLetter),
        _ => None,
    }
}

/// Whether a record settled ok.
pub(crate) fn settled_ok(record: Option<&TaskRecord>) -> bool {
    record.is_some_and(|r| r.state == TaskState::Ok)
}

/// Whether a task settled ok, given where it stands.
pub(crate) fn status_ok(status: Option<&TaskStatus>) -> bool {
    status.is_some_and(|s| s.state == TaskState::Ok)
}

/// A dead letter as a `dlq list` entry (the same shape for the local store and a
/// queue).
pub(crate) fn dead_letter(r: &TaskRecord) -> Value {
    json!({
        "id": r.task.id,
        "type": r.task.task_type,
        "attempts": r.attempts,
        "error": r.error.as_ref().map(|e| json!({"kind": e.kind, "message": e.message})),
        "at_ms": r.updated_ms,
    })
}

/// A record as a `tasks` entry.
pub(crate) fn entry(r: &TaskRecord) -> Value {
    json!({
        "id": r.task.id,
        "type": r.task.task_type,
        "status": r.state.as_str(),
        "attempts": r.attempts,
        "priority": r.task.priority,
        "error": r.error.as_ref().map(|e| json!({"kind": e.kind, "message": e.message})),
        "created_ms": r.created_ms,
        "updated_ms": r.updated_ms,
        "due_ms": (r.due_ms > 0).then_some(r.due_ms),
        "history": r.history.iter().map(|h| json!({"at_ms": h.at_ms, "event": h.event, "attempt": h.attempt})).collect::<Vec<_>>(),
    })
}
