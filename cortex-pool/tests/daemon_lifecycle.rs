//! The daemon end to end: start, status, 1 000 tasks with `--wait` through a
//! worker killed with SIGKILL and a SIGHUP rolling restart, stop, nothing left.

mod daemon_util;

use std::collections::HashSet;
use std::process::Stdio;

use daemon_util::{alive, text, wait_for, Daemon};
use serde_json::Value;

#[test]
fn start_submit_kill_a_worker_reload_stop_and_nothing_is_left() {
    let mut d = Daemon::new(
        "lifecycle",
        &[
            ("CORTEX_POOL_POOL_SIZE", "4"),
            ("CORTEX_POOL_TRANSPORT", "fifo"),
        ],
    );
    d.watchdog(120);
    let pid = d.start();
    assert!(alive(pid));

    // A second start is refused, naming the running daemon.
    let again = d.cli(&["daemon", "start"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("already running (pid {pid})")),
        "{}",
        text(&again)
    );
    // cleanup refuses while the daemon lives.
    let cleanup = d.cli(&["daemon", "cleanup"]);
    assert_eq!(cleanup.status.code(), Some(1), "{}", text(&cleanup));
    assert!(d.socket().exists());

    let status = d.status();
    assert_eq!(status["pid"], pid);
    assert_eq!(status["metrics"]["workers"]["total"], 4);
    assert!(d.dir.join("fifo").is_dir());

    // 1 000 tasks; while they run, one worker is killed and the pool is rolled.
    let tasks: String = (1..=1000)
        .map(|i| format!("{{\"id\":\"t{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":8}}}}\n"))
        .collect();
    let file = d.dir.join("tasks.jsonl");
    std::fs::write(&file, tasks).unwrap();
    let submit = d
        .command(&["submit", "--wait", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let completed = |d: &Daemon| {
        let m: Value =
            serde_json::from_slice(&d.cli(&["metrics", "--json"]).stdout).unwrap_or_default();
        m["tasks"]["completed"].as_u64().unwrap_or(0)
    };
    assert!(wait_for(30, || completed(&d) >= 100), "tasks did not start");
    // A worker with a task in flight, so its death is that task's failed attempt.
    let mut victim = 0;
    assert!(
        wait_for(30, || {
            victim = d
                .workers()
                .iter()
                .find(|w| w["inFlight"].as_u64() > Some(0))
                .and_then(|w| w["pid"].as_u64())
                .unwrap_or(0);
            victim != 0
        }),
        "no worker had a task in flight"
    );
    assert!(std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(wait_for(30, || completed(&d) >= 300));
    let before: HashSet<u64> = d
        .workers()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());

    let out = submit.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000);
    let ids: HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1000, "every task reported exactly once");
    assert!(lines.iter().all(|l| l["status"] == "ok"));

    // The rolling restart replaces every worker and keeps the size.
    assert!(
        wait_for(30, || {
            let now: HashSet<u64> = d
                .workers()
                .iter()
                .filter_map(|w| w["pid"].as_u64())
                .collect();
            now.len() == 4 && now.is_disjoint(&before)
        }),
        "workers were not all replaced"
    );
    let m: Value = serde_json::from_slice(&d.cli(&["metrics", "--json"]).stdout).unwrap();
    assert_eq!(m["tasks"]["completed"], 1000);
    // The pool saw the worker die, and its tasks ran again: the SDK batches
    // replies, so a worker that dies holding several tasks costs none of them
    // an attempt (each reruns alone), and one holding one costs it one.
    assert!(
        m["performance"]["workersCrashed"].as_u64() >= Some(1),
        "{}",
        m["performance"]
    );
    assert_eq!(m["tasks"]["deadLettered"], 0);
    let rows = &m["store"]["rows"];
    assert_eq!(rows["ok"], 1000, "{rows}");
    for state in ["queued", "running", "retrying", "failed", "dead_letter"] {
        assert_eq!(rows[state].as_u64().unwrap_or(0), 0, "{state}: {rows}");
    }
    let workers: Vec<u64> = d
        .workers()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect();

    let stop = d.stop();
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    assert!(!alive(pid));
    assert!(
        wait_for(10, || workers.iter().all(|w| !alive(*w as u32))),
        "a worker outlived the daemon"
    );
    for leftover in ["daemon.sock", "daemon.pid", "fifo"] {
        assert!(!d.dir.join(leftover).exists(), "{leftover} was left behind");
    }
    assert!(d.dir.join("daemon.log").exists(), "the log is kept");

    // Stopping a stopped daemon says so and fails; status says not running.
    let again = d.cli(&["daemon", "stop"]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not running"));
    assert_eq!(d.cli(&["daemon", "status"]).status.code(), Some(3));
    // A listing with no daemon to ask prints nothing on stdout, not even
    // its table's header.
    let tasks = d.cli(&["tasks"]);
    assert_eq!(tasks.status.code(), Some(3), "{}", text(&tasks));
    assert!(tasks.stdout.is_empty(), "{}", text(&tasks));
    // A wait with no daemon to ask is answered at once, as `result` is (it
    // waited a minute for a daemon to come back).
    let asked = std::time::Instant::now();
    let wait = d.cli(&["wait", "--timeout-s", "120", "abc"]);
    assert_eq!(wait.status.code(), Some(3), "{}", text(&wait));
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(30),
        "wait took {:?} to say no daemon runs",
        asked.elapsed()
    );
}

