//! `result`, `wait` and `tasks`: tasks by id, from the daemon's store. `wait`
//! (and `submit --wait`) reconnect when the daemon restarts and go on waiting
//! for the ids not yet settled.

use foldhash::HashSet;
use futures_util::FutureExt;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use task_source::TaskState;

use super::listing::listing;
use super::requests::{most_bytes, split, Refusal};
use super::{
    connect_error, emit_line, emit_value, finish, runtime, settings, settings_for_queue, Answer,
    Fail, Lines, Outcome, Printer, RECONNECT_FOR,
};
use crate::cli::args::ConfigArgs;
use crate::daemon::client::Client;
use crate::daemon::config::Settings;
use crate::daemon::durable::listing::status_named;
use crate::daemon::protocol::{Reply, Request};
use crate::daemon::queue::cli as queue_cli;

/// `cortex-pool result ID…`.
#[derive(Debug, Args)]
pub(crate) struct ResultArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Read the results bucket of the NATS JetStream queue at URL (no daemon).
    #[arg(long, value_name = "URL")]
    pub(crate) queue: Option<String>,
    /// Task ids.
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

/// `cortex-pool wait [--timeout-s N] ID…`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Read the results bucket of the NATS JetStream queue at URL (no daemon).
    #[arg(long, value_name = "URL")]
    pub(crate) queue: Option<String>,
    /// Give up after N seconds; the lines then show the current state.
    #[arg(long, value_name = "N")]
    pub(crate) timeout_s: Option<u64>,
    /// Task ids.
    #[arg(required = true)]
    pub(crate) ids: Vec<String>,
}

/// `cortex-pool tasks [--status S] [--type T] [--limit N] [--json]`.
#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Only tasks in this status (queued, running, retrying, ok, failed,
    /// dead_letter, cancelled).
    #[arg(long, value_name = "S", value_parser = status_named)]
    pub(crate) status: Option<TaskState>,
    /// Only tasks of this type.
    #[arg(long = "type", value_name = "T")]
    pub(crate) task_type: Option<String>,
    /// At most N tasks, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(crate) limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `cortex-pool result`.
pub(crate) fn result(args: ResultArgs) -> ExitCode {
    print_lines(&args.config, args.queue.as_deref(), args.ids, None)
}

/// `cortex-pool wait`.
pub(crate) fn wait(args: WaitArgs) -> ExitCode {
    let timeout = args.timeout_s.map(Duration::from_secs);
    print_lines(&args.config, args.queue.as_deref(), args.ids, Some(timeout))
}

/// Prints the line of each of `ids`, from the daemon or, given its URL, the
/// shared queue: now (`wait` `None`) or once settled.
fn print_lines(
    config: &ConfigArgs,
    queue: Option<&str>,
    ids: Vec<String>,
    wait: Option<Option<Duration>>,
) -> ExitCode {
    finish((|| {
        let settings = settings_for_queue(config, queue)?;
        let rt = runtime()?;
        let mut printer = Printer {
            out: std::io::BufWriter::new(std::io::stdout().lock()),
            tally: None,
        };
        let ok = match queue {
            Some(url) => rt
                .block_on(async {
                    let source = queue_cli::connect(&settings, url).await?;
                    queue_cli::lines_for(&source, ids, wait, &mut printer).await
                })
                .map_err(|e| Fail(1, e))?,
            None => rt.block_on(lines_for(&settings, ids, wait, &mut printer))?,
        };
        printer.idle();
        Ok(exit(ok))
    })())
}

