//! The daemon's log tells what happens to its workers, and `daemon status` says
//! why health is what it is, through the real binary: a worker that writes to
//! stderr and then crashes leaves its stderr line (at `INFO`), the crash with its
//! stderr tail (at `WARN`), the alert and the replacement in `daemon.log`, and the
//! alert in `daemon status`.

mod daemon_util;

use daemon_util::{text, wait_for, Daemon};

#[test]
fn a_crash_is_logged_with_its_stderr_tail_and_its_alert_shown_by_status() {
    let mut d = Daemon::new(
        "log",
        &[
            ("CORTEX_POOL_POOL_SIZE", "1"),
            ("CORTEX_POOL_MAX_RETRIES", "0"),
        ],
    );
    d.watchdog(120);
    d.start();
    // "last words\n", hex-encoded for the demo worker's `stderr` task.
    let words = d.cli(&[
        "submit",
        "--wait",
        "--type",
        "stderr",
        "--payload",
        r#"{"hex":"6c61737420776f7264730a"}"#,
    ]);
    assert!(words.status.success(), "{}", text(&words));
    let crash = d.cli(&[
        "submit",
        "--wait",
        "--type",
        "crash",
        "--payload",
        r#"{"code":3}"#,
    ]);
    assert_eq!(crash.status.code(), Some(1), "{}", text(&crash));

    let log_path = d.dir.join("daemon.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let logged = wait_for(30, || {
        let log = log();
        log.contains("worker crashed") && log.contains("replacing a worker")
    });
    let log = log();
    assert!(logged, "the crash and the replacement are logged:\n{log}");
    let crash_line = log
        .lines()
        .position(|l| l.contains("worker crashed"))
        .expect("a crash line");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[crash_line].contains("WARN") && lines[crash_line].contains("exit code 3"),
        "{}",
        lines[crash_line]
    );
    assert!(
        lines[crash_line..]
            .iter()
            .take(4)
            .any(|l| l.contains("last words")),
        "the crash carries the stderr tail:\n{log}"
    );
    assert!(
        lines[..crash_line]
            .iter()
            .any(|l| l.contains("INFO") && l.contains("last words")),
        "worker stderr is forwarded at INFO:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("alert") && l.contains("worker-crashed")),
        "the alert is logged at WARN:\n{log}"
    );

    let status = d.cli(&["daemon", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("alerts (last 5 min):") && shown.contains("worker-crashed"),
        "status shows the active alert:\n{shown}"
    );
    let json = d.status();
    assert_eq!(json["alerts"][0]["type"], "worker-crashed", "{json}");
    d.stop();
}
