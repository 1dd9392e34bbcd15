//! A second SIGTERM stops the daemon at once: the pool kills every worker's
//! group itself (`Pool::shutdown_now`), also workers that ignore SIGTERM and
//! `shutdown`, and the daemon then removes its socket, PID file and FIFO
//! directory. The daemon itself signals no worker by pid.

mod daemon_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_util::{alive, text, wait_for, Daemon, WorkerScript};
use serde_json::Value;

/// Whether process `pid` ignores SIGTERM (bit 15 of `SigIgn` in its status).
fn ignores_term(pid: u64) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

fn term(pid: u32) {
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success());
}

#[test]
fn a_second_sigterm_kills_workers_that_ignore_term_and_shutdown_and_nothing_is_left() {
    // Ignores SIGTERM: the ignored disposition survives `exec`.
    let worker = WorkerScript::new("deaf-worker", "trap '' TERM");
    let program = worker.program();
    // Five minutes to drain and five between stop steps: only a stop at once
    // ends this test in time.
    let d = Daemon::new(
        "stop-now",
        &[
            ("CORTEX_POOL_WORKER", program.as_str()),
            ("CORTEX_POOL_TRANSPORT", "fifo"),
            ("CORTEX_POOL_SHUTDOWN_TIMEOUT_MS", "300000"),
            ("CORTEX_POOL_KILL_GRACE_MS", "300000"),
            ("CORTEX_POOL_TASK_TIMEOUT_MS", "300000"),
            ("CORTEX_POOL_PREFETCH", "0"),
        ],
    );
    d.watchdog(90);
    let pid = d.start();
    let tasks = "{\"id\":\"h1\",\"type\":\"hang\",\"payload\":null}\n\
                 {\"id\":\"h2\",\"type\":\"hang\",\"payload\":null}\n";
    let submit = d.cli_with_input(&["submit"], tasks);
    assert!(submit.status.success(), "{}", text(&submit));
    let mut workers: Vec<u64> = Vec::new();
    assert!(
        wait_for(30, || {
            let all = d.workers();
            workers = all
                .iter()
                .filter(|w| w["inFlight"].as_u64() == Some(1))
                .filter_map(|w| w["pid"].as_u64())
                .collect();
            workers.len() == 2
        }),
        "both hang tasks started: {:?}",
        d.workers()
    );
    for w in &workers {
        assert!(ignores_term(*w), "worker {w} ignores SIGTERM");
    }

    term(pid);
    let log = d.dir.join("daemon.log");
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    assert!(
        wait_for(20, || logged("draining")),
        "the first SIGTERM starts the drain"
    );
    let status = d.status();
    assert_eq!(
        status["metrics"]["pool"]["shuttingDown"],
        Value::Bool(true),
        "{status}"
    );
    assert!(
        workers.iter().all(|w| alive(*w as u32)),
        "the drain waits for the hung tasks"
    );

    term(pid);
    assert!(
        wait_for(20, || !alive(pid)),
        "the daemon stops after the second SIGTERM"
    );
    assert!(
        workers.iter().all(|w| !alive(*w as u32)),
        "every worker was killed and reaped before the daemon ended"
    );
    assert!(logged("second stop signal"), "the log says why");
    for leftover in ["daemon.sock", "daemon.pid", "fifo"] {
        assert!(!d.dir.join(leftover).exists(), "{leftover} was left behind");
    }
}

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source dir") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The daemon leaves signalling workers to the pool, which signals through the
/// task that owns each unreaped worker process: no daemon code signals a
/// process group, and the one `kill` by pid is `daemon stop` signalling the
/// daemon whose PID file lock proves it alive.
#[test]
fn the_daemon_signals_no_worker_by_pid() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "found the sources: {files:?}");
    let mut killers = Vec::new();
    for file in &files {
        let code = std::fs::read_to_string(file).expect("read a source file");
        assert!(
            !code.contains("kill_process_group"),
            "{} signals a process group",
            file.display()
        );
        if code.contains("kill_process(") {
            killers.push(file.strip_prefix(&src).unwrap_or(file).to_path_buf());
        }
    }
    assert_eq!(
        killers,
        [PathBuf::from("commands/control.rs")],
        "only `daemon stop` signals a pid (the daemon's)"
    );
}
