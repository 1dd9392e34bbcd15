//! `cortex-pool top` end to end: a real daemon, `top` in a real terminal (a
//! detached `tmux` session on a private tmux socket), keys sent with
//! `send-keys`, the screen read with `capture-pane`. Scaling from the keyboard
//! must change the daemon's worker count, `r` must replace every worker, `d`
//! must list and retry a dead letter, and `q` must end `top`.
//!
//! Needs `tmux` (`cargo xtask test` installs it with apt-get); without it the test
//! fails and says so.

mod daemon_util;

use std::process::{Command, Output};

use daemon_util::{bin, text, wait_for, Daemon};

/// A tmux server of our own (`tmux -L NAME`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        let present = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            present,
            "tmux is not installed: this test runs `cortex-pool top` under tmux. \
             `cargo xtask test` installs it; by hand: `sudo apt-get install -y tmux`"
        );
        Self {
            socket: format!("cortex-top-test-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// A tmux format (`#{pane_dead}`, …) of the `top` pane.
    fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "top", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys failed: {}", text(&out));
    }

    /// Runs `command` in an 80×24 session named `top`.
    fn start_top(&self, command: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "80",
            "-y",
            "24",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            text(&out)
        );
    }

    fn wait_screen(&self, secs: u64, what: &str) {
        let found = wait_for(secs, || self.screen().contains(what));
        assert!(
            found,
            "{what:?} did not show within {secs} s; the screen:\n{}",
            self.screen()
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A file the pane's shell writes top's exit status into (tmux 3.3 does not
/// always record `pane_dead_status`); removed on drop.
struct ExitStatus(std::path::PathBuf);

impl ExitStatus {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("cortex-top-status-{}-{name}", std::process::id())))
    }

    /// The pane's command: top, then its exit status into the file.
    fn wrap(&self, top: &str) -> String {
        format!("{top}; echo $? > {}", quote(&self.0.display().to_string()))
    }

    /// top's exit status, once the shell wrote it (within `secs`).
    fn wait(&self, secs: u64) -> Option<String> {
        let mut status = None;
        wait_for(secs, || {
            status = std::fs::read_to_string(&self.0)
                .ok()
                .filter(|s| s.ends_with('\n'))
                .map(|s| s.trim().to_owned());
            status.is_some()
        });
        status
    }
}

impl Drop for ExitStatus {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn keys_scale_roll_retry_a_dead_letter_and_quit() {
    let daemon = Daemon::new("top-tmux", &[("CORTEX_POOL_POOL_SIZE", "2")]);
    daemon.watchdog(180);
    daemon.start();
    let tmux = Tmux::new();
    let exit = ExitStatus::new("keys");
    let command = exit.wrap(&format!(
        "env CORTEX_POOL_RUNTIME_DIR={} {} top --interval-ms 200",
        quote(&daemon.dir.display().to_string()),
        quote(bin())
    ));
    tmux.start_top(&command);
    tmux.run(&["set-option", "-t", "top", "remain-on-exit", "on"]);
    tmux.wait_screen(20, "workers 2/2 ready");
    tmux.wait_screen(5, "q quit");
    tmux.keys(&["s"]);
    tmux.wait_screen(5, "scale to:");
    tmux.keys(&["4", "Enter"]);

    let four = wait_for(30, || daemon.workers().len() == 4);
    assert!(
        four,
        "the daemon did not reach 4 workers: {:?}",
        daemon.workers()
    );
    tmux.wait_screen(20, "workers 4/4 ready");
    tmux.wait_screen(5, "target size 2 → 4");

    let before: Vec<_> = daemon.workers().iter().map(|w| w["pid"].clone()).collect();
    tmux.keys(&["r"]);
    tmux.wait_screen(60, "rolling restart done: 4 worker(s) replaced");
    // Done means the last old worker was retired; it leaves the list once it
    // has exited and been reaped.
    let pids = || -> Vec<_> { daemon.workers().iter().map(|w| w["pid"].clone()).collect() };
    let replaced = wait_for(20, || pids().iter().all(|pid| !before.contains(pid)));
    assert!(replaced, "{before:?} → {:?}", pids());

    let out = daemon.cli(&[
        "submit",
        "--type",
        "fail",
        "--payload",
        r#"{"times":99}"#,
        "--wait",
    ]);
    assert!(
        !out.status.success(),
        "a task failing 99 times ends in the DLQ: {}",
        text(&out)
    );
    tmux.keys(&["d"]);
    tmux.wait_screen(10, "dead letters: 1");
    tmux.keys(&["Enter", "Escape"]);
    tmux.wait_screen(10, "resubmitted");

