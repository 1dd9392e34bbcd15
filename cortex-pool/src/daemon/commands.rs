//! The daemon's commands: `daemon run|start|stop|restart|status|cleanup` and the
//! clients `submit`, `result`, `wait`, `tasks`, `metrics`, `workers`, `dlq`, `scale`, `roll`.
//!
//! Exit status: 0 done, 1 failed (or a task did not succeed), 2 usage or
//! configuration error, 3 the daemon is not running.

mod answer;
mod clients;
mod control;
mod line_fields;
pub(crate) mod listing;
mod lookup;
mod requests;
mod roll;
mod submit;

/// How long a client (`submit`, `wait`, `result --wait`) keeps trying to reach a
/// daemon that went away mid-way (a restart), before it gives up.
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(60);

use super::client::Client;
use super::config::{Settings, Sources};
use super::pidfile::{probe, Probe};
use super::protocol::{Reply, Request};
use crate::cli::args::ConfigArgs;
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;

pub(crate) use answer::{emit_line, emit_text, emit_value, Answer, Lines, Printer};
pub(crate) use clients::{dlq, metrics, scale, workers};
pub(crate) use control::daemon;
pub(crate) use lookup::{result, tasks, wait, ResultArgs, TasksArgs, WaitArgs};
pub(crate) use roll::roll;
pub(crate) use submit::submit;

/// Exit status when the daemon is not running.
const EXIT_NOT_RUNNING: u8 = 3;

/// A command's failure: its message and exit status.
struct Fail(u8, String);

type Outcome = Result<ExitCode, Fail>;

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(Fail(code, message)) => {
            eprintln!("cortex-pool: {message}");
            ExitCode::from(code)
        }
    }
}

fn sources(args: &ConfigArgs) -> Sources {
    Sources {
        file: args.config.clone(),
        overrides: args.set.clone(),
        queue: None,
    }
}

fn settings(args: &ConfigArgs) -> Result<Settings, Fail> {
    settings_for_queue(args, None)
}

/// The settings of a command given `--queue URL` (`queue`), which acts on
/// that queue with the configuration's other `queue_*` keys.
fn settings_for_queue(args: &ConfigArgs, queue: Option<&str>) -> Result<Settings, Fail> {
    let sources = Sources {
        queue: queue.map(str::to_owned),
        ..sources(args)
    };
    Settings::load(&sources).map_err(|e| Fail(crate::cli::EXIT_USAGE, e.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(1, format!("cannot start the async runtime: {e}")))
}

/// Connects to the daemon named by `config`, sends `request`, and returns the
/// reply, mapping "no daemon" to exit 3 and error replies to exit 1. A
/// look-up that answers at once in a working daemon (`status`, `metrics`,
/// `workers`) is given `answer_timeout_ms`; a daemon that does not answer in
/// time is reported (exit 1), not waited on forever.
fn call(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    request: Request,
) -> Result<Value, Fail> {
    let limit = matches!(
        request,
        Request::Status | Request::Metrics { .. } | Request::Workers
    )
    .then_some(settings.answer_timeout);
    let exchange = async {
        let mut client = Client::connect(&settings.paths.socket).await?;
        client.call(&request).await
    };
    let reply = rt.block_on(async {
        match limit {
            None => Some(exchange.await),
            Some(limit) => tokio::time::timeout(limit, exchange).await.ok(),
        }
    });
    let Some(reply) = reply else {
        let who = match probe(&settings.paths.pid) {
            Ok(Probe::Running(pid)) => format!("the daemon (pid {pid})"),
            _ => "the daemon".to_owned(),
        };
        return Err(Fail(
            1,
            format!(
                "{who} did not answer within {} ms on {} (answer_timeout_ms); it may be stopped or overloaded",
                settings.answer_timeout.as_millis(),
                settings.paths.socket.display()
            ),
        ));
    };
    match reply {
        Ok(Reply::Json { value }) => Ok(value),
        Ok(Reply::Text { text }) => Ok(Value::String(text)),
        Ok(Reply::Done { accepted, refused }) => {
            Ok(serde_json::json!({"done": accepted, "refused": refused}))
        }
        Ok(Reply::Error { kind, message }) => Err(Fail(1, format!("{kind}: {message}"))),
        Ok(other) => Err(Fail(1, format!("unexpected reply: {other:?}"))),
        Err(e) => Err(connect_error(settings, &e)),
    }
}

fn connect_error(settings: &Settings, e: &std::io::Error) -> Fail {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    match probe(&settings.paths.pid) {
        Ok(Probe::Running(pid)) => Fail(
            1,
            format!(
                "the daemon (pid {pid}) does not answer on {}: {e}",
                settings.paths.socket.display()
            ),
        ),
        _ if matches!(e.kind(), NotFound | ConnectionRefused) => not_running(&settings.paths.pid),
        _ => Fail(1, format!("{}: {e}", settings.paths.socket.display())),
    }
}

fn not_running(pid_file: &Path) -> Fail {
    let note = match probe(pid_file) {
        Ok(Probe::Stale) => " (a stale PID file is left; `cortex-pool daemon cleanup` removes it)",
        _ => "",
    };
    Fail(EXIT_NOT_RUNNING, format!("the daemon is not running{note}"))
}
