//! The per-line answers of `submit`, the same for the daemon's store and for
//! `submit --queue`: `{"id", "status": "accepted"}` (with `"duplicate": true`
//! and its `state` for an id the source knew), or `{"id", "status": "refused",
//! "error"}` (with the `line` number when the line itself was refused).
//!
//! Each answer is JSON text, written the way serde_json writes the same object
//! (keys in order, strings escaped alike), so the lines read as they did when
//! they were built as `Value`s, without building one per task.

use task_source::{Admission, NewTask, TaskState};

use super::parse;
use crate::cli::json_str;

/// What answers the submitted lines once the source admitted their tasks:
/// the tasks' ids, and the refusals of the lines that were no task, by
/// position.
#[derive(Debug)]
pub(crate) struct Submitted {
    /// The tasks' ids, in input order.
    ids: Vec<String>,
    /// One per non-blank line: `None` for the next task, the refusal otherwise.
    slots: Vec<Option<String>>,
}

/// What a `submit` answers: one line per non-blank input line, in order.
#[derive(Debug)]
pub(crate) struct Answers {
    /// The answers, each one JSON object.
    pub(crate) lines: Vec<String>,
    /// How many tasks the source holds now (new or known).
    pub(crate) accepted: u64,
    /// How many lines were refused.
    pub(crate) refused: u64,
}

impl Submitted {
    /// Parses each non-blank line (`first_line` is the number of the first):
    /// the tasks to hand to the source, in input order, and what answers them.
    pub(crate) fn parse(text_lines: &[String], first_line: u64) -> (Vec<NewTask>, Self) {
        let mut tasks = Vec::with_capacity(text_lines.len());
        let mut ids = Vec::with_capacity(text_lines.len());
        let mut slots = Vec::with_capacity(text_lines.len());
        for (n, text) in text_lines.iter().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            match parse::parse(text) {
                Ok(task) => {
                    ids.push(task.id.clone());
                    tasks.push(task);
                    slots.push(None);
                }
                Err(r) => {
                    // The client's number: one too large stops at the largest.
                    let line_no = first_line.saturating_add(n as u64);
                    let id = r.id.unwrap_or_else(|| line_no.to_string());
                    slots.push(Some(refused(&id, &r.reason, Some(line_no))));
                }
            }
        }
        (tasks, Self { ids, slots })
    }

    /// The tasks' ids, in input order.
    pub(crate) fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The ids the source holds now, given its admission of each task in
    /// order, each with whether it knew the id already (a duplicate).
    pub(crate) fn held<'a>(
        &'a self,
        admissions: &'a [Admission],
    ) -> impl Iterator<Item = (&'a String, bool)> + 'a {
        self.ids
            .iter()
            .zip(admissions)
            .filter_map(|(id, admission)| match admission {
                Admission::Accepted => Some((id, false)),
                Admission::Known(_) => Some((id, true)),
                Admission::Refused(_) => None,
            })
    }

    /// The answers, given the source's admission of each task in order (a
    /// missing admission ends the answers there).
    pub(crate) fn answer(&self, admissions: &[Admission]) -> Answers {
        let mut admitted = self.ids.iter().zip(admissions);
        let mut answers = Answers {
            lines: Vec::with_capacity(self.slots.len()),
            accepted: 0,
            refused: 0,
        };
        for slot in &self.slots {
            let line = match slot {
                Some(line) => {
                    answers.refused += 1;
                    line.clone()
                }
                None => {
                    let Some((id, admission)) = admitted.next() else {
                        break;
                    };
                    match admission {
                        Admission::Accepted => {
                            answers.accepted += 1;
                            accepted(id, None)
                        }
                        Admission::Known(state) => {
                            answers.accepted += 1;
                            accepted(id, Some(*state))
                        }
                        Admission::Refused(reason) => {
                            answers.refused += 1;
                            refused(id, reason, None)
                        }
                    }
                }
            };
            answers.lines.push(line);
        }
        answers
    }
}