fn exit(all_ok: bool) -> ExitCode {
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The milliseconds from `now` to `deadline` (none once it passed; the most
/// a `u64` holds for one further away than that).
fn millis_until(deadline: Instant, now: Instant) -> u64 {
    u64::try_from(deadline.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}

/// Hands one line per id to `lines` (waiting for each to settle when `wait`
/// is given, reconnecting to a restarted daemon); true when every task
/// settled ok.
pub(crate) async fn lines_for(
    settings: &Settings,
    ids: Vec<String>,
    wait: Option<Option<Duration>>,
    lines: &mut dyn Lines,
) -> Result<bool, Fail> {
    // A timeout past what the clock can count waits without one.
    let deadline = wait.flatten().and_then(|t| Instant::now().checked_add(t));
    let mut all_ok = true;
    // A wait answers each task once, however far apart its id is named (the
    // daemon does so within one request; these may be several).
    let ids = if wait.is_some() {
        // Not running at all is an answer at once (exit 3), as for `submit
        // --wait`; a daemon that goes away later is waited for.
        if let Err(e) = Client::connect(&settings.paths.socket).await {
            return Err(connect_error(settings, &e));
        }
        crate::daemon::durable::ids::first_of_each(ids)
    } else {
        ids
    };
    for chunk in split(&ids, most_bytes(settings)) {
        let mut left: Vec<String> = chunk.to_vec();
        let mut lost_since: Option<Instant> = None;
        while !left.is_empty() {
            let request = match wait {
                None => Request::Result {
                    ids: left.clone(),
                    text: true,
                },
                Some(_) => Request::Wait {
                    ids: left.clone(),
                    text: true,
                    timeout_ms: deadline.map(|d| millis_until(d, Instant::now())),
                },
            };
            let mut reached = false;
            let streamed = stream(
                settings,
                &request,
                &mut left,
                &mut all_ok,
                lines,
                &mut reached,
            )
            .await;
            if reached {
                // A daemon took the request: a loss after it has its own
                // reconnect budget, from then.
                lost_since = None;
            }
            match streamed {
                Ok(()) => break,
                // A request the daemon refuses: final, in its words (a busy
                // daemon or a store read that failed is asked again).
                Err(e) if Refusal::of(&e).is_some_and(Refusal::is_final) => {
                    return Err(Fail(1, format!("the daemon refused the request: {e}")));
                }
                Err(e) if wait.is_some() => {
                    // The daemon went away: wait for it to come back.
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_FOR
                        || deadline.is_some_and(|d| Instant::now() > d)
                    {
                        return Err(connect_error(settings, &e));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(connect_error(settings, &e)),
            }
        }
    }
    Ok(all_ok)
}

/// Sends one look-up and streams its lines; when it ends without `Done`
/// (the connection lost, or an error), removes each answered id from `left`.
async fn stream(
    settings: &Settings,
    request: &Request,
    left: &mut Vec<String>,
    all_ok: &mut bool,
    lines: &mut dyn Lines,
    reached: &mut bool,
) -> std::io::Result<()> {
    let mut client = Client::connect(&settings.paths.socket).await?;
    client.send(request).await?;
    *reached = true;
    let mut tracked = Tracked {
        lines,
        all_ok,
        answered: Vec::new(),
    };
    let result = loop {
        // Nothing more read yet: the lines so far go out before the wait.
        let reply = match client.next().now_or_never() {
            Some(reply) => reply,
            None => {
                tracked.idle();
                client.next().await
            }
        };
        match reply {
            Ok(Reply::Line { line }) => emit_value(&line.into_value(), &mut |a| tracked.line(a)),
            Ok(Reply::LineText { line, status }) => {
                emit_line(&line, status, &mut |a| tracked.line(a));
            }
            Ok(Reply::Done { .. }) => break Ok(()),
            Ok(Reply::Error { kind, message }) => break Err(Refusal { kind, message }.into_io()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    if result.is_err() {
        // Asked again for the ids not answered.
        let answered: HashSet<String> = tracked.answered.into_iter().collect();
        left.retain(|id| !answered.contains(id));
    }
    result
}

/// Lines handed on, with the ids they answered (looked up only when the
/// connection is lost, to ask again for the others) and whether all were ok.
struct Tracked<'a> {
    lines: &'a mut dyn Lines,
    all_ok: &'a mut bool,
    answered: Vec<String>,
}

impl Lines for Tracked<'_> {
    fn line(&mut self, answer: &Answer<'_>) {
        if !answer.ok() {
            *self.all_ok = false;
        }
        if let Some(id) = &answer.id {
            self.answered.push(id.to_string());
        }
        self.lines.line(answer);
    }

    fn idle(&mut self) {
        self.lines.idle();
    }
}

/// `cortex-pool tasks`: the entries as the daemon sends them, in pages.
pub(crate) fn tasks(args: TasksArgs) -> ExitCode {
    finish((|| -> Outcome {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let request = Request::Tasks {
            status: args.status.map(|s| s.as_str().to_owned()),
            task_type: args.task_type.clone(),
            limit: args.limit,
            paged: true,
        };
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        if args.json {
            listing(&rt, &settings, &request, &mut |entry| {
                let _ = writeln!(out, "{entry}");
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        // The header goes with the first entry, or once an empty listing
        // came whole: a daemon that cannot be reached leaves stdout empty.
        let mut headed = false;
        let mut header = |out: &mut dyn Write| {
            if !std::mem::replace(&mut headed, true) {
                let _ = writeln!(
                    out,
                    "{:<28} {:<12} {:<11} {:>8}  ERROR",
                    "ID", "TYPE", "STATUS", "ATTEMPTS"
                );
            }
        };
        listing(&rt, &settings, &request, &mut |entry| {
            header(&mut out);
            let r: Value = serde_json::from_str(entry).unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<28} {:<12} {:<11} {:>8}  {}",
                r["id"].as_str().unwrap_or("?"),
                r["type"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?"),
                r["attempts"].as_u64().unwrap_or(0),
                r["error"]["message"].as_str().unwrap_or(""),
            );
        })?;
        header(&mut out);
        Ok(ExitCode::SUCCESS)
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline further than a `u64` of milliseconds is the most, not its
    /// remainder (2^64 + 384 ms was sent as 384 ms).
    #[test]
    fn milliseconds_to_a_far_deadline_stop_at_the_most() {
        let now = Instant::now();
        // Linux's clock counts seconds in an i64: this far is within it.
        let deadline = now + Duration::from_secs(18_446_744_073_709_552);
        assert_eq!(millis_until(deadline, now), u64::MAX);
        assert_eq!(millis_until(now + Duration::from_millis(1500), now), 1500);
        assert_eq!(millis_until(now, now + Duration::from_secs(1)), 0, "passed");
    }
}
