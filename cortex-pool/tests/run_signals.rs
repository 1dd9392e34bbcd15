//! `cortex-pool run` and SIGINT/SIGTERM: the first drains, the second stops within
//! about a second, and every task read still gets its line.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `run` whose standard input stays open, with its stderr collected as it comes.
struct Live {
    child: common::Killed,
    events: std::path::PathBuf,
    stderr: Arc<Mutex<String>>,
    _scratch: common::Scratch,
}

impl Live {
    fn start(args: &[&str], tasks: &str) -> Self {
        let scratch = common::Scratch::new("signals");
        let events = scratch.0.join("events.jsonl");
        let mut child = common::Killed(
            Command::new(common::bin())
                .arg("run")
                // Before `args`, which may end with the worker's command.
                .arg("--events")
                .arg(&events)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cortex-pool starts"),
        );
        let stdin = child.0.stdin.as_mut().expect("stdin is piped");
        stdin.write_all(tasks.as_bytes()).expect("tasks written");
        stdin.flush().expect("tasks flushed");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.0.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            events,
            stderr,
            _scratch: scratch,
        }
    }

    fn count_events(&self, name: &str) -> usize {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{name}\"")))
            .count()
    }

    /// Waits (at most 30 s) until `ready` holds.
    fn wait_until(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stderr: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pids of the workers that became ready.
    fn worker_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "worker-ready")
            .filter_map(|e| e["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit (at most `limit`), returning the exit code and the lines.
    fn finish(&mut self, limit: Duration) -> (Option<i32>, Vec<Value>, String, Duration) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                started.elapsed() < limit,
                "run did not exit within {limit:?}; stderr: {}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        let mut out = String::new();
        self.child
            .0
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_string(&mut out)
            .expect("stdout read");
        let lines = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect();
        // The stderr reader ends once the pipe closes (run and its workers exited).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stderr.lock().unwrap().contains("cortex-pool: ") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code(), lines, stderr, took)
    }
}

fn line<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("no line {id}: {lines:#?}"))
}

#[test]
fn sigterm_drains_like_sigint_and_every_task_read_gets_its_line() {
    // `--prefetch 0`: the second task waits in the pool's queue, not in the
    // worker's window.
    let mut live = Live::start(
        &["-w", "1", "--prefetch", "0"],
        concat!(
            "{\"id\":\"slow\",\"type\":\"sleep\",\"payload\":{\"ms\":700}}\n",
            "{\"id\":\"queued\",\"type\":\"echo\",\"payload\":1}\n",
        ),
    );
    live.wait_until("both tasks queued and the first assigned", |l| {
        l.count_events("task-queued") == 2 && l.count_events("task-assigned") == 1
    });
    live.signal("TERM");
    let (code, lines, stderr, _) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(
        line(&lines, "slow")["status"],
        "ok",
        "the running task drained"
    );
    let queued = line(&lines, "queued");
    assert_eq!(queued["error"]["kind"], "shutting_down", "{queued}");
    assert!(stderr.contains("interrupted (SIGTERM)"), "{stderr}");
    assert!(stderr.contains("1 ok, 1 failed"), "the summary: {stderr}");
}

#[test]
fn sigterm_withdraws_a_task_waiting_in_the_window_and_it_gets_its_line() {
    // The default window: the second task is written to the worker and waits there.
    let mut live = Live::start(
        &["-w", "1"],
        concat!(
            "{\"id\":\"slow\",\"type\":\"sleep\",\"payload\":{\"ms\":700}}\n",
            "{\"id\":\"windowed\",\"type\":\"echo\",\"payload\":1}\n",
        ),
    );
    live.wait_until("both tasks written to the worker", |l| {
        l.count_events("task-assigned") == 2
    });
    live.signal("TERM");
    let (code, lines, stderr, _) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(
        line(&lines, "slow")["status"],
        "ok",
        "the running task drained"
    );
    let windowed = line(&lines, "windowed");
    assert_eq!(windowed["error"]["kind"], "shutting_down", "{windowed}");
    assert!(stderr.contains("1 ok, 1 failed"), "the summary: {stderr}");
}

