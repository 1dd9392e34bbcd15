//! The durable daemon through the real binary: accepted tasks survive `kill -9`
//! of the daemon (and of every worker's process group), each settles exactly
//! once; `submit --wait` outlives a daemon restart and answers every id; the
//! same file submitted twice runs once; a corrupt store, a store from
//! a newer version and a full disk are refused clearly without losing what was
//! accepted.

mod daemon_util;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_util::{alive, json_lines, text, wait_for, Daemon};
use serde_json::Value;

fn kill9(target: &str) {
    let _ = Command::new("kill").args(["-9", "--", target]).status();
}

/// A seeded xorshift, printed so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("DURABLE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("DURABLE_SEED={seed}");
        Self(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn accepted_tasks_survive_twenty_kill_9s_and_each_settles_exactly_once() {
    const TASKS: usize = 10_000;
    const KILLS: usize = 20;
    let d = Daemon::new("crash", &[("CORTEX_POOL_DURABILITY", "relaxed")]);
    d.watchdog(240);
    d.start();
    let tasks: String = (0..TASKS)
        .map(|i| format!("{{\"id\":\"c{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":1}}}}\n"))
        .collect();
    let file = d.dir.join("tasks.jsonl");
    std::fs::write(&file, tasks).unwrap();
    let submit = d.cli(&["submit", file.to_str().unwrap()]);
    assert_eq!(submit.status.code(), Some(0), "{}", text(&submit));
    let accepted = json_lines(&submit.stdout);
    assert_eq!(accepted.len(), TASKS);
    assert!(accepted.iter().all(|l| l["status"] == "accepted"));

    let mut rng = Rng::new();
    let mut group_kills = 0;
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(50 + rng.below(350)));
        let pid = d.read_pid().expect("a running daemon has a PID file");
        // Every other kill takes every worker's process group down with it.
        let workers: Vec<u64> = if kill % 2 == 1 {
            d.workers()
                .iter()
                .filter_map(|w| w["pid"].as_u64())
                .collect()
        } else {
            Vec::new()
        };
        kill9(&pid.to_string());
        for w in &workers {
            kill9(&format!("-{w}"));
        }
        group_kills += usize::from(!workers.is_empty());
        // Its last thread is gone (and its PID file lock with it) only after
        // the main one shows as dead.
        assert!(
            wait_for(10, || !alive(pid)
                && d.cli(&["daemon", "status"]).status.code() == Some(3)),
            "the daemon survived kill -9"
        );
        d.start();
    }
    let ids: Vec<String> = (0..TASKS).map(|i| format!("c{i}")).collect();
    let mut args = vec!["wait", "--timeout-s", "120"];
    args.extend(ids.iter().map(String::as_str));
    let waited = d.cli(&args);
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in json_lines(&waited.stdout) {
        assert_eq!(line["status"], "ok", "{line}");
        *seen
            .entry(line["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), TASKS, "an id is missing");
    assert!(seen.values().all(|n| *n == 1), "an id was reported twice");

    // In the store: every task settled once, whatever ran more than once.
    let listed = d.cli(&["tasks", "--json", "--limit", "0"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let records = json_lines(&listed.stdout);
    assert_eq!(records.len(), TASKS);
    let mut twice = 0;
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        let history = r["history"].as_array().unwrap();
        let settled = history.iter().filter(|h| h["event"] == "ok").count();
        assert_eq!(settled, 1, "settled {settled} times: {r}");
        if r["attempts"].as_u64() > Some(1) {
            twice += 1;
        }
    }
    eprintln!(
        "{KILLS} kills ({group_kills} with the workers' process groups): \
         {twice} of {TASKS} tasks ran more than once"
    );
}

/// Kills a child process (and waits for it) when dropped, so a failing test
/// leaves no `submit` behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `pipe` to its end on a thread.
fn read_all(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

#[test]
fn submit_wait_outlives_a_kill_9_of_the_daemon_and_waits_by_id_after_its_restart() {
    const TASKS: usize = 1_000;
    let d = Daemon::new("wait-restart", &[("CORTEX_POOL_DURABILITY", "relaxed")]);
    d.watchdog(120);
    d.start();
    let tasks: String = (0..TASKS)
        .map(|i| format!("{{\"id\":\"w{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":5}}}}\n"))
        .collect();
    let file = d.dir.join("tasks.jsonl");
    std::fs::write(&file, tasks).unwrap();
    let submit = d
        .command(&["submit", "--wait", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut submit = KillOnDrop(submit);
    // Read its output as it comes: a full pipe would stall it.
    let stdout = read_all(submit.0.stdout.take());
    let stderr = read_all(submit.0.stderr.take());
    // Every task is accepted (the first settles only after), then the daemon dies.
    assert!(
        wait_for(30, || d.cli(&["result", "w0"]).status.code() == Some(0)),
        "the first task never settled"
    );
    let pid = d.read_pid().expect("a running daemon has a PID file");
    kill9(&pid.to_string());
    assert!(
        wait_for(10, || !alive(pid)
            && d.cli(&["daemon", "status"]).status.code() == Some(3)),
        "the daemon survived kill -9"
    );
    assert!(
        submit.0.try_wait().expect("try_wait").is_none(),
        "`submit --wait` ended while its daemon was down (the kill came too late to test anything)"
    );
    d.start();
    let deadline = Instant::now() + Duration::from_secs(90);
    while submit.0.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "`submit --wait` never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = submit.0.wait().expect("wait");
    let stdout = stdout.join().expect("stdout reader");
    let stderr = String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned();
    assert_eq!(status.code(), Some(0), "submit --wait: {stderr}");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in json_lines(&stdout) {
        assert_eq!(line["status"], "ok", "{line}");
        *seen
            .entry(line["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        TASKS,
        "an id is missing from the answer: {stderr}"
    );
    assert!(seen.values().all(|n| *n == 1), "an id was answered twice");
}

#[test]
fn the_same_file_submitted_twice_runs_each_task_once() {
    let d = Daemon::new("idempotent", &[]);
    d.watchdog(60);
    d.start();
    let tasks: String = (0..200)
        .map(|i| format!("{{\"id\":\"i{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"))
        .collect();
    let file = d.dir.join("tasks.jsonl");
    std::fs::write(&file, tasks).unwrap();
    let first = d.cli(&["submit", "--wait", file.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(json_lines(&first.stdout).len(), 200);
    let second = d.cli(&["submit", file.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    for line in json_lines(&second.stdout) {
        assert_eq!(line["duplicate"], true, "{line}");
        assert_eq!(line["state"], "ok", "{line}");
    }
    let m: Value = serde_json::from_slice(&d.cli(&["metrics", "--json"]).stdout).unwrap();
    assert_eq!(m["tasks"]["submitted"], 200, "the pool ran each task once");
    let r = d.cli(&["result", "i7", "nope"]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let lines = json_lines(&r.stdout);
    assert_eq!(lines[0]["result"], 7);
    assert_eq!(lines[1]["status"], "unknown");
    // A timeout past what the clock can count is no timeout (it panicked).
    let w = d.cli(&["wait", "--timeout-s", &u64::MAX.to_string(), "i7"]);
    assert_eq!(w.status.code(), Some(0), "{}", text(&w));
    assert_eq!(json_lines(&w.stdout)[0]["result"], 7);
    // A line that is not UTF-8 is refused by its number; the others are taken.
    let mixed = d.dir.join("mixed.jsonl");
    std::fs::write(
        &mixed,
        b"{\"id\":\"m1\",\"type\":\"echo\",\"payload\":1}\n{\"id\":\"m2\",\"payload\":\"\xff\"}\n{\"id\":\"m3\",\"type\":\"echo\",\"payload\":3}\n",
    )
    .unwrap();
    let out = d.cli(&["submit", "--wait", mixed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut lines: Vec<(String, String)> = json_lines(&out.stdout)
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [("2", "refused"), ("m1", "ok"), ("m3", "ok")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let stop = d.cli(&["daemon", "stop", "--timeout-s", &u64::MAX.to_string()]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
}

#[test]
fn a_retried_task_is_run_with_its_real_attempt_number_and_raises_no_dead_letter_alert() {
    let d = Daemon::new(
        "attempts",
        &[
            ("CORTEX_POOL_MAX_RETRIES", "3"),
            ("CORTEX_POOL_RETRY_BACKOFF_MS", "10"),
        ],
    );
    d.watchdog(60);
    d.start();
    let file = d.dir.join("tasks.jsonl");
    std::fs::write(
        &file,
        "{\"id\":\"twice\",\"type\":\"fail\",\"payload\":{\"times\":2}}\n",
    )
    .unwrap();
    let out = d.cli(&["submit", "--wait", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["status"], "ok", "{}", lines[0]);
    assert_eq!(lines[0]["attempts"], 3, "{}", lines[0]);
    // The store keeps the retries: a failed attempt is no dead letter of the pool's.
    let status = d.status();
    let alerts = status["alerts"].as_array().expect("status lists alerts");
    assert!(
        alerts.iter().all(|a| a["type"] != "task-dead-lettered"),
        "a task that succeeded on its third attempt raised a dead-letter alert: {alerts:?}"
    );
    assert_eq!(status["metrics"]["tasks"]["deadLettered"], 0, "{status}");
}

#[test]
fn dead_letters_are_kept_by_id_retried_under_it_and_purged() {
    let d = Daemon::new("dlq", &[("CORTEX_POOL_MAX_RETRIES", "1")]);
    d.watchdog(60);
    d.start();
    let out = d.cli_with_input(
        &["submit", "--wait"],
        "{\"id\":\"boom\",\"type\":\"fail\",\"payload\":{\"times\":5}}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let list = d.cli(&["dlq", "list"]);
    let entries = json_lines(&list.stdout);
    assert_eq!(entries.len(), 1, "{}", text(&list));
    assert_eq!(entries[0]["id"], "boom");
    assert_eq!(entries[0]["type"], "fail");
    assert_eq!(entries[0]["attempts"], 2);
    assert_eq!(entries[0]["error"]["kind"], "handler");
    // Every count of dead letters is the store's: the pool's own dead-letter
    // queue stays empty on a daemon.
    let metrics: serde_json::Value =
        serde_json::from_slice(&d.cli(&["metrics", "--json"]).stdout).expect("metrics JSON");
    assert_eq!(metrics["tasks"]["dlq"], 1, "{metrics}");
    assert_eq!(metrics["queue"]["dlqSize"], 1, "{metrics}");
    let prometheus = d.cli(&["metrics", "--prometheus"]);
    let text_out = String::from_utf8_lossy(&prometheus.stdout);
    assert!(
        text_out.lines().any(|l| l == "cortex_pool_dlq_size 1"),
        "{text_out}"
    );
    let unknown = d.cli(&["dlq", "retry", "nope"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no such task: nope"));
    let retry = d.cli(&["dlq", "retry", "boom"]);
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry));
    assert!(wait_for(20, || {
        let l = json_lines(&d.cli(&["dlq", "list"]).stdout);
        l.len() == 1 && l[0]["attempts"] == 2
    }));
    let purge = d.cli(&["dlq", "purge"]);
    assert!(
        String::from_utf8_lossy(&purge.stdout).contains("removed boom"),
        "{}",
        text(&purge)
    );
    assert!(json_lines(&d.cli(&["dlq", "list"]).stdout).is_empty());
}

#[test]
fn a_corrupt_store_and_one_from_a_newer_version_are_refused_at_start() {
    let d = Daemon::new("corrupt", &[]);
    d.watchdog(60);
    std::fs::create_dir_all(&d.dir).unwrap();
    let store = d.dir.join("store.db");
    std::fs::write(&store, vec![b'#'; 16 * 1024]).unwrap();
    let out = d.cli(&["daemon", "start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt"), "{}", text(&out));
    assert_eq!(
        std::fs::read(&store).unwrap(),
        vec![b'#'; 16 * 1024],
        "the file is left as it was"
    );

    // A store from a newer schema: user_version (header bytes 60..64) above ours.
    std::fs::remove_file(&store).unwrap();
    d.start();
    let ok = d.cli_with_input(
        &["submit"],
        "{\"id\":\"kept\",\"type\":\"echo\",\"payload\":1}\n",
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let _ = d.cli(&["wait", "kept"]);
    let stop = d.cli(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let mut bytes = std::fs::read(&store).unwrap();
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&store, &bytes).unwrap();
    let out = d.cli(&["daemon", "start"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer than this cortex-pool supports"),
        "{}",
        text(&out)
    );
}

/// Whether this test runs as root (who may mount a tmpfs where the
/// container allows it, and whom a file's mode does not stop).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        .unwrap_or(false)
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// How the test stops the store writing.
enum Blocked {
    /// Its file system (a 2 MiB tmpfs) is filled: as root, where a mount
    /// is allowed.
    DiskFull(Unmount),
    /// Its file is made read-only: for another user, and for root without
    /// `CAP_SYS_ADMIN` (a default container), whose daemon then runs without
    /// the capabilities that pass over a file's mode.
    ReadOnly,
}

/// A 2 MiB tmpfs at `mount` where this test may mount one.
fn small_disk(mount: &std::path::Path) -> Blocked {
    if !is_root() {
        return Blocked::ReadOnly;
    }
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mount)
        .status()
        .is_ok_and(|st| st.success());
    if mounted {
        Blocked::DiskFull(Unmount(mount.to_owned()))
    } else {
        Blocked::ReadOnly
    }
}

#[test]
fn a_store_that_cannot_write_refuses_new_tasks_with_the_reason_and_keeps_what_it_had() {
    let mut d = Daemon::new("full", &[]);
    d.watchdog(90);
    let mount = d.dir.join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let blocked = small_disk(&mount);
    let store = mount.join("store.db");
    d = Daemon::new("full", &[("CORTEX_POOL_STORE", store.to_str().unwrap())]);
    if matches!(blocked, Blocked::ReadOnly) && is_root() {
        d.without_dac_override();
    }
    std::fs::create_dir_all(&mount).unwrap();
    d.start();
    let first = d.cli_with_input(
        &["submit", "--wait"],
        &(0..50)
            .map(|i| format!("{{\"id\":\"k{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"))
            .collect::<String>(),
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let reason = match &blocked {
        Blocked::DiskFull(disk) => {
            let filler = disk.0.join("filler");
            let _ = Command::new("dd")
                .args(["if=/dev/zero", "bs=64k", "count=64"])
                .arg(format!("of={}", filler.display()))
                .output();
            "disk full"
        }
        Blocked::ReadOnly => {
            use std::os::unix::fs::PermissionsExt;
            let _ = d.cli(&["daemon", "stop"]);
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o400)).unwrap();
            d.start();
            "read-only"
        }
    };
    let big = "x".repeat(4000);
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\":\"n{i}\",\"type\":\"echo\",\"payload\":\"{big}\"}}\n"))
        .collect();
    let out = d.cli_with_input(&["submit"], &lines);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let refused: Vec<Value> = json_lines(&out.stdout)
        .into_iter()
        .filter(|l| l["status"] == "refused")
        .collect();
    assert!(!refused.is_empty(), "{}", text(&out));
    assert!(
        refused[0]["error"].as_str().unwrap().contains(reason),
        "{}",
        refused[0]
    );
    let status = d.cli(&["daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("REFUSING new tasks"),
        "{}",
        text(&status)
    );
    // What was accepted before is still there.
    let r = d.cli(&["result", "k0", "k49"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let started = Instant::now();
    drop(d);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn past_max_queue_len_new_tasks_are_refused_queue_full() {
    let d = Daemon::new(
        "queue-full",
        &[
            ("CORTEX_POOL_MAX_QUEUE_LEN", "100"),
            ("CORTEX_POOL_POOL_SIZE", "1"),
        ],
    );
    d.watchdog(60);
    d.start();
    let lines: String = (0..300)
        .map(|i| format!("{{\"id\":\"q{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":2000}}}}\n"))
        .collect();
    let out = d.cli_with_input(&["submit"], &lines);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = json_lines(&out.stdout);
    assert_eq!(all.len(), 300);
    let accepted = all.iter().filter(|l| l["status"] == "accepted").count();
    assert_eq!(accepted, 100, "exactly max_queue_len tasks are taken");
    for l in all.iter().filter(|l| l["status"] == "refused") {
        assert!(
            l["error"].as_str().unwrap().starts_with("queue_full"),
            "{l}"
        );
    }
    let status = d.status();
    let rows = status["store"]["rows"].as_object().unwrap();
    let stored: u64 = rows.values().filter_map(Value::as_u64).sum();
    assert_eq!(
        stored, 100,
        "only the accepted tasks are in the store: {rows:?}"
    );
}

#[test]
fn start_with_a_missing_worker_program_exits_2_quoting_only_this_start() {
    let d = Daemon::new(
        "no-worker",
        &[
            ("CORTEX_POOL_WORKER", "/nonexistent/worker-prog"),
            ("CORTEX_POOL_START_TIMEOUT_MS", "2000"),
        ],
    );
    d.watchdog(60);
    std::fs::create_dir_all(&d.dir).unwrap();
    std::fs::write(d.dir.join("daemon.log"), "an earlier start's line\n").unwrap();
    let out = d.cli(&["daemon", "start"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/worker-prog"), "{}", text(&out));
    assert!(!err.contains("an earlier start's line"), "{}", text(&out));
}

/// A line's `duration_ms` counts from the task's acceptance to its outcome,
/// across its attempts and the backoff between them (as `run` counts from a
/// task's submission), not the last attempt's time alone.
#[test]
fn duration_ms_counts_from_acceptance_across_retries() {
    let d = Daemon::new("duration", &[("CORTEX_POOL_RETRY_BACKOFF_MS", "400")]);
    d.watchdog(60);
    d.start();
    let out = d.cli_with_input(
        &["submit", "--wait"],
        "{\"id\":\"flaky\",\"type\":\"fail\",\"payload\":{\"times\":1}}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = json_lines(&out.stdout)
        .into_iter()
        .find(|l| l["id"] == "flaky" && l["status"] == "ok")
        .unwrap_or_else(|| panic!("no ok line: {}", text(&out)));
    assert_eq!(line["attempts"], 2, "{line}");
    // The retry waited out a backoff of at least half of 400 ms (jitter).
    let ms = line["duration_ms"].as_f64().expect("a number");
    assert!(ms >= 200.0, "the backoff is counted: {line}");
    let stored = d.cli(&["result", "flaky"]);
    let stored = json_lines(&stored.stdout);
    assert_eq!(stored[0]["duration_ms"], line["duration_ms"], "{stored:?}");
}