#[test]
fn a_daemon_killed_with_sigkill_leaves_stale_files_that_cleanup_removes() {
    let mut d = Daemon::new("stale", &[("CORTEX_POOL_TRANSPORT", "fifo")]);
    d.watchdog(60);
    let pid = d.run_foreground();
    let workers: Vec<u64> = d
        .workers()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect();
    // The fifo transport's pool directory, which the killed daemon leaves behind.
    let pool_dirs: Vec<_> = std::fs::read_dir(d.dir.join("fifo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cortex-fifo-"))
        })
        .collect();
    assert_eq!(pool_dirs.len(), 1, "{pool_dirs:?}");
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let _ = d.stop(); // reaps the foreground child; the daemon is already gone
                      // The lock went with the process: status and stop see a stale file, not a daemon.
    assert_eq!(d.cli(&["daemon", "status"]).status.code(), Some(3));
    assert!(d.dir.join("daemon.pid").exists());
    let cleanup = d.cli(&["daemon", "cleanup"]);
    assert!(cleanup.status.success(), "{}", text(&cleanup));
    for leftover in ["daemon.sock", "daemon.pid", "fifo"] {
        assert!(!d.dir.join(leftover).exists(), "{leftover} was left behind");
    }
    // Every path removed is printed, the pool directory inside `fifo/` too.
    let printed = String::from_utf8_lossy(&cleanup.stdout);
    for removed in pool_dirs.iter().chain([&d.dir.join("fifo")]) {
        let line = format!("removed {}", removed.display());
        assert!(
            printed.lines().any(|l| l == line),
            "cleanup did not print {line:?}:\n{printed}"
        );
    }
    for w in workers {
        let _ = std::process::Command::new("kill")
            .args(["-9", &w.to_string()])
            .status();
    }
    // A new daemon starts over the cleaned directory.
    let pid = d.start();
    assert!(alive(pid));
    assert_eq!(d.stop().status.code(), Some(0));
}

/// A daemon that does not answer (here stopped with SIGSTOP: its socket
/// still takes connections) is reported by `metrics`, `status` and `workers`
/// after `answer_timeout_ms`, exit 1, naming its pid, instead of being
/// waited on forever.
#[test]
fn a_daemon_that_does_not_answer_is_reported_not_waited_on() {
    let d = Daemon::new("stuck", &[("CORTEX_POOL_ANSWER_TIMEOUT_MS", "300")]);
    d.watchdog(60);
    let pid = d.start();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {name}");
    };
    signal("-STOP");
    let answers: Vec<_> = [
        vec!["metrics", "--json"],
        vec!["daemon", "status"],
        vec!["workers"],
    ]
    .iter()
    .map(|args| d.cli(args))
    .collect();
    signal("-CONT");
    for out in &answers {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "the daemon (pid {pid}) did not answer within 300 ms"
            )),
            "{stderr}"
        );
    }
    assert!(
        d.cli(&["metrics", "--json"]).status.success(),
        "answers again once resumed"
    );
}

/// An empty variable counts as unset (`VAR= cmd` clears it for one command):
/// an empty `CORTEX_POOL_` variable that names no key is no error, a set one
/// is (exit 2, naming it).
#[test]
fn an_empty_variable_that_names_no_key_is_unset_and_a_set_one_is_refused() {
    let d = Daemon::new("empty-unknown-var", &[]);
    let empty = d
        .command(&["daemon", "status"])
        .env("CORTEX_POOL_POOLSIZE", "")
        .output()
        .expect("the binary runs");
    assert_eq!(empty.status.code(), Some(3), "{}", text(&empty));
    let set = d
        .command(&["daemon", "status"])
        .env("CORTEX_POOL_POOLSIZE", "4")
        .output()
        .expect("the binary runs");
    assert_eq!(set.status.code(), Some(2), "{}", text(&set));
    assert!(
        String::from_utf8_lossy(&set.stderr).contains("CORTEX_POOL_POOLSIZE"),
        "{}",
        text(&set)
    );
}