#[test]
fn a_second_signal_stops_within_a_second_and_cancels_what_runs() {
    // `--prefetch 0`: the third task waits in the pool's queue, not in a
    // worker's window.
    let mut live = Live::start(
        &["-w", "2", "--prefetch", "0"],
        concat!(
            "{\"id\":\"long\",\"type\":\"sleep\",\"payload\":{\"ms\":60000}}\n",
            "{\"id\":\"frozen\",\"type\":\"stop\"}\n",
            "{\"id\":\"queued\",\"type\":\"echo\",\"payload\":1}\n",
        ),
    );
    live.wait_until("three tasks queued and two assigned", |l| {
        l.count_events("task-queued") == 3 && l.count_events("task-assigned") == 2
    });
    live.signal("INT");
    live.wait_until("the drain to start", |l| {
        l.stderr.lock().unwrap().contains("interrupted (SIGINT)")
    });
    let workers = live.worker_pids();
    assert_eq!(workers.len(), 2);
    live.signal("TERM");
    let (code, lines, stderr, took) = live.finish(Duration::from_secs(10));
    // No worker outlives run (the stopped one included).
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in workers {
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        while alive() {
            assert!(Instant::now() < deadline, "worker {pid} outlived run");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} after the second signal"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for id in ["long", "frozen"] {
        let l = line(&lines, id);
        assert_eq!(
            (l["status"].as_str(), l["error"]["kind"].as_str()),
            (Some("failed"), Some("cancelled")),
            "{l}"
        );
        // Where it ran, as the pool knows it (the frozen worker never
        // answered: the pool settled its task once it was killed and reaped).
        assert_eq!(l["attempts"], 1, "{l}");
        assert!(l["worker"].as_str().is_some_and(|w| !w.is_empty()), "{l}");
    }
    assert_eq!(line(&lines, "queued")["error"]["kind"], "shutting_down");
    assert!(stderr.contains("0 ok, 3 failed"), "the summary: {stderr}");
    let events = std::fs::read_to_string(&live.events).expect("the events file");
    assert!(
        events
            .lines()
            .last()
            .is_some_and(|l| l.contains("\"event\":\"pool-shutdown\"")),
        "the events end with pool-shutdown: {events}"
    );
}

/// A signal while the workers start (here a worker that never answers the
/// handshake) ends `run` there instead of after the handshake's timeout: no
/// task ran, exit 2 saying so, and the worker is gone.
#[test]
fn a_signal_while_the_workers_start_ends_the_run_there() {
    // An argument no other test's worker has: the process is found by it.
    let mut live = Live::start(
        &["-w", "1", "--", "sleep", "4242.5"],
        "{\"type\":\"echo\"}\n",
    );
    live.wait_until("the worker spawned", |l| {
        l.count_events("worker-spawned") >= 1
    });
    live.signal("INT");
    let (code, lines, stderr, _) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(lines.is_empty(), "no task ran: {lines:?}");
    assert!(
        stderr.contains("interrupted (SIGINT) while the workers started"),
        "{stderr}"
    );
    let left = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|p| {
                std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x004242.5\x00")
            })
            .map(|p| p.file_name())
            .collect()
    };
    // Killed as `run` exited; a moment for the kill to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        left(),
        Vec::<std::ffi::OsString>::new(),
        "the worker was left"
    );
}

/// A signal that stops the reading before the end of the input makes the run
/// exit 1 even when every task read succeeded: a wrapper must not take 0 for
/// "all the input was processed".
#[test]
fn a_signal_before_the_end_of_the_input_exits_1_though_every_line_is_ok() {
    // The input stays open: the reader is waiting for more when the signal comes.
    let mut live = Live::start(
        &["-w", "1"],
        "{\"id\":\"only\",\"type\":\"echo\",\"payload\":1}\n",
    );
    live.wait_until("the task completed", |l| {
        l.count_events("task-completed") == 1
    });
    live.signal("INT");
    let (code, lines, stderr, _) = live.finish(Duration::from_secs(30));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(line(&lines, "only")["status"], "ok");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped before the end of the input"),
        "{stderr}"
    );
}