/// `{"id", "status": "accepted"}`, with `"duplicate": true` and the `state`
/// of a task the source knew (keys in serde_json's order).
fn accepted(id: &str, known: Option<TaskState>) -> String {
    let mut json = Vec::with_capacity(id.len() + 64);
    if known.is_some() {
        json.extend_from_slice(b"{\"duplicate\":true,\"id\":");
    } else {
        json.extend_from_slice(b"{\"id\":");
    }
    json_str::push(&mut json, id);
    if let Some(state) = known {
        json.extend_from_slice(b",\"state\":");
        json_str::push(&mut json, state.as_str());
    }
    json.extend_from_slice(b",\"status\":\"accepted\"}");
    text(json)
}

/// `{"id", "status": "refused", "error"}`, with the `line` number of a line
/// that was no task.
pub(crate) fn refused(id: &str, error: &str, line: Option<u64>) -> String {
    let mut json = Vec::with_capacity(id.len() + error.len() + 64);
    json.extend_from_slice(b"{\"error\":");
    json_str::push(&mut json, error);
    json.extend_from_slice(b",\"id\":");
    json_str::push(&mut json, id);
    if let Some(n) = line {
        json.extend_from_slice(format!(",\"line\":{n}").as_bytes());
    }
    json.extend_from_slice(b",\"status\":\"refused\"}");
    text(json)
}

/// The text of JSON built from `&str`s and ASCII.
fn text(json: Vec<u8>) -> String {
    String::from_utf8(json).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|&l| l.to_owned()).collect()
    }

    fn value(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn answers_keep_the_input_order_and_number_refused_lines_from_the_first() {
        let (tasks, submitted) = Submitted::parse(
            &lines(&[
                r#"{"id":"a","type":"echo","payload":1}"#,
                "",
                "not json",
                r#"{"id":"b","type":"echo","payload":2}"#,
                r#"{"id":"c","type":"echo","payload":3}"#,
            ]),
            10,
        );
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let admissions = [
            Admission::Accepted,
            Admission::Known(TaskState::Queued),
            Admission::Refused("queue_full".into()),
        ];
        let answers = submitted.answer(&admissions);
        let held: Vec<(&str, bool)> = submitted
            .held(&admissions)
            .map(|(id, known)| (id.as_str(), known))
            .collect();
        assert_eq!(held, [("a", false), ("b", true)]);
        assert_eq!(answers.accepted, 2);
        assert_eq!(answers.refused, 2);
        let lines: Vec<Value> = answers.lines.iter().map(|l| value(l)).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], json!({"id": "a", "status": "accepted"}));
        assert_eq!(lines[1]["status"], "refused");
        assert_eq!(lines[1]["id"], "12");
        assert_eq!(lines[1]["line"], 12);
        assert_eq!(
            lines[2],
            json!({"id": "b", "status": "accepted", "duplicate": true, "state": "queued"})
        );
        assert_eq!(
            lines[3],
            json!({"id": "c", "status": "refused", "error": "queue_full"})
        );
    }

    /// A client's `first_line` near the top of `u64` numbers its refused
    /// lines up to the largest number, never wrapping round to 0.
    #[test]
    fn line_numbers_past_the_largest_stop_there() {
        let (_, submitted) = Submitted::parse(&lines(&["x", "y"]), u64::MAX);
        let answers = submitted.answer(&[]);
        let numbers: Vec<Value> = answers
            .lines
            .iter()
            .map(|l| value(l)["line"].clone())
            .collect();
        assert_eq!(numbers, [json!(u64::MAX), json!(u64::MAX)]);
    }

    /// The text is what serde_json writes for the same object, escapes included.
    #[test]
    fn each_answer_is_the_text_serde_json_writes() {
        let id = "q\"\\\u{1}é";
        let error = "invalid_input: \"x\"\n";
        for (text, object) in [
            (accepted(id, None), json!({"id": id, "status": "accepted"})),
            (
                accepted(id, Some(TaskState::DeadLetter)),
                json!({"id": id, "status": "accepted", "duplicate": true, "state": "dead_letter"}),
            ),
            (
                refused(id, error, None),
                json!({"id": id, "status": "refused", "error": error}),
            ),
            (
                refused(id, error, Some(7)),
                json!({"id": id, "status": "refused", "error": error, "line": 7}),
            ),
        ] {
            assert_eq!(text, object.to_string());
        }
    }
}
