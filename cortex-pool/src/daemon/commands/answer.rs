//! A task's line as a look-up (`result`, `wait`, `submit --wait`) hands it to
//! its command: the JSON text, printed as it came (a daemon sends the line it
//! stored, in `run`'s output format), and the few fields the command counts.
//!
//! Only those fields are read from the text: parsing each line into a
//! `serde_json::Value` and writing it out again cost a client about half of
//! its instructions per task in `submit --wait`.

use std::borrow::Cow;
use std::io::Write;

use serde::Deserialize;
use serde_json::Value;

use crate::cli::output::Status;
use crate::cli::summary::Tally;
use crate::cli::{json_str, output};
use crate::daemon::protocol::LineStatus;

/// Where a look-up hands its lines.
pub(crate) trait Lines {
    /// One task's line.
    fn line(&mut self, answer: &Answer<'_>);
    /// No further line is waiting to be read: lines handed over since the
    /// last time should reach their reader now.
    fn idle(&mut self);
}

/// Prints each line to `out` (counting it in `tally`, when given), and
/// flushes when the look-up is idle: lines that arrive together are written
/// together, and one that arrives alone is not held back. (A flush per line
/// cost `submit --wait` a `write` call per task.)
pub(crate) struct Printer<'t, W: Write> {
    /// Where the lines go.
    pub(crate) out: W,
    /// The run summary each line counts in.
    pub(crate) tally: Option<&'t mut Tally>,
}

impl<W: Write> Lines for Printer<'_, W> {
    fn line(&mut self, answer: &Answer<'_>) {
        if let Some(tally) = self.tally.as_deref_mut() {
            tally.add(answer.tally_status(), answer.duration_ms);
        }
        let _ = self.out.write_all(answer.text.as_bytes());
        let _ = self.out.write_all(b"\n");
    }

    fn idle(&mut self) {
        let _ = self.out.flush();
    }
}

/// One task's line.
#[derive(Debug)]
pub(crate) struct Answer<'a> {
    /// The line, one JSON document.
    pub(crate) text: &'a str,
    /// Its `id`, when it has one.
    pub(crate) id: Option<Cow<'a, str>>,
    /// Its `status`: `ok`, `failed`, `dead_letter`, `invalid`, or one a task
    /// that has not settled shows (`queued`, `running`, `unknown`, …).
    pub(crate) status: Cow<'a, str>,
    /// Its `duration_ms` (0 when it has none).
    pub(crate) duration_ms: f64,
}

/// The fields read from a line; the others are skipped.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(default)]
    duration_ms: Option<f64>,
}

impl<'a> Answer<'a> {
    /// The answer of line `text`; `None` when it is not a JSON object.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        if let Some((id, status)) = id_and_status(text) {
            return Some(Self {
                text,
                id: Some(Cow::Borrowed(id)),
                status: Cow::Borrowed(status),
                duration_ms: 0.0,
            });
        }
        let head: Head<'a> = serde_json::from_str(text).ok()?;
        Some(Self {
            text,
            id: head.id,
            status: head.status.unwrap_or_default(),
            duration_ms: head.duration_ms.unwrap_or(0.0),
        })
    }

    /// Whether the task settled ok.
    pub(crate) fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// How the line counts in a run's summary.
    pub(crate) fn tally_status(&self) -> Status {
        match &*self.status {
            "ok" => Status::Ok,
            "dead_letter" => Status::DeadLetter,
            "invalid" => Status::Invalid,
            _ => Status::Failed,
        }
    }
}

/// The id and status of a line that is exactly `{"id":"…","status":"…"}`
/// with nothing to unescape in either (a daemon's answer to a submitted
/// line, `accepted`, looks so): the whole line, recognised without a parser.
fn id_and_status(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("{\"id\":\"")?;
    let (id, rest) = rest.split_once('"')?;
    let status = rest.strip_prefix(",\"status\":\"")?.strip_suffix("\"}")?;
    let plain = |s: &str| json_str::plain_len(s.as_bytes()) == s.len();
    (plain(id) && plain(status)).then_some((id, status))
}

