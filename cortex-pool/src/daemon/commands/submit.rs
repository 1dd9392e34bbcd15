//! `submit`: send task lines to the daemon, optionally waiting for their results.

use crate::cli::args::SubmitArgs;
use crate::cli::output::Status;
use crate::cli::summary::Tally;
use crate::daemon::client::Client;
use crate::daemon::config::Settings;
use crate::daemon::protocol::{Reply, Request};
use crate::daemon::queue::cli as queue_cli;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::answer::Answer;
use super::line_fields::fill;
use super::requests::{most_bytes, split, Refusal};
use super::{
    connect_error, emit_text, finish, runtime, settings_for_queue, Fail, Outcome, Printer,
    RECONNECT_FOR,
};

/// `cortex-pool submit`.
pub(crate) fn submit(args: SubmitArgs) -> ExitCode {
    finish(submit_inner(&args))
}

fn submit_inner(args: &SubmitArgs) -> Outcome {
    let settings = settings_for_queue(&args.config, args.queue.as_deref())?;
    let usage = |m: String| Fail(crate::cli::EXIT_USAGE, m);
    let mut local_refusals = Vec::new();
    let lines: Vec<String> = match &args.task_type {
        Some(task_type) => {
            if args.tasks.is_some() {
                return Err(usage("give either --type or a TASKS file, not both".into()));
            }
            vec![flag_line(task_type, args.payload.as_deref()).map_err(usage)?]
        }
        None => {
            if args.payload.is_some() {
                return Err(usage("--payload needs --type".into()));
            }
            let mut bytes = Vec::new();
            match &args.tasks {
                Some(p) if p.as_os_str() != "-" => std::fs::File::open(p)
                    .and_then(|mut f| f.read_to_end(&mut bytes))
                    .map_err(|e| {
                        usage(format!("cannot read the tasks from {}: {e}", p.display()))
                    })?,
                _ => std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|e| usage(format!("cannot read the tasks from stdin: {e}")))?,
            };
            let (lines, refusals) = text_lines(&bytes);
            local_refusals = refusals;
            lines
        }
    };
    // Lines that are not UTF-8 cannot be sent: each is refused here, named by
    // its number, and the others go on.
    {
        let mut out = std::io::stdout().lock();
        for line in &local_refusals {
            let _ = writeln!(out, "{line}");
        }
    }
    let (lines, generated): (Vec<String>, Vec<bool>) = lines
        .into_iter()
        .map(|line| fill(line, args.priority, args.timeout_ms))
        .unzip();
    let refused_here = local_refusals.len() as u64;
    let mut named = GeneratedIds::new(&lines, &generated);
    if let Some(url) = &args.queue {
        return submit_to_queue(&settings, url, &lines, &mut named, args.wait, refused_here);
    }
    let rt = runtime()?;
    let started = Instant::now();
    let mut tally = tally_of_refused(refused_here);
    let (mut accepted, mut refused) = (0u64, refused_here);
    let mut ids = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result: std::io::Result<()> = rt.block_on(async {
        // Not running at all is an answer at once (exit 3); a daemon that goes
        // away later is waited for.
        let mut client = Some(Client::connect(&settings.paths.socket).await?);
        let mut first_line = 1u64;
        for batch in split(&lines, most_bytes(&settings)) {
            let mut lost_since: Option<Instant> = None;
            // A batch whose answer was lost is sent again: every line has an id,
            // so the daemon takes each task once.
            let answers = loop {
                match send_batch(&settings, &mut client, batch, first_line).await {
                    Ok(answers) => break answers,
                    Err(e) if e.kind() == std::io::ErrorKind::Other => return Err(e),
                    Err(e) => {
                        client = None;
                        let since = *lost_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > RECONNECT_FOR {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            first_line += batch.len() as u64;
            for text in &answers {
                emit_text(text, &mut |line| {
                    if line.status == "accepted" {
                        accepted += 1;
                        if let Some(id) = &line.id {
                            ids.push(id.to_string());
                        }
                        if args.wait {
                            return;
                        }
                    } else {
                        refused += 1;
                        tally.add(Status::Invalid, 0.0);
                    }
                    let _ = out.write_all(named.as_printed(line).as_bytes());
                    let _ = out.write_all(b"\n");
                });
            }
            let _ = out.flush();
        }
        Ok(())
    });
    if let Err(e) = result {
        let _ = out.flush();
        return Err(match e.kind() {
            std::io::ErrorKind::Other => Fail(1, e.to_string()),
            _ => connect_error(&settings, &e),
        });
    }
    if args.wait {
        let mut printer = Printer {
            out: &mut out,
            tally: Some(&mut tally),
        };
        let waited = rt.block_on(super::lookup::lines_for(
            &settings,
            ids,
            Some(None),
            &mut printer,
        ));
        let _ = out.flush();
        drop(out);
        waited?;
        eprintln!("{}", tally.render(started.elapsed(), None));
        return Ok(if tally.all_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let _ = out.flush();
    drop(out);
    eprintln!("cortex-pool: submitted {accepted} tasks, {refused} refused");
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `submit --queue URL`: straight onto the shared queue (no daemon); with
/// `--wait`, then the result lines from the bucket as tasks settle.
fn submit_to_queue(
    settings: &Settings,
    url: &str,
    lines: &[String],
    named: &mut GeneratedIds<'_>,
    wait: bool,
    refused_here: u64,
) -> Outcome {
    let rt = runtime()?;
    let started = Instant::now();
    let mut tally = tally_of_refused(refused_here);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let done = rt.block_on(async {
        let source = queue_cli::connect(settings, url).await?;
        let (ids, refused) = queue_cli::submit(&source, lines, &mut |line| {
            if line.status != "accepted" {
                tally.add(Status::Invalid, 0.0);
            } else if wait {
                return;
            }
            let _ = out.write_all(named.as_printed(line).as_bytes());
            let _ = out.write_all(b"\n");
        })
        .await?;
        let accepted = ids.len();
        let all_ok = if wait {
            let mut printer = Printer {
                out: &mut out,
                tally: Some(&mut tally),
            };
            queue_cli::lines_for(&source, ids, Some(None), &mut printer).await?
        } else {
            true
        };
        Ok::<_, String>((accepted, refused, all_ok))
    });
    let _ = out.flush();
    drop(out);
    let (accepted, refused, all_ok) = done.map_err(|e| Fail(1, e))?;
    let refused = refused + refused_here;
    if wait {
        eprintln!("{}", tally.render(started.elapsed(), None));
        return Ok(if tally.all_ok() && all_ok && refused == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    eprintln!("cortex-pool: submitted {accepted} tasks, {refused} refused");
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The ids `submit` generated for lines that had none, so that a refusal of
/// one is named by its line number, as a refused line without an `id` is
/// (the generated id names no task the user knows). Looked up by id only
/// once a refusal names one: a submission with none pays nothing.
struct GeneratedIds<'a> {
    lines: &'a [String],
    generated: &'a [bool],
    /// Line numbers by generated id, made at the first refusal.
    numbers: Option<HashMap<&'a str, usize>>,
}

impl<'a> GeneratedIds<'a> {
    /// The sent `lines`, and whether [`fill`] generated each one's id.
    fn new(lines: &'a [String], generated: &'a [bool]) -> Self {
        Self {
            lines,
            generated,
            numbers: None,
        }
    }

    /// The line number of the line `submit` generated `id` for, if any.
    fn number_of(&mut self, id: &str) -> Option<usize> {
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            #[serde(borrow)]
            id: &'a str,
        }
        let (lines, generated) = (self.lines, self.generated);
        let numbers = self.numbers.get_or_insert_with(|| {
            lines
                .iter()
                .zip(generated)
                .enumerate()
                .filter(|(_, (_, generated))| **generated)
                .filter_map(|(at, (line, _))| {
                    let read = serde_json::from_str::<Id<'a>>(line).ok()?;
                    Some((read.id, at + 1))
                })
                .collect()
        });
        numbers.get(id).copied()
    }

    /// `answer`'s line as printed: a refusal of a line whose id `submit`
    /// generated is named by the line's number.
    fn as_printed<'b>(&mut self, answer: &Answer<'b>) -> std::borrow::Cow<'b, str> {
        let text = answer.text;
        if answer.status == "accepted" {
            return std::borrow::Cow::Borrowed(text);
        }
        let renamed = answer.id.as_deref().and_then(|id| {
            let number = self.number_of(id)?;
            let quoted = serde_json::to_string(id).ok()?;
            Some(text.replacen(
                &format!("\"id\":{quoted}"),
                &format!("\"id\":\"{number}\""),
                1,
            ))
        });
        renamed.map_or(std::borrow::Cow::Borrowed(text), std::borrow::Cow::Owned)
    }
}

/// A tally that counts the `n` lines refused here as invalid.
fn tally_of_refused(n: u64) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..n {
        tally.add(Status::Invalid, 0.0);
    }
    tally
}

/// The task line `--type T --payload JSON` stands for, `{"type":T,"payload":JSON}`,
/// with the payload's text as written (key order, number spelling, an integer
/// MessagePack cannot carry): it is sent, checked and refused exactly as the
/// same line would be from a file. Without `--payload` the payload is `null`.
///
/// # Errors
/// `--payload` is not one JSON value, named with serde_json's reason (its
/// text is spliced into the line, where anything after a value would add
/// keys of its own).
fn flag_line(task_type: &str, payload: Option<&str>) -> Result<String, String> {
    let payload = match payload {
        Some(text) => serde_json::from_str::<&RawValue>(text)
            .map_err(|e| format!("--payload is not JSON: {e}"))?
            .get(),
        None => "null",
    };
    Ok(format!(
        "{{\"type\":{},\"payload\":{payload}}}",
        Value::from(task_type)
    ))
}

/// The lines of `bytes` (a UTF-8 byte-order mark before the first skipped, a
/// line ending with `\n` or `\r\n`), and the refusal answers of those that
/// are not UTF-8, each in its place left blank (a blank line is no task, and
/// keeps the numbers of the lines after it).
fn text_lines(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut refusals = Vec::new();
    let mut rest = crate::cli::input::without_bom(bytes);
    while !rest.is_empty() {
        let (line, after) = match memchr::memchr(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::str::from_utf8(line) {
            Ok(text) => lines.push(text.to_owned()),
            Err(e) => {
                let n = lines.len() as u64 + 1;
                let error = format!(
                    "invalid_input: line {n} is not valid UTF-8 (at byte {})",
                    e.valid_up_to() + 1
                );
                refusals.push(crate::daemon::durable::answers::refused(
                    &n.to_string(),
                    &error,
                    Some(n),
                ));
                lines.push(String::new());
            }
        }
    }
    (lines, refusals)
}

/// Sends one batch (connecting first if needed) and returns its answer lines,
/// as JSON text.
async fn send_batch(
    settings: &crate::daemon::config::Settings,
    client: &mut Option<Client>,
    batch: &[String],
    first_line: u64,
) -> std::io::Result<Vec<String>> {
    if client.is_none() {
        *client = Some(Client::connect(&settings.paths.socket).await?);
    }
    let Some(c) = client.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    let sent = c
        .send(&Request::Submit {
            lines: batch.to_vec(),
            wait: false,
            first_line,
            text: true,
        })
        .await;
    if let Err(e) = sent {
        // A daemon that refuses the request (a line over its
        // `max_request_bytes`) says why and closes before reading it all,
        // and the write fails on the closed socket: its reason is the
        // answer, not a lost connection to retry. A request this side could
        // not frame (over 16 MiB) never left: that error is the answer.
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        if !matches!(e.kind(), BrokenPipe | ConnectionReset) {
            return Err(e);
        }
        return Err(match c.next().await {
            Ok(Reply::Error { kind, message }) => Refusal { kind, message }.into_io(),
            _ => e,
        });
    }
    let mut answers = Vec::with_capacity(batch.len());
    loop {
        match c.next().await? {
            Reply::Line { line } => answers.push(line.into_text()),
            Reply::Lines { lines } => answers.extend(lines.iter().map(Value::to_string)),
            Reply::LinesText { lines } => answers.extend(lines),
            Reply::Done { .. } => return Ok(answers),
            Reply::Error { kind, message } => return Err(Refusal { kind, message }.into_io()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{flag_line, text_lines};
    use crate::daemon::durable::parse::parse;

    /// `--type T --payload JSON` is the line `{"type":T,"payload":JSON}`
    /// with the payload as written: key order, spaces and number spelling
    /// reach the daemon unchanged (a JSON tree in between sorted the keys
    /// and turned `1.50` into `1.5`).
    #[test]
    fn a_flag_payload_is_sent_as_written() {
        let payload = r#"{"z":1, "a":[1.50,-0,1e2,"é"]}"#;
        let line = flag_line("echo", Some(payload)).unwrap();
        assert_eq!(line, format!(r#"{{"type":"echo","payload":{payload}}}"#));
        assert_eq!(parse(&line).unwrap().payload, payload);
        assert_eq!(
            flag_line("a\"b", None).unwrap(),
            r#"{"type":"a\"b","payload":null}"#
        );
    }

    /// An integer MessagePack cannot carry is refused as on an input line,
    /// with the same reason (a JSON tree in between sent it on as the float
    /// 1.8446744073709552e19).
    #[test]
    fn a_flag_payload_too_wide_for_msgpack_is_refused_as_on_an_input_line() {
        let line = flag_line("echo", Some(" 18446744073709551616 ")).unwrap();
        let written = r#"{"type":"echo","payload":18446744073709551616}"#;
        let refused = parse(&line).unwrap_err();
        assert_eq!(refused, parse(written).unwrap_err());
        assert!(
            refused
                .reason
                .starts_with("invalid_input: payload: integer 18446744073709551616 is outside"),
            "{}",
            refused.reason
        );
    }

    /// A `--payload` that is not one JSON value is a usage error: spliced
    /// into the line, what follows a value would set keys of its own.
    #[test]
    fn a_flag_payload_that_is_not_one_json_value_is_refused() {
        for payload in [r#"1,"id":"x""#, "", "{", "1 2"] {
            let e = flag_line("echo", Some(payload)).unwrap_err();
            assert!(e.starts_with("--payload is not JSON: "), "{payload:?}: {e}");
        }
    }

    /// A line that is not UTF-8 is refused by its number, left blank in its
    /// place (the later lines keep their numbers), and the others are read.
    #[test]
    fn a_line_that_is_not_utf8_is_refused_by_number_and_the_rest_are_read() {
        let bytes = b"\xef\xbb\xbf{\"a\":1}\r\n{\"b\":\xff}\n\n{\"c\":3}";
        let (lines, refusals) = text_lines(bytes);
        assert_eq!(lines, ["{\"a\":1}", "", "", "{\"c\":3}"]);
        assert_eq!(refusals.len(), 1);
        let refusal: serde_json::Value = serde_json::from_str(&refusals[0]).unwrap();
        assert_eq!(
            refusal,
            serde_json::json!({
                "id": "2",
                "line": 2,
                "status": "refused",
                "error": "invalid_input: line 2 is not valid UTF-8 (at byte 6)"
            })
        );
    }
}