    tmux.keys(&["q"]);
    exited_cleanly(&tmux, &exit, "q");
}

/// top's pane died after `how` with exit status 0 and the alternate screen left.
fn exited_cleanly(tmux: &Tmux, exit: &ExitStatus, how: &str) {
    let gone = wait_for(10, || tmux.pane("#{pane_dead}") == "1");
    assert!(
        gone,
        "top did not exit on {how}; the screen:\n{}",
        tmux.screen()
    );
    assert_eq!(
        exit.wait(10).as_deref(),
        Some("0"),
        "top's exit status after {how}"
    );
    assert!(
        !tmux.screen().contains("q quit"),
        "the alternate screen was left:\n{}",
        tmux.screen()
    );
}

#[test]
fn sigterm_restores_the_terminal_and_exits_cleanly() {
    let daemon = Daemon::new("top-sigterm", &[]);
    daemon.watchdog(60);
    daemon.start();
    let tmux = Tmux::new();
    let exit = ExitStatus::new("sigterm");
    let command = exit.wrap(&format!(
        "env CORTEX_POOL_RUNTIME_DIR={} {} top --interval-ms 200",
        quote(&daemon.dir.display().to_string()),
        quote(bin())
    ));
    tmux.start_top(&command);
    tmux.run(&["set-option", "-t", "top", "remain-on-exit", "on"]);
    tmux.wait_screen(20, "q quit");
    // The pane runs a shell that runs top: signal its child, top.
    let shell = tmux.pane("#{pane_pid}");
    let out = Command::new("pkill")
        .args(["-TERM", "-P", &shell])
        .output()
        .expect("pkill runs");
    assert!(
        out.status.success(),
        "pkill -TERM -P {shell}: {}",
        text(&out)
    );
    exited_cleanly(&tmux, &exit, "SIGTERM");
}

#[test]
fn a_terminal_that_hangs_up_ends_top() {
    let daemon = Daemon::new("top-hangup", &[]);
    daemon.watchdog(60);
    daemon.start();
    let tmux = Tmux::new();
    let command = format!(
        "exec env CORTEX_POOL_RUNTIME_DIR={} {} top --interval-ms 200",
        quote(&daemon.dir.display().to_string()),
        quote(bin())
    );
    tmux.start_top(&command);
    tmux.wait_screen(20, "q quit");
    let pid = tmux.pane("#{pane_pid}");
    // The terminal goes away under top (an SSH session or a tmux server ending).
    tmux.run(&["kill-server"]);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    let gone = wait_for(10, || !alive());
    if !gone {
        let _ = Command::new("kill").args(["-9", &pid]).status();
    }
    assert!(
        gone,
        "top (pid {pid}) kept running after its terminal hung up"
    );
}

/// A `top` whose standard output refuses the full screen (`/dev/full`: every
/// write fails) ends with the reason, and leaves the terminal as it found it:
/// not in raw mode (`stty` still shows `icanon` and `echo`).
#[test]
fn a_screen_that_cannot_be_drawn_leaves_the_terminal_as_it_was() {
    let daemon = Daemon::new("top-full", &[]);
    daemon.watchdog(60);
    daemon.start();
    let tmux = Tmux::new();
    let exit = ExitStatus::new("full");
    let stty = daemon.dir.join("stty.txt");
    let err = daemon.dir.join("top-stderr.txt");
    let top = format!(
        "env CORTEX_POOL_RUNTIME_DIR={} {} top --interval-ms 200 >/dev/full 2>{}; code=$?; stty -a > {}; (exit $code)",
        quote(&daemon.dir.display().to_string()),
        quote(bin()),
        quote(&err.display().to_string()),
        quote(&stty.display().to_string()),
    );
    tmux.start_top(&exit.wrap(&top));
    let status = exit.wait(20);
    assert_eq!(status.as_deref(), Some("1"), "top's exit status");
    let modes = std::fs::read_to_string(&stty).expect("stty's output");
    let flags: Vec<&str> = modes.split_whitespace().collect();
    assert!(
        flags.contains(&"icanon") && flags.contains(&"echo"),
        "the terminal was left in raw mode: {modes}"
    );
    let said = std::fs::read_to_string(&err).expect("top's stderr");
    assert!(said.contains("cannot draw full-screen"), "{said}");
}
