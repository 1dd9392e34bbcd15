//! The daemon's commands: `daemon run|start|stop|restart|status|cleanup` and the
//! clients `submit`, `metrics`, `workers`, `dlq`, `scale`.
//!
//! Exit status: 0 done, 1 failed (or a task did not succeed), 2 usage or
//! configuration error, 3 the daemon is not running.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::Client;
use super::config::{Settings, Sources};
use super::paths::{ensure_parent, ensure_private_dir};
use super::pidfile::{probe, Probe};
use super::protocol::{Reply, Request};
use crate::cli::args::{
    ConfigArgs, DaemonCommand, DlqCommand, MetricsArgs, ScaleArgs, SubmitArgs, WorkersArgs,
};
use crate::cli::output::Status;
use crate::cli::summary::Tally;

/// Exit status when the daemon is not running.
const EXIT_NOT_RUNNING: u8 = 3;
/// Largest batch of task lines sent in one request (the daemon's default limit is
/// 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

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
    }
}

fn settings(args: &ConfigArgs) -> Result<Settings, Fail> {
    Settings::load(&sources(args)).map_err(|e| Fail(crate::cli::EXIT_USAGE, e.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(1, format!("cannot start the async runtime: {e}")))
}

/// `cortex-pool daemon …`.
pub(crate) fn daemon(command: DaemonCommand) -> ExitCode {
    finish(match command {
        DaemonCommand::Run { config, detached } => run(&config, detached),
        DaemonCommand::Start { config } => start(&config),
        DaemonCommand::Stop { config, timeout_s } => stop(&config, timeout_s),
        DaemonCommand::Restart { config, timeout_s } => match stop(&config, timeout_s) {
            Ok(_) | Err(Fail(EXIT_NOT_RUNNING, _)) => start(&config),
            Err(e) => Err(e),
        },
        DaemonCommand::Status { config, json } => status(&config, json),
        DaemonCommand::Cleanup { config } => cleanup(&config),
    })
}

fn init_tracing(ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORTEX_POOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn run(config: &ConfigArgs, detached: bool) -> Outcome {
    if detached {
        // Leave the starting terminal's session (we are not a group leader).
        let _ = rustix::process::setsid();
    }
    init_tracing(!detached && std::io::stderr().is_terminal());
    let settings = settings(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(1, format!("cannot start the async runtime: {e}")))?;
    rt.block_on(super::service::run(settings, sources(config)))
        .map_err(|e| Fail(1, e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

fn start(config: &ConfigArgs) -> Outcome {
    let settings = settings(config)?;
    let paths = &settings.paths;
    if let Ok(Probe::Running(pid)) = probe(&paths.pid) {
        return Err(Fail(1, format!("already running (pid {pid})")));
    }
    ensure_private_dir(&paths.dir).map_err(|e| Fail(1, format!("{}: {e}", paths.dir.display())))?;
    ensure_parent(&paths.log).map_err(|e| Fail(1, format!("{}: {e}", paths.log.display())))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.log)
        .map_err(|e| {
            Fail(
                1,
                format!("cannot open the log {}: {e}", paths.log.display()),
            )
        })?;
    let log_err = log
        .try_clone()
        .map_err(|e| Fail(1, format!("cannot open the log: {e}")))?;
    let me =
        std::env::current_exe().map_err(|e| Fail(1, format!("cannot find this program: {e}")))?;
    let mut cmd = std::process::Command::new(me);
    cmd.args(["daemon", "run", "--detached"]);
    if let Some(file) = &config.config {
        cmd.arg("--config").arg(file);
    }
    for pair in &config.set {
        cmd.arg("--set").arg(pair);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| Fail(1, format!("cannot start the daemon: {e}")))?;
    let rt = runtime()?;
    let deadline = Instant::now() + settings.pool.start_timeout + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Fail(
                1,
                format!(
                    "the daemon exited during start-up ({status}); from {}:\n{}",
                    paths.log.display(),
                    log_tail(&paths.log, 10)
                ),
            ));
        }
        let ping = rt.block_on(async {
            let mut client = Client::connect(&paths.socket).await?;
            client.call(&Request::Ping).await
        });
        match ping {
            Ok(Reply::Json { value }) => {
                let pid = value.get("pid").and_then(Value::as_u64).unwrap_or(0);
                if pid == u64::from(child.id()) {
                    println!("started (pid {pid}); log: {}", paths.log.display());
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // It answers, but not to us: up all the same if it holds the PID file.
            Ok(Reply::Error { kind, .. })
                if kind == "unauthorized"
                    && matches!(probe(&paths.pid), Ok(Probe::Running(p)) if p == child.id()) =>
            {
                println!(
                    "started (pid {}); log: {}; note: your uid is not in allowed_uids",
                    child.id(),
                    paths.log.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Fail(
                1,
                format!(
                    "the daemon did not answer in time; see {}",
                    paths.log.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X'))
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, sig);
    }
}

fn gone(pid_file: &Path, pid: u32) -> bool {
    !matches!(probe(pid_file), Ok(Probe::Running(_))) && !alive(pid)
}

fn wait_gone(pid_file: &Path, pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if gone(pid_file, pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    gone(pid_file, pid)
}

fn not_running(pid_file: &Path) -> Fail {
    let note = match probe(pid_file) {
        Ok(Probe::Stale) => " (a stale PID file is left; `cortex-pool daemon cleanup` removes it)",
        _ => "",
    };
    Fail(EXIT_NOT_RUNNING, format!("the daemon is not running{note}"))
}

fn stop(config: &ConfigArgs, timeout_s: u64) -> Outcome {
    let settings = settings(config)?;
    let paths = &settings.paths;
    let pid = match probe(&paths.pid) {
        Ok(Probe::Running(pid)) if pid != 0 => pid,
        Ok(_) => return Err(not_running(&paths.pid)),
        Err(e) => return Err(Fail(1, format!("{}: {e}", paths.pid.display()))),
    };
    use rustix::process::Signal;
    signal(pid, Signal::TERM);
    if wait_gone(&paths.pid, pid, Duration::from_secs(timeout_s)) {
        println!("stopped (pid {pid})");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("cortex-pool: the daemon did not drain within {timeout_s} s; forcing");
    signal(pid, Signal::TERM);
    if !wait_gone(&paths.pid, pid, Duration::from_secs(10)) {
        signal(pid, Signal::KILL);
        if !wait_gone(&paths.pid, pid, Duration::from_secs(5)) {
            return Err(Fail(1, format!("the daemon (pid {pid}) is still alive")));
        }
        let _ = remove_stale(&settings);
    }
    println!("stopped (pid {pid}, forced)");
    Ok(ExitCode::SUCCESS)
}

/// Removes what a dead daemon left; returns what was removed.
fn remove_stale(settings: &Settings) -> Vec<String> {
    let paths = &settings.paths;
    let mut removed = Vec::new();
    if matches!(probe(&paths.pid), Ok(Probe::Stale)) && std::fs::remove_file(&paths.pid).is_ok() {
        removed.push(paths.pid.display().to_string());
    }
    if paths.socket.exists() {
        super::service::remove_socket(&paths.socket);
        if !paths.socket.exists() {
            removed.push(paths.socket.display().to_string());
        }
    }
    if paths.fifo.is_dir() {
        // The fifo transport sweeps its own stale directories (only those whose
        // owner is gone and which hold nothing but FIFOs and lock files).
        if let Ok(sweeper) = transport_fifo::FifoTransport::in_dir(&paths.fifo) {
            drop(sweeper);
        }
        if paths.owns_fifo_dir() && std::fs::remove_dir(&paths.fifo).is_ok() {
            removed.push(paths.fifo.display().to_string());
        }
    }
    removed
}

fn cleanup(config: &ConfigArgs) -> Outcome {
    let settings = settings(config)?;
    if let Ok(Probe::Running(pid)) = probe(&settings.paths.pid) {
        return Err(Fail(
            1,
            format!("refusing: the daemon is running (pid {pid}); stop it first"),
        ));
    }
    let removed = remove_stale(&settings);
    if removed.is_empty() {
        println!("nothing to clean up");
    } else {
        for path in removed {
            println!("removed {path}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to the daemon named by `config`, sends `request`, and returns the
/// reply, mapping "no daemon" to exit 3 and error replies to exit 1.
fn call(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    request: Request,
) -> Result<Value, Fail> {
    let reply = rt.block_on(async {
        let mut client = Client::connect(&settings.paths.socket).await?;
        client.call(&request).await
    });
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

fn status(config: &ConfigArgs, json: bool) -> Outcome {
    let settings = settings(config)?;
    let pid = match probe(&settings.paths.pid) {
        Ok(Probe::Running(pid)) => pid,
        _ => {
            println!("not running");
            return Err(not_running(&settings.paths.pid));
        }
    };
    let rt = runtime()?;
    let value = call(&rt, &settings, Request::Status)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let m = &value["metrics"];
    println!(
        "running (pid {pid}), up {:.0} s; health {}",
        value["uptime_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        m["health"]["status"].as_str().unwrap_or("?"),
    );
    println!(
        "workers: {} total, {} ready, {} busy, {} unhealthy (target {})",
        m["workers"]["total"],
        m["workers"]["ready"],
        m["workers"]["busy"],
        m["workers"]["unhealthy"],
        m["pool"]["targetSize"],
    );
    println!(
        "tasks: {} queued, {} in flight, {} completed, {} failed, {} in the DLQ",
        m["tasks"]["queued"],
        m["tasks"]["inFlight"],
        m["tasks"]["completed"],
        m["tasks"]["failed"],
        m["tasks"]["dlq"],
    );
    Ok(ExitCode::SUCCESS)
}

/// `cortex-pool metrics`.
pub(crate) fn metrics(args: MetricsArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(
            &rt,
            &settings,
            Request::Metrics {
                prometheus: args.prometheus,
            },
        )?;
        match value {
            Value::String(text) => print!("{text}"),
            value => println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            ),
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool workers`.
pub(crate) fn workers(args: WorkersArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(&rt, &settings, Request::Workers)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<12} {:>8} {:<9} {:>9} {:>10} {:>10} {:>12}",
            "ID", "PID", "STATE", "IN_FLIGHT", "DONE", "RSS_MB", "UPTIME_S"
        );
        for w in value.as_array().into_iter().flatten() {
            println!(
                "{:<12} {:>8} {:<9} {:>9} {:>10} {:>10.1} {:>12.1}",
                w["id"].as_str().unwrap_or("?"),
                w["pid"].as_u64().unwrap_or(0),
                w["state"].as_str().unwrap_or("?"),
                w["inFlight"].as_u64().unwrap_or(0),
                w["tasksDone"].as_u64().unwrap_or(0),
                w["rssBytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
                w["uptimeMs"].as_f64().unwrap_or(0.0) / 1000.0,
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool dlq …`.
pub(crate) fn dlq(command: DlqCommand) -> ExitCode {
    finish((|| {
        let (config, request) = match &command {
            DlqCommand::List { config } => (config, Request::DlqList),
            DlqCommand::Retry { config, ids } => (
                config,
                Request::DlqRetry {
                    ids: (!ids.is_empty()).then(|| ids.clone()),
                },
            ),
            DlqCommand::Purge { config } => (config, Request::DlqPurge),
        };
        let settings = settings(config)?;
        let rt = runtime()?;
        let value = call(&rt, &settings, request)?;
        match command {
            DlqCommand::List { .. } => {
                for entry in value.as_array().into_iter().flatten() {
                    println!("{entry}");
                }
            }
            DlqCommand::Retry { .. } => println!("resubmitted {}", value["done"]),
            DlqCommand::Purge { .. } => println!("removed {}", value["done"]),
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool scale N`.
pub(crate) fn scale(args: ScaleArgs) -> ExitCode {
    finish((|| {
        let settings = settings(&args.config)?;
        let rt = runtime()?;
        let value = call(&rt, &settings, Request::Scale { size: args.size })?;
        println!("target size {}", value["size"]);
        Ok(ExitCode::SUCCESS)
    })())
}

/// `cortex-pool submit`.
pub(crate) fn submit(args: SubmitArgs) -> ExitCode {
    finish(submit_inner(&args))
}

fn submit_inner(args: &SubmitArgs) -> Outcome {
    let settings = settings(&args.config)?;
    let usage = |m: String| Fail(crate::cli::EXIT_USAGE, m);
    let lines: Vec<String> = match &args.task_type {
        Some(task_type) => {
            if args.tasks.is_some() {
                return Err(usage("give either --type or a TASKS file, not both".into()));
            }
            let payload: Value = match &args.payload {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| usage(format!("--payload is not JSON: {e}")))?,
                None => Value::Null,
            };
            vec![serde_json::json!({"type": task_type, "payload": payload}).to_string()]
        }
        None => {
            if args.payload.is_some() {
                return Err(usage("--payload needs --type".into()));
            }
            let mut text = String::new();
            let read = match &args.tasks {
                Some(p) if p.as_os_str() != "-" => {
                    std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut text))
                }
                _ => std::io::stdin().read_to_string(&mut text),
            };
            read.map_err(|e| usage(format!("cannot read the tasks: {e}")))?;
            text.lines().map(str::to_owned).collect()
        }
    };
    let lines = with_defaults(lines, args.priority, args.timeout_ms);
    let rt = runtime()?;
    let started = Instant::now();
    let mut tally = Tally::default();
    let (mut accepted, mut refused) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result: std::io::Result<()> = rt.block_on(async {
        let mut client = Client::connect(&settings.paths.socket).await?;
        let mut first_line = 1u64;
        for batch in batches(&lines) {
            let n = batch.len() as u64;
            client
                .send(&Request::Submit {
                    lines: batch.to_vec(),
                    wait: args.wait,
                    first_line,
                })
                .await?;
            first_line += n;
            loop {
                match client.next().await? {
                    Reply::Line { line } => {
                        tally.add(
                            status_of(&line),
                            line["duration_ms"].as_f64().unwrap_or(0.0),
                        );
                        let _ = serde_json::to_writer(&mut out, &line);
                        let _ = out.write_all(b"\n");
                    }
                    Reply::Done {
                        accepted: a,
                        refused: r,
                    } => {
                        accepted += a;
                        refused += r;
                        break;
                    }
                    Reply::Error { kind, message } => {
                        return Err(std::io::Error::other(format!("{kind}: {message}")));
                    }
                    _ => {}
                }
            }
            let _ = out.flush();
        }
        Ok(())
    });
    let _ = out.flush();
    drop(out);
    if let Err(e) = result {
        return Err(match e.kind() {
            std::io::ErrorKind::Other => Fail(1, e.to_string()),
            _ => connect_error(&settings, &e),
        });
    }
    if args.wait {
        eprintln!("{}", tally.render(started.elapsed(), None));
        return Ok(if tally.all_ok() {
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

fn status_of(line: &Value) -> Status {
    match line["status"].as_str() {
        Some("ok") => Status::Ok,
        Some("dead_letter") => Status::DeadLetter,
        Some("invalid") => Status::Invalid,
        _ => Status::Failed,
    }
}

/// Fills in `priority` and `timeout_ms` on lines that set none.
fn with_defaults(lines: Vec<String>, priority: Option<u8>, timeout_ms: Option<u64>) -> Vec<String> {
    if priority.is_none() && timeout_ms.is_none() {
        return lines;
    }
    lines
        .into_iter()
        .map(|line| match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(mut map)) => {
                if let Some(p) = priority {
                    map.entry("priority").or_insert(p.into());
                }
                if let Some(t) = timeout_ms {
                    map.entry("timeout_ms").or_insert(t.into());
                }
                Value::Object(map).to_string()
            }
            _ => line,
        })
        .collect()
}

/// Splits lines into request-sized batches.
fn batches(lines: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        if size + line.len() + 8 > BATCH_BYTES && i > start {
            out.push(&lines[start..i]);
            start = i;
            size = 0;
        }
        size += line.len() + 8;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_line_in_order() {
        let lines: Vec<String> = (0..20_000)
            .map(|i| format!("{{\"type\":\"echo\",\"payload\":{i}}}"))
            .collect();
        let b = batches(&lines);
        assert!(b.len() > 1);
        assert_eq!(b.iter().map(|s| s.len()).sum::<usize>(), 20_000);
        assert_eq!(b.concat(), lines);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn defaults_fill_only_missing_fields() {
        let lines = vec![
            r#"{"type":"echo","priority":1}"#.to_owned(),
            r#"{"type":"echo"}"#.to_owned(),
        ];
        let out = with_defaults(lines, Some(5), Some(100));
        assert!(out[0].contains("\"priority\":1"));
        assert!(out[1].contains("\"priority\":5") && out[1].contains("\"timeout_ms\":100"));
    }
}
