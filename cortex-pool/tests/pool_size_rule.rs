//! One pool-size rule for `run -w N`, `daemon start --set pool_size=N` and
//! `scale N`, through the real binary: the size must lie within
//! `min_workers..=max_workers`, whose defaults move to a size given alone, and a
//! refusal states the rule and the bounds.

mod daemon_util;

use std::io::Write;
use std::process::{Command, Stdio};

use daemon_util::{alive, text, wait_for, Daemon};

/// Stops the daemon started by a test (and kills it if it does not stop), even
/// when the test panics.
struct Started<'a> {
    daemon: &'a Daemon,
    pid: u32,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        let _ = self.daemon.cli(&["daemon", "stop", "--timeout-s", "10"]);
        if alive(self.pid) {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
    }
}

/// `daemon start` with `args`, the test environment's `min_workers` removed so
/// that the size is given alone.
fn start_with<'a>(d: &'a Daemon, args: &[&str]) -> Result<Started<'a>, String> {
    let mut all = vec!["daemon", "start"];
    all.extend_from_slice(args);
    let out = d
        .command(&all)
        .env_remove("CORTEX_POOL_MIN_WORKERS")
        .env_remove("CORTEX_POOL_POOL_SIZE")
        .output()
        .expect("the binary runs");
    if !out.status.success() {
        return Err(text(&out));
    }
    let pid = d.read_pid().expect("a PID file after start");
    Ok(Started { daemon: d, pid })
}

fn target(d: &Daemon) -> u64 {
    d.status()["metrics"]["pool"]["targetSize"]
        .as_u64()
        .expect("targetSize is a number")
}

fn live_workers(d: &Daemon) -> u64 {
    d.status()["metrics"]["workers"]["total"]
        .as_u64()
        .expect("workers.total is a number")
}

#[test]
fn daemon_pool_size_alone_is_the_worker_count_and_scale_follows_the_same_rule() {
    let d = Daemon::new("size-rule", &[]);
    d.watchdog(120);
    let _started = start_with(&d, &["--set", "pool_size=4"]).expect("the daemon starts");
    assert_eq!(target(&d), 4, "pool_size=4 alone gives 4 workers, not 5");
    assert!(
        wait_for(30, || live_workers(&d) == 4),
        "4 live workers: {}",
        d.status()
    );

    let below = d.cli(&["scale", "3"]);
    assert!(!below.status.success(), "{}", text(&below));
    let why = String::from_utf8_lossy(&below.stderr);
    assert!(
        why.contains("pool_size") && why.contains("min_workers..=max_workers (4..=50)"),
        "the refusal states the rule and the bounds: {why}"
    );
    assert_eq!(target(&d), 4, "a refused scale changes nothing");

    let up = d.cli(&["scale", "6"]);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(target(&d), 6);
}

#[test]
fn daemon_start_refuses_a_pool_size_outside_given_bounds_with_exit_2() {
    let d = Daemon::new("size-refused", &[]);
    d.watchdog(60);
    let err = match start_with(&d, &["--set", "pool_size=4", "--set", "min_workers=5"]) {
        Ok(started) => panic!("started with pid {}", started.pid),
        Err(err) => err,
    };
    assert!(err.starts_with("exit Some(2)"), "{err}");
    assert!(
        err.contains("pool_size") && err.contains("min_workers..=max_workers (5..=50)"),
        "{err}"
    );
    assert!(d.read_pid().is_none(), "no daemon was left running");
}

#[test]
fn run_with_w_n_starts_n_workers() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("run-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let metrics = dir.join("metrics.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cortex-pool"))
        .args(["run", "-w", "3", "--metrics-json"])
        .arg(&metrics)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        for i in 0..6 {
            writeln!(stdin, r#"{{"type":"echo","payload":{i}}}"#).expect("stdin takes the tasks");
        }
    }
    let out = child.wait_with_output().expect("run ends");
    assert!(out.status.success(), "{}", text(&out));
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metrics).expect("the metrics file"))
            .expect("the metrics file is JSON");
    assert_eq!(snapshot["pool"]["targetSize"], 3, "{snapshot}");
    std::fs::remove_dir_all(&dir).expect("the scratch directory is removed");
}
