//! The per-line answers of `submit`, the same for the daemon's store and for
//! `submit --queue`: `{"id", "status": "accepted"}` (with `"duplicate": true`
//! and its `state` for an id the source knew), or `{"id", "status": "refused",
//! "error"}` (with the `line` number when the line itself was refused).

use serde_json::{json, Value};
use task_source::{Admission, NewTask};

use super::parse;

/// The submitted lines, parsed: the tasks to hand to the source, and the
/// refusals of the lines that were no task, by position.
#[derive(Debug)]
pub(crate) struct Submitted {
    tasks: Vec<NewTask>,
    /// One per non-blank line: `None` for the next task, the refusal otherwise.
    slots: Vec<Option<Value>>,
}

/// What a `submit` answers: one line per non-blank input line, in order.
#[derive(Debug)]
pub(crate) struct Answers {
    pub(crate) lines: Vec<Value>,
    /// The ids of the tasks the source holds now (new or known), in order.
    pub(crate) accepted: Vec<String>,
    /// How many lines were refused.
    pub(crate) refused: u64,
}

impl Submitted {
    /// Parses each non-blank line; `first_line` is the number of the first.
    pub(crate) fn parse(text_lines: &[String], first_line: u64) -> Self {
        let mut tasks = Vec::with_capacity(text_lines.len());
        let mut slots = Vec::with_capacity(text_lines.len());
        for (n, text) in text_lines.iter().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            match parse::parse(text) {
                Ok(task) => {
                    tasks.push(task);
                    slots.push(None);
                }
                Err(r) => {
                    let line_no = first_line + n as u64;
                    let id = r.id.unwrap_or_else(|| line_no.to_string());
                    let mut line = refused(&id, &r.reason);
                    line["line"] = line_no.into();
                    slots.push(Some(line));
                }
            }
        }
        Self { tasks, slots }
    }

    /// The tasks to hand to the source, in input order.
    pub(crate) fn tasks(&self) -> &[NewTask] {
        &self.tasks
    }

    /// The answers, given the source's admission of each of [`tasks`](Self::tasks)
    /// in order (a missing admission ends the answers there).
    pub(crate) fn answer(self, admissions: Vec<Admission>) -> Answers {
        let mut admitted = self.tasks.iter().zip(admissions);
        let mut answers = Answers {
            lines: Vec::with_capacity(self.slots.len()),
            accepted: Vec::new(),
            refused: 0,
        };
        for slot in self.slots {
            let line = match slot {
                Some(line) => {
                    answers.refused += 1;
                    line
                }
                None => {
                    let Some((task, admission)) = admitted.next() else {
                        break;
                    };
                    match admission {
                        Admission::Accepted => {
                            answers.accepted.push(task.id.clone());
                            json!({"id": task.id, "status": "accepted"})
                        }
                        Admission::Known(state) => {
                            answers.accepted.push(task.id.clone());
                            json!({"id": task.id, "status": "accepted", "duplicate": true, "state": state.as_str()})
                        }
                        Admission::Refused(reason) => {
                            answers.refused += 1;
                            refused(&task.id, &reason)
                        }
                    }
                }
            };
            answers.lines.push(line);
        }
        answers
    }
}

fn refused(id: &str, error: &str) -> Value {
    json!({"id": id, "status": "refused", "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_source::TaskState;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|&l| l.to_owned()).collect()
    }

    #[test]
    fn answers_keep_the_input_order_and_number_refused_lines_from_the_first() {
        let submitted = Submitted::parse(
            &lines(&[
                r#"{"id":"a","type":"echo","payload":1}"#,
                "",
                "not json",
                r#"{"id":"b","type":"echo","payload":2}"#,
                r#"{"id":"c","type":"echo","payload":3}"#,
            ]),
            10,
        );
        let ids: Vec<&str> = submitted.tasks().iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let answers = submitted.answer(vec![
            Admission::Accepted,
            Admission::Known(TaskState::Queued),
            Admission::Refused("queue_full".into()),
        ]);
        assert_eq!(answers.accepted, ["a", "b"]);
        assert_eq!(answers.refused, 2);
        assert_eq!(answers.lines.len(), 4);
        assert_eq!(answers.lines[0], json!({"id": "a", "status": "accepted"}));
        assert_eq!(answers.lines[1]["status"], "refused");
        assert_eq!(answers.lines[1]["id"], "12");
        assert_eq!(answers.lines[1]["line"], 12);
        assert_eq!(
            answers.lines[2],
            json!({"id": "b", "status": "accepted", "duplicate": true, "state": "queued"})
        );
        assert_eq!(
            answers.lines[3],
            json!({"id": "c", "status": "refused", "error": "queue_full"})
        );
    }
}
