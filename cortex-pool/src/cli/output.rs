//! One output line of `cortex-pool run`:
//! `{"id", "status", "result" | "error": {"kind", "message"}, "attempts", "worker", "duration_ms"}`.

use pool_core::{FinalStatus, SubmitError, TaskError, TaskOutput};
use serde_json::{json, Map, Value};

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

/// A finished line: its JSON and what the summary needs.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) status: Status,
    pub(crate) duration_ms: f64,
    pub(crate) json: Value,
}

fn base(id: &str, status: Status) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("status".into(), json!(status.as_str()));
    m
}

/// The line of a task that produced a result.
pub(crate) fn ok(id: &str, out: &TaskOutput, duration_ms: f64) -> Line {
    let mut m = base(id, Status::Ok);
    match rmp_serde::from_slice::<Value>(&out.payload) {
        Ok(value) => m.insert("result".into(), value),
        Err(_) => m.insert("result_hex".into(), json!(hex(&out.payload))),
    };
    m.insert("attempts".into(), json!(out.attempts));
    m.insert("worker".into(), json!(out.worker));
    m.insert("duration_ms".into(), json!(round3(duration_ms)));
    Line {
        status: Status::Ok,
        duration_ms,
        json: Value::Object(m),
    }
}

/// The line of a task that ended without a result.
pub(crate) fn failed(id: &str, err: &TaskError, duration_ms: f64) -> Line {
    let status = match err.status {
        // Out of attempts: dead-lettered by the pool, or by whoever keeps the
        // task's retries (the daemon's task source) when the pool does not.
        FinalStatus::DeadLettered | FinalStatus::Exhausted => Status::DeadLetter,
        _ => Status::Failed,
    };
    let failure = err.failure.to_string();
    let mut line = error_line(id, status, err.failure.kind(), &failure, duration_ms);
    if let Value::Object(m) = &mut line.json {
        m.insert("attempts".into(), json!(err.attempts));
        m.insert("worker".into(), json!(err.worker));
    }
    line
}

/// The line of a task cancelled by a second interrupt whose worker did not answer
/// in time: it is not waited for (its worker is killed as `run` exits).
pub(crate) fn abandoned(id: &str, duration_ms: f64) -> Line {
    let message = "interrupted twice: cancelled and not waited for";
    error_line(id, Status::Failed, "cancelled", message, duration_ms)
}

/// The line of a task the pool refused (it is shutting down).
pub(crate) fn refused(id: &str, refused: &SubmitError) -> Line {
    let kind = match refused {
        SubmitError::QueueFull(_) => "queue_full",
        SubmitError::InvalidPriority(_) => "invalid_input",
        SubmitError::Failed { .. } => "pool_failed",
        _ => "shutting_down",
    };
    error_line(id, Status::Failed, kind, &refused.to_string(), 0.0)
}

/// The line of an input line that is not a valid task.
pub(crate) fn invalid(line_no: u64, message: &str) -> Line {
    invalid_with_id(None, line_no, message)
}

/// The line of an input line that is not a valid task, under the user's own id
/// when it had one (its line number otherwise); `line` is always there.
pub(crate) fn invalid_with_id(id: Option<&str>, line_no: u64, message: &str) -> Line {
    let id = id.map_or_else(|| line_no.to_string(), str::to_owned);
    let mut line = error_line(&id, Status::Invalid, "invalid_input", message, 0.0);
    if let Value::Object(m) = &mut line.json {
        m.insert("line".into(), json!(line_no));
    }
    line
}

/// A line without a result: `error: {kind, message}`, no attempts, no worker.
fn error_line(id: &str, status: Status, kind: &str, message: &str, duration_ms: f64) -> Line {
    let mut m = base(id, status);
    m.insert("error".into(), json!({"kind": kind, "message": message}));
    m.insert("attempts".into(), json!(0));
    m.insert("worker".into(), Value::Null);
    m.insert("duration_ms".into(), json!(round3(duration_ms)));
    Line {
        status,
        duration_ms,
        json: Value::Object(m),
    }
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
