//! `daemon run|start|stop|restart|status|cleanup`: the daemon's own life.

use crate::cli::args::{ConfigArgs, DaemonCommand};
use crate::daemon::client::Client;
use crate::daemon::config::Settings;
use crate::daemon::durable::unsaved::Outcomes;
use crate::daemon::paths::{ensure_parent, ensure_private_dir};
use crate::daemon::pidfile::{probe, Probe};
use crate::daemon::protocol::{Reply, Request};
use serde::Deserialize;
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::{
    call, finish, not_running, runtime, settings, sources, Fail, Outcome, EXIT_NOT_RUNNING,
};

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
    rt.block_on(crate::daemon::service::run(settings, sources(config)))
        .map_err(|e| match e {
            // The worker program cannot start: a configuration error, as in `run`.
            crate::daemon::DaemonError::PoolStart(_) => Fail(crate::cli::EXIT_USAGE, e.to_string()),
            e => Fail(1, e.to_string()),
        })?;
    Ok(ExitCode::SUCCESS)
}

fn start(config: &ConfigArgs) -> Outcome {
    let settings = settings(config)?;
    let paths = &settings.paths;
    if let Ok(Probe::Running(pid)) = probe(&paths.pid) {
        return Err(Fail(1, format!("already running (pid {pid})")));
    }
    // These name their paths.
    ensure_private_dir(&paths.dir).map_err(|e| Fail(1, e.to_string()))?;
    ensure_parent(&paths.log).map_err(|e| Fail(1, e.to_string()))?;
    let log = crate::daemon::paths::open_private(
        &paths.log,
        OpenOptions::new().create(true).append(true).mode(0o600),
    )
    .map_err(|e| Fail(1, format!("cannot open the log: {e}")))?;
    // Only this start's lines are quoted when it fails.
    let log_start = log.metadata().map_or(0, |m| m.len());
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
            let code = if status.code() == Some(crate::cli::EXIT_USAGE.into()) {
                crate::cli::EXIT_USAGE
            } else {
                1
            };
            return Err(Fail(
                code,
                format!(
                    "the daemon exited during start-up ({status}); from {}:\n{}",
                    paths.log.display(),
                    log_tail(&paths.log, log_start, 10)
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

/// The last `lines` lines written to the log after byte `from`.
fn log_tail(path: &Path, from: u64, lines: usize) -> String {
    use std::io::Seek;
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(std::io::SeekFrom::Start(from));
        let _ = file.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
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
    // A wait past what the clock can count has no deadline.
    let deadline = Instant::now().checked_add(within);
    while deadline.is_none_or(|d| Instant::now() < d) {
        if gone(pid_file, pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    gone(pid_file, pid)
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

/// Removes what a dead daemon left; returns what was removed. Its socket and
/// fifo directory go while its PID file is still locked by this clean-up, so a
/// daemon starting meanwhile waits, and never loses its own; with no PID file
/// at all they go too, and nothing goes while a daemon holds one.
fn remove_stale(settings: &Settings) -> Vec<String> {
    let paths = &settings.paths;
    let mut beside = Vec::new();
    let pid_removed =
        crate::daemon::pidfile::remove_if_stale(&paths.pid, || beside = remove_beside(paths))
            .unwrap_or(false);
    let mut removed = Vec::new();
    if pid_removed {
        removed.push(paths.pid.display().to_string());
    } else if matches!(probe(&paths.pid), Ok(Probe::Absent)) {
        beside = remove_beside(paths);
    }
    removed.extend(beside);
    removed
}

/// Removes a dead daemon's socket and its fifo directory; what it removed.
fn remove_beside(paths: &crate::daemon::paths::Paths) -> Vec<String> {
    let mut removed = Vec::new();
    if paths.socket.exists() {
        crate::daemon::service::remove_socket(&paths.socket);
        if !paths.socket.exists() {
            removed.push(paths.socket.display().to_string());
        }
    }
    if paths.fifo.is_dir() {
        // The fifo transport's own sweep: only directories whose owner is gone
        // and which hold nothing but FIFOs and lock files of its scheme.
        match transport_fifo::sweep_stale(&paths.fifo) {
            Ok(swept) => removed.extend(swept.iter().map(|p| p.display().to_string())),
            Err(e) => eprintln!("cortex-pool: cannot sweep the fifo directory: {e}"),
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
    if let Some(failure) = m["health"]["failure"].as_str() {
        println!("POOL FAILED: {failure}; new tasks are refused: restart the daemon");
    }
    for line in crate::daemon::health_view::lines(&value, crate::daemon::health_view::now_ms()) {
        println!("{line}");
    }
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
    let store = &value["store"];
    let rows = &store["rows"];
    println!(
        "store: {} ({}), {}; {} queued, {} running, {} retrying, {} ok, {} failed, {} dead letters; {:.1} MiB",
        store["path"].as_str().unwrap_or("memory"),
        store["durability"].as_str().unwrap_or("?"),
        match store["health"]["state"].as_str() {
            Some("ok") => "accepting".to_owned(),
            _ => format!(
                "REFUSING new tasks: {}",
                store["health"]["reason"].as_str().unwrap_or("unknown")
            ),
        },
        rows["queued"],
        rows["running"],
        rows["retrying"],
        rows["ok"],
        rows["failed"],
        rows["dead_letter"],
        store["size_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
    );
    if let Some(line) = outcomes_line(&value["outcomes"]) {
        println!("{line}");
    }
    let queue = &value["queue"];
    if let Some(url) = queue["url"].as_str() {
        let held = &queue["held"];
        match queue["connection"].as_str() {
            Some("connected") => println!("queue: {url}, connected; holding {held} tasks"),
            _ => println!(
                "queue: {url}, DISCONNECTED (reconnecting); finishing the {held} tasks it holds"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `daemon status`'s line for the outcomes the feeder has not recorded yet
/// (status's `outcomes` object); none while every outcome is recorded.
fn outcomes_line(outcomes: &serde_json::Value) -> Option<String> {
    let Outcomes {
        unrecorded,
        refused,
    } = Outcomes::deserialize(outcomes).unwrap_or_default();
    (unrecorded > 0).then(|| {
        format!(
            "outcomes: {unrecorded} not recorded yet ({refused} refused one by one by the task \
             source, retried apart; see the daemon's log)"
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_outcomes_line_shows_only_while_some_are_unrecorded() {
        let line = |v: serde_json::Value| super::outcomes_line(&v);
        assert_eq!(
            line(serde_json::json!({"unrecorded": 0, "refused": 0})),
            None
        );
        assert_eq!(line(serde_json::json!({})), None, "an older daemon");
        let shown = line(serde_json::json!({"unrecorded": 3, "refused": 1})).expect("shown");
        assert!(
            shown.starts_with("outcomes: 3 not recorded yet (1 refused"),
            "{shown}"
        );
    }
}
