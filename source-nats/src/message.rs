//! The message format on the queue: subjects by priority band, headers and a
//! JSON body (documented in `docs/queue.md`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use task_source::NewTask;

/// The header naming the task id on a dead letter.
pub const HEADER_ID: &str = "Cortex-Id";
/// The header with a dead letter's error kind.
pub const HEADER_ERROR_KIND: &str = "Cortex-Error-Kind";
/// The header with a dead letter's error message.
pub const HEADER_ERROR: &str = "Cortex-Error";
/// The header with a dead letter's attempts.
pub const HEADER_ATTEMPTS: &str = "Cortex-Attempts";

/// A priority band: priorities 0…100 map onto three subjects, fetched highest
/// first — the pool's own bands, so `queue.byPriority` and the subjects agree.
pub use pool_core::queue::PriorityBand as Band;

/// The subject of `band` under `prefix`: `PREFIX.high`, `.normal` or `.low`.
pub fn subject(band: Band, prefix: &str) -> String {
    format!("{prefix}.{}", band.name())
}

/// A task's message body: `run`'s input line. Its payload is kept as the
/// JSON text it was written in (key order and numbers as they are), both
/// ways.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Body {
    /// The task id (also the `Nats-Msg-Id` header).
    pub id: String,
    /// The handler.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Any JSON value, as written; `null` when absent.
    #[serde(default = "null_payload")]
    pub payload: Box<RawValue>,
    /// 0 (highest) … 100 (lowest); [`DEFAULT_PRIORITY`] when absent.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Per-attempt timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The priority of a task whose body names none.
pub const DEFAULT_PRIORITY: u8 = 50;

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

/// JSON's `null`, as a payload.
fn null_payload() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

impl Body {
    /// The body of `task`.
    pub fn of(task: &NewTask) -> Self {
        Self {
            id: task.id.clone(),
            task_type: task.task_type.clone(),
            payload: RawValue::from_string(task.payload.clone()).unwrap_or_else(|_| null_payload()),
            priority: task.priority,
            timeout_ms: task.timeout_ms,
        }
    }

    /// The task it carries.
    pub fn into_task(self) -> NewTask {
        NewTask {
            id: self.id,
            task_type: self.task_type,
            payload: self.payload.get().to_owned(),
            priority: self.priority.min(100),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// The results bucket's key for a task id: the id itself when it is a valid
/// key (letters, digits, `-`, `_`, `=`, `/`, and `.` not at either end), else
/// `=` followed by the id's bytes in lower-case hex.
pub fn result_key(id: &str) -> String {
    let valid = !id.is_empty()
        && !id.starts_with(['.', '='])
        && !id.ends_with('.')
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.".contains(&b));
    if valid {
        id.to_owned()
    } else {
        let mut key = String::with_capacity(1 + 2 * id.len());
        key.push('=');
        for b in id.bytes() {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }
}

/// Why `id` cannot name a task on the queue, `None` when it can: a NATS
/// header (the task's `Nats-Msg-Id`, its dead letter's `Cortex-Id`) ends at a
/// line break and takes no other control character, and a header line the
/// client cannot read drops its connection on every delivery.
pub(crate) fn id_unfit(id: &str) -> Option<String> {
    id.chars().any(char::is_control).then(|| {
        format!(
            "invalid_input: the id {id:?} holds a control character, which a NATS header cannot carry"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_every_priority_highest_first() {
        assert_eq!(Band::of(0), Band::High);
        assert_eq!(Band::of(33), Band::High);
        assert_eq!(Band::of(34), Band::Normal);
        assert_eq!(Band::of(66), Band::Normal);
        assert_eq!(Band::of(67), Band::Low);
        assert_eq!(Band::of(100), Band::Low);
        assert_eq!(subject(Band::High, "cortex.tasks"), "cortex.tasks.high");
    }

    #[test]
    fn an_id_with_a_control_character_is_unfit_for_a_header() {
        for bad in ["a\nb", "d\r\n1", "tab\there", "nul\0", "del\u{7f}"] {
            let why = id_unfit(bad).expect(bad);
            assert!(why.starts_with("invalid_input: the id "), "{why}");
        }
        for fine in ["a", "grüße-日本", "x y", "=weird.id/"] {
            assert_eq!(id_unfit(fine), None, "{fine}");
        }
    }

    #[test]
    fn keys_are_the_id_or_its_hex() {
        assert_eq!(result_key("task-1.a"), "task-1.a");
        assert_eq!(result_key("a b"), "=612062");
        assert_eq!(result_key(".x"), "=2e78");
        assert_eq!(result_key("=1"), "=3d31");
    }

    #[test]
    fn the_body_is_the_run_input_line() {
        let task = NewTask {
            id: "a".into(),
            task_type: "echo".into(),
            payload: r#"{"x":1}"#.into(),
            priority: 7,
            timeout_ms: Some(5),
        };
        let text = serde_json::to_string(&Body::of(&task)).unwrap();
        assert_eq!(
            text,
            r#"{"id":"a","type":"echo","payload":{"x":1},"priority":7,"timeout_ms":5}"#
        );
        let back: Body = serde_json::from_str(&text).unwrap();
        assert_eq!(back.into_task(), task);
    }

    /// A payload goes on the queue and comes off it as written: its keys in
    /// their order, its numbers as spelled, its white space.
    #[test]
    fn a_payload_keeps_its_text_both_ways() {
        let written = r#"{"z":1, "a":2.50,"n":[1e3]}"#;
        let task = NewTask {
            id: "a".into(),
            task_type: "echo".into(),
            payload: written.into(),
            priority: 7,
            timeout_ms: None,
        };
        let text = serde_json::to_string(&Body::of(&task)).unwrap();
        assert!(text.contains(written), "{text}");
        let back: Body = serde_json::from_str(&text).unwrap();
        assert_eq!(back.into_task().payload, written);
        let bare: Body = serde_json::from_str(r#"{"id":"b","type":"echo"}"#).unwrap();
        assert_eq!(bare.into_task().payload, "null");
    }
}