/// Hands `text` to `emit` as an answer; a line that is not a JSON object
/// (only a daemon's bug sends one) is shown as an `invalid` line that names it.
pub(crate) fn emit_text(text: &str, emit: &mut dyn FnMut(&Answer<'_>)) {
    match Answer::parse(text) {
        Some(answer) => emit(&answer),
        None => {
            let line = serde_json::json!({
                "status": "invalid",
                "error": format!("the daemon sent a line that is not a JSON object: {text}"),
            })
            .to_string();
            emit_text(&line, emit);
        }
    }
}

/// Hands the line `text` to `emit` as an answer: one the daemon's feeder
/// wrote (its `status` sent beside it) is read from its beginning
/// ([`output::written_head`]); any other is parsed ([`emit_text`]).
pub(crate) fn emit_line(text: &str, status: Option<LineStatus>, emit: &mut dyn FnMut(&Answer<'_>)) {
    let status = status.and_then(LineStatus::as_str);
    match status.zip(output::written_head(text)) {
        Some((status, (duration_ms, id))) => emit(&Answer {
            text,
            id: Some(Cow::Borrowed(id)),
            status: Cow::Borrowed(status),
            duration_ms,
        }),
        None => emit_text(text, emit),
    }
}

/// Hands `value` to `emit` as an answer.
pub(crate) fn emit_value(value: &Value, emit: &mut dyn FnMut(&Answer<'_>)) {
    emit_text(&value.to_string(), emit);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = (String, Option<String>, String, f64);

    /// What `hand_over` handed to its `emit`.
    fn seen(hand_over: impl FnOnce(&mut dyn FnMut(&Answer<'_>))) -> Seen {
        let mut got = None;
        hand_over(&mut |a| {
            got = Some((
                a.text.to_owned(),
                a.id.as_deref().map(str::to_owned),
                a.status.to_string(),
                a.duration_ms,
            ));
        });
        got.unwrap()
    }

    fn emitted(text: &str) -> Seen {
        seen(|emit| emit_text(text, emit))
    }

    #[test]
    fn a_line_is_handed_over_as_written_with_its_counted_fields() {
        let text = r#"{"attempts":1,"duration_ms":2.5,"id":"a\"1","result":{"status":"no"},"status":"ok","worker":"worker-1"}"#;
        let (got, id, status, ms) = emitted(text);
        assert_eq!(got, text);
        assert_eq!(id.as_deref(), Some("a\"1"));
        assert_eq!((status.as_str(), ms), ("ok", 2.5));
        let answer = Answer::parse(text).unwrap();
        assert!(answer.ok());
        assert_eq!(answer.tally_status(), Status::Ok);
    }

    #[test]
    fn a_line_of_an_id_and_a_status_alone_is_read_as_parsing_reads_it() {
        for text in [
            r#"{"id":"01J","status":"accepted"}"#,
            r#"{"id":"","status":"queued"}"#,
            r#"{"id":"a b","status":"unknown"}"#,
        ] {
            let (id, status) = id_and_status(text).expect(text);
            let head: Head<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(Some(id), head.id.as_deref(), "{text}");
            assert_eq!(Some(status), head.status.as_deref(), "{text}");
        }
        for other in [
            r#"{"id":"a\"b","status":"accepted"}"#,
            r#"{"id":"a","status":"accepted\u0041"}"#,
            r#"{"id":"a","status":"accepted","x":1}"#,
            r#"{"id":"a","status":"accepted"} "#,
            r#"{"id":"a","status":"acc"epted"}"#,
            "{\"id\":\"a\tb\",\"status\":\"ok\"}",
            r#"{"status":"accepted","id":"a"}"#,
        ] {
            assert_eq!(id_and_status(other), None, "{other}");
        }
        let escaped = Answer::parse(r#"{"id":"a\"b","status":"accepted"}"#).unwrap();
        assert_eq!(escaped.id.as_deref(), Some("a\"b"));
    }

    #[test]
    fn a_line_without_the_fields_counts_as_failed_and_keeps_its_text() {
        let (got, id, status, ms) = emitted(r#"{"id":"b","status":"queued","attempts":0}"#);
        assert_eq!(got, r#"{"id":"b","status":"queued","attempts":0}"#);
        assert_eq!(
            (id.as_deref(), status.as_str(), ms),
            (Some("b"), "queued", 0.0)
        );
        let answer = Answer::parse(&got).unwrap();
        assert!(!answer.ok());
        assert_eq!(answer.tally_status(), Status::Failed);
        let dead = Answer::parse(r#"{"status":"dead_letter"}"#).unwrap();
        assert_eq!(dead.tally_status(), Status::DeadLetter);
    }

    #[test]
    fn text_that_is_no_object_is_shown_as_an_invalid_line() {
        let (got, id, status, _) = emitted("[1, 2");
        assert_eq!((id, status.as_str()), (None, "invalid"));
        let shown: Value = serde_json::from_str(&got).unwrap();
        assert!(shown["error"].as_str().unwrap().ends_with("[1, 2"), "{got}");
    }

    #[test]
    fn a_value_is_handed_over_as_its_text() {
        let (got, id, status, _) =
            emitted_value(&serde_json::json!({"id": "c", "status": "failed"}));
        assert_eq!(got, r#"{"id":"c","status":"failed"}"#);
        assert_eq!((id.as_deref(), status.as_str()), (Some("c"), "failed"));
    }

    fn emitted_value(value: &Value) -> Seen {
        seen(|emit| emit_value(value, emit))
    }

    /// A writer that notes how much of what it was given was flushed.
    #[derive(Default)]
    struct Noted {
        bytes: Vec<u8>,
        flushed: usize,
    }

    impl Write for Noted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.flushed = self.bytes.len();
            Ok(())
        }
    }

    #[test]
    fn a_printer_prints_and_counts_each_line_and_flushes_only_when_idle() {
        let mut tally = Tally::default();
        let mut printer = Printer {
            out: Noted::default(),
            tally: Some(&mut tally),
        };
        let ok = r#"{"id":"a","status":"ok","duration_ms":4.0}"#;
        let dead = r#"{"id":"b","status":"dead_letter","duration_ms":1.0}"#;
        printer.line(&Answer::parse(ok).unwrap());
        printer.line(&Answer::parse(dead).unwrap());
        assert_eq!(printer.out.flushed, 0, "two lines that came together wait");
        printer.idle();
        let printed = String::from_utf8(printer.out.bytes.clone()).unwrap();
        assert_eq!(printed, format!("{ok}\n{dead}\n"));
        assert_eq!(printer.out.flushed, printed.len());
        assert_eq!((tally.ok, tally.dead_letter), (1, 1));
    }
}
