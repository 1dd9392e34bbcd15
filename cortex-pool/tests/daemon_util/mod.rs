//! Drives the real `cortex-pool` daemon for the daemon tests: a private runtime
//! directory per test, a watchdog so nothing hangs, and a guard that stops the
//! daemon (and kills it if need be) even when the test panics.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cortex-pool")
}

/// A daemon under test, with its own runtime directory and environment.
#[derive(Debug)]
pub struct Daemon {
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    pid: Arc<AtomicU32>,
    foreground: Option<Child>,
    /// Its commands run without the capabilities that let root pass over
    /// file modes (see [`without_dac_override`](Self::without_dac_override)).
    dac_dropped: bool,
}

impl Daemon {
    /// A fresh runtime directory named after the test, and a small, fast pool
    /// (two workers unless `env` says otherwise). Nothing is started yet.
    pub fn new(name: &str, env: &[(&str, &str)]) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("daemon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut all: Vec<(String, String)> = vec![
            ("CORTEX_POOL_RUNTIME_DIR".into(), dir.display().to_string()),
            ("CORTEX_POOL_POOL_SIZE".into(), "2".into()),
            ("CORTEX_POOL_MIN_WORKERS".into(), "1".into()),
            ("CORTEX_POOL_HEARTBEAT_INTERVAL_MS".into(), "200".into()),
            ("CORTEX_POOL_SHUTDOWN_TIMEOUT_MS".into(), "5000".into()),
            ("CORTEX_POOL_KILL_GRACE_MS".into(), "500".into()),
            ("CORTEX_POOL_RETRY_BACKOFF_MS".into(), "20".into()),
        ];
        for (k, v) in env {
            all.retain(|(key, _)| key != k);
            all.push(((*k).to_owned(), (*v).to_owned()));
        }
        Self {
            dir,
            env: all,
            pid: Arc::new(AtomicU32::new(0)),
            foreground: None,
            dac_dropped: false,
        }
    }

    /// Runs this daemon's commands (the daemon with them) through `setpriv`
    /// without `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` in their bounding
    /// set: as root, a file's mode then stops them as it stops another user,
    /// with no capability needed beyond what a default container's root has.
    pub fn without_dac_override(&mut self) {
        self.dac_dropped = true;
    }

    /// Kills the daemon and ends the test process if the test runs past `secs`.
    pub fn watchdog(&self, secs: u64) {
        let pid = self.pid.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            let pid = pid.load(SeqCst);
            if pid != 0 {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            eprintln!("watchdog: the test ran past {secs} s");
            std::process::exit(101);
        });
    }

    /// A `cortex-pool` command with this daemon's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = if self.dac_dropped {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
                .arg(bin());
            setpriv
        } else {
            Command::new(bin())
        };
        cmd.args(args).stdin(Stdio::null());
        for var in [
            "POOL_SIZE",
            "MIN_WORKERS",
            "MAX_WORKERS",
            "FIFO_DIR",
            "PID_FILE",
            "LOG_DIR",
            "XDG_RUNTIME_DIR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a command to its end.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Runs a command with `input` on stdin.
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let text = input.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
        let out = child.wait_with_output().expect("the binary ends");
        let _ = writer.join();
        out
    }

    /// `daemon start`, asserting success; remembers the pid.
    pub fn start(&self) -> u32 {
        let out = self.cli(&["daemon", "start"]);
        assert!(out.status.success(), "start failed: {}", text(&out));
        let pid = self.read_pid().expect("a PID file after start");
        self.pid.store(pid, SeqCst);
        pid
    }

    /// `daemon run` in the foreground, as a child of the test; waits until the
    /// socket answers.
    pub fn run_foreground(&mut self) -> u32 {
        let child = self
            .command(&["daemon", "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the daemon starts");
        let pid = child.id();
        self.pid.store(pid, SeqCst);
        self.foreground = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(&["daemon", "status"]).status.success() {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the foreground daemon did not come up");
    }

    /// The pid in the PID file.
    pub fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("daemon.sock")
    }

    /// `daemon status --json`.
    pub fn status(&self) -> Value {
        let out = self.cli(&["daemon", "status", "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status prints JSON")
    }

    /// `workers --json`.
    pub fn workers(&self) -> Vec<Value> {
        let out = self.cli(&["workers", "--json"]);
        assert!(out.status.success(), "workers failed: {}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("workers prints JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `daemon stop`, then reaps a foreground child.
    pub fn stop(&mut self) -> Output {
        let out = self.cli(&["daemon", "stop", "--timeout-s", "20"]);
        if let Some(mut child) = self.foreground.take() {
            let _ = child.wait();
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.pid.load(SeqCst);
        if pid != 0 && alive(pid) {
            let _ = self.cli(&["daemon", "stop", "--timeout-s", "5"]);
            if alive(pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        if let Some(mut child) = self.foreground.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `pid` is a live, non-zombie process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// A command's exit code, stdout and stderr, for assertion messages.
/// A worker program: a shell script that runs `before` and then the demo
/// worker (`cortex-pool worker`); removed on drop.
pub struct WorkerScript(PathBuf);

impl WorkerScript {
    /// The script `name`, in the tests' scratch directory.
    pub fn new(name: &str, before: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.sh", std::process::id()));
        let script = format!("#!/bin/sh\n{before}\nexec '{}' worker\n", bin());
        std::fs::write(&path, script).expect("write the worker script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .expect("make the worker script executable");
        Self(path)
    }

    /// The program to give as `worker`.
    pub fn program(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for WorkerScript {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The JSON lines of a command's output, each one a JSON document.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `check` holds, up to `secs`.
pub fn wait_for(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}
