//! The daemon's chaos scenarios: a daemon in the foreground with its own runtime
//! directory, fed through its control socket while something attacks it; then
//! every task's record is read back from its store.
//!
//! A row counts, from `tasks --json`: ok / failed / dead-lettered by status; lost,
//! a submitted id with no settled record; twice, a record settled more than once
//! in its history. Orphans are worker processes (every pid `workers --json`
//! showed during the run) alive 5 s after the daemon exited; crash is a daemon
//! that died, panicked, refused a command it should answer, or exited other than 0.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{is_alive, signal, status_of, Ctx, Guard, Row};

/// A daemon under attack.
struct Daemon {
    pool: PathBuf,
    runtime: PathBuf,
    log: PathBuf,
    child: Guard,
    /// Every worker pid seen while it ran.
    workers: Arc<Mutex<Vec<u32>>>,
}

impl Daemon {
    /// Starts `cortex-pool daemon run` with `workers` workers and waits until its
    /// socket answers.
    fn start(ctx: &Ctx, workers: usize) -> Result<Self, String> {
        let runtime = ctx.scratch.join("rt");
        std::fs::create_dir_all(&runtime).map_err(|e| format!("{}: {e}", runtime.display()))?;
        let log = ctx.scratch.join("daemon.stderr");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = command(&ctx.pool, &runtime, workers);
        cmd.args(["daemon", "run"])
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = Guard(
            cmd.spawn()
                .map_err(|e| format!("cannot start {}: {e}", ctx.pool.display()))?,
        );
        let daemon = Self {
            pool: ctx.pool.clone(),
            runtime,
            log,
            child,
            workers: Arc::new(Mutex::new(Vec::new())),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon.cli(&["daemon", "status"], None).status.success() {
            if Instant::now() > deadline {
                return Err("the daemon did not come up within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn socket(&self) -> PathBuf {
        self.runtime.join("daemon.sock")
    }

    /// Runs a client command against this daemon, `input` on its stdin.
    fn cli(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut cmd = command(&self.pool, &self.runtime, 0);
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Ok(mut child) = cmd.spawn() else {
            return failed_output();
        };
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        child.wait_with_output().unwrap_or_else(|_| failed_output())
    }

    /// Submits task lines, without waiting for their results.
    fn submit(&self, lines: &[u8]) -> Result<(), String> {
        let out = self.cli(&["submit"], Some(lines));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("submit failed: {}", last_line(&out.stderr)))
        }
    }

    /// A counter from `metrics` (JSON), e.g. `"completed"`.
    fn completed(&self) -> u64 {
        let out = self.cli(&["metrics"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        number_after(&text, "\"completed\":").unwrap_or(0)
    }

    /// Remembers the pids of the current workers.
    fn note_workers(&self) {
        note_workers(&self.cli(&["workers", "--json"], None), &self.workers);
    }

    /// Records every worker pid in the background until `stop` is set.
    fn watch_workers(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let (pool, runtime, seen) = (
            self.pool.clone(),
            self.runtime.clone(),
            self.workers.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = command(&pool, &runtime, 0)
                    .args(["workers", "--json"])
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .unwrap_or_else(|_| failed_output());
                note_workers(&out, &seen);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    /// Waits for every id to settle, stops the daemon and counts the row.
    fn finish(mut self, ids: &[String]) -> Result<Row, String> {
        let mut row = Row {
            submitted: ids.len() as u64,
            ..Row::default()
        };
        let mut args = vec!["wait", "--timeout-s", "120"];
        args.extend(ids.iter().map(String::as_str));
        let waited = self.cli(&args, None);
        if !matches!(waited.status.code(), Some(0 | 1)) {
            row.crash = Some(format!(
                "wait exited {:?}: {}",
                waited.status.code(),
                last_line(&waited.stderr)
            ));
        }
        self.note_workers();
        let listed = self.cli(&["tasks", "--json", "--limit", "0"], None);
        count_records(&String::from_utf8_lossy(&listed.stdout), ids, &mut row);
        let alive_before_stop = is_alive(self.pid());
        let stopped = self.cli(&["daemon", "stop", "--timeout-s", "30"], None);
        let exit = wait_exit(&mut self.child.0, Duration::from_secs(40));
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !alive_before_stop {
            row.crash = Some(format!("the daemon died: {}", last_line(log.as_bytes())));
        } else if !stopped.status.success() || exit != Some(0) {
            row.crash = Some(format!(
                "daemon stop exited {:?}, the daemon {exit:?}: {}",
                stopped.status.code(),
                last_line(log.as_bytes())
            ));
        } else if log.contains("panicked") {
            row.crash = Some("a panic in the daemon's log".into());
        }
        let pids = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        row.orphans = loop {
            let alive = pids.iter().filter(|&&pid| is_alive(pid)).count() as u64;
            if alive == 0 || Instant::now() >= deadline {
                break alive;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for leftover in ["daemon.sock", "daemon.pid"] {
            if self.runtime.join(leftover).exists() && row.crash.is_none() {
                row.crash = Some(format!("{leftover} left behind after the stop"));
            }
        }
        Ok(row)
    }
}

/// A `cortex-pool` command for the daemon in `runtime` (`workers` > 0 sets the
/// pool's size), with none of the environment's pool settings.
fn command(pool: &Path, runtime: &Path, workers: usize) -> Command {
    let mut cmd = Command::new(pool);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CORTEX_POOL_")
            || [
                "POOL_SIZE",
                "MIN_WORKERS",
                "MAX_WORKERS",
                "FIFO_DIR",
                "PID_FILE",
                "LOG_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("CORTEX_POOL_RUNTIME_DIR", runtime)
        .env("CORTEX_POOL_HEARTBEAT_INTERVAL_MS", "200")
        .env("CORTEX_POOL_SHUTDOWN_TIMEOUT_MS", "10000")
        .env("CORTEX_POOL_KILL_GRACE_MS", "500")
        .env("CORTEX_POOL_RETRY_BACKOFF_MS", "20");
    if workers > 0 {
        let n = workers.to_string();
        cmd.env("CORTEX_POOL_POOL_SIZE", &n)
            .env("CORTEX_POOL_MIN_WORKERS", "1")
            .env("CORTEX_POOL_MAX_WORKERS", &n);
    }
    cmd
}

fn failed_output() -> Output {
    Command::new("false")
        .output()
        .unwrap_or_else(|_| std::process::exit(2))
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

/// The unsigned number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn note_workers(out: &Output, seen: &Mutex<Vec<u32>>) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    for (at, _) in text.match_indices("\"pid\":") {
        if let Some(pid) = number_after(&text[at..], "\"pid\":") {
            if let Ok(pid) = u32::try_from(pid) {
                if pid != 0 && !seen.contains(&pid) {
                    seen.push(pid);
                }
            }
        }
    }
}

/// Counts `tasks --json` records of `ids` into `row`: statuses, ids never
/// settled (lost) and settlements beyond the first (twice).
fn count_records(listing: &str, ids: &[String], row: &mut Row) {
    let mut settled: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for line in listing.lines() {
        let Some(start) = line.find("\"id\":\"").map(|at| at + 6) else {
            continue;
        };
        let Some(len) = line[start..].find('"') else {
            continue;
        };
        let Some(id) = ids.iter().find(|id| **id == line[start..start + len]) else {
            continue;
        };
        let times = ["ok", "failed", "dead_letter"]
            .iter()
            .map(|state| count_events_named(line, state))
            .sum::<u64>();
        match status_of(line).as_str() {
            "ok" => row.ok += 1,
            "failed" => row.failed += 1,
            "dead_letter" => row.dead_lettered += 1,
            _ => continue,
        }
        *settled.entry(id.as_str()).or_default() += times.max(1);
    }
    row.lost = ids
        .iter()
        .filter(|id| !settled.contains_key(id.as_str()))
        .count() as u64;
    row.twice = settled.values().map(|n| n - 1).sum();
}

/// History entries of a record whose event is `name`.
fn count_events_named(record: &str, name: &str) -> u64 {
    let needle = format!("\"event\":\"{name}\"");
    record.matches(&needle).count() as u64
}

/// Waits for `child` to exit (at most `limit`); its exit code.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(25)),
            _ => return None,
        }
    }
}

fn task_lines(ids: &[String], task: impl Fn(usize) -> String) -> Vec<u8> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| format!("{{\"id\":\"{id}\",{}}}\n", task(i)))
        .collect::<String>()
        .into_bytes()
}

/// Three SIGHUPs (each a reload and a rolling restart) while a few thousand
/// tasks run: every task settles once, no worker outlives the daemon.
pub(super) fn sighup_rolls(ctx: &Ctx) -> Result<Row, String> {
    const TASKS: usize = 3000;
    let daemon = Daemon::start(ctx, 4)?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = daemon.watch_workers(stop.clone());
    let ids: Vec<String> = (0..TASKS).map(|i| format!("h{i}")).collect();
    daemon.submit(&task_lines(&ids, |_| {
        "\"type\":\"sleep\",\"payload\":{\"ms\":2}".to_owned()
    }))?;
    for third in 1..=3u64 {
        let target = TASKS as u64 * third / 4;
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.completed() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(daemon.pid(), "HUP")?;
    }
    let seen = daemon.workers.clone();
    let row = daemon.finish(&ids);
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let mut row = row?;
    let pids = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
    eprintln!("    {pids} worker processes seen");
    if pids <= 4 && row.crash.is_none() {
        row.crash = Some(format!("the SIGHUPs replaced no worker ({pids} seen)"));
    }
    Ok(row)
}

/// Garbage on several control connections while the daemon serves real tasks:
/// it stays up, answers, and every real task settles once.
pub(super) fn control_socket_fuzz(ctx: &Ctx) -> Result<Row, String> {
    const TASKS: usize = 500;
    const CONNECTIONS: u64 = 8;
    const FRAMES_EACH: u64 = 625;
    let daemon = Daemon::start(ctx, 2)?;
    daemon.note_workers();
    let ids: Vec<String> = (0..TASKS).map(|i| format!("f{i}")).collect();
    let fuzzers: Vec<_> = (0..CONNECTIONS)
        .map(|n| {
            let socket = daemon.socket();
            std::thread::spawn(move || fuzz(&socket, 0x9E37_79B9 ^ n, FRAMES_EACH))
        })
        .collect();
    for half in ids.chunks(TASKS / 2) {
        let lines = task_lines(half, |i| format!("\"type\":\"echo\",\"payload\":{i}"));
        daemon.submit(&lines)?;
    }
    let mut sent = 0;
    for fuzzer in fuzzers {
        sent += fuzzer.join().map_err(|_| "a fuzzing thread panicked")?;
    }
    eprintln!("    {sent} garbage frames sent");
    let still = daemon.cli(&["daemon", "status"], None);
    let mut row = daemon.finish(&ids)?;
    if !still.status.success() && row.crash.is_none() {
        row.crash = Some(format!(
            "status after the fuzz: {}",
            last_line(&still.stderr)
        ));
    }
    Ok(row)
}

/// A small xorshift generator: the fuzz is the same on every run of a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Writes `frames` hostile frames to the control socket, one connection each
/// (the daemon closes a connection after a bad frame); how many were written.
fn fuzz(socket: &Path, seed: u64, frames: u64) -> u64 {
    let mut rng = Rng(seed.max(1));
    let mut sent = 0;
    for _ in 0..frames {
        let Ok(mut conn) = UnixStream::connect(socket) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let frame = hostile_frame(&mut rng);
        if conn.write_all(&frame).is_ok() {
            sent += 1;
        }
        // Read what the daemon says (an error reply, or nothing for a frame it
        // is still waiting to complete), then hang up.
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
    }
    sent
}

/// One frame from a family of bad ones: random bytes, lying length prefixes,
/// MessagePack that is not a request, requests with wrong field types.
fn hostile_frame(rng: &mut Rng) -> Vec<u8> {
    let framed = |body: &[u8]| {
        let mut out = u32::try_from(body.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(body);
        out
    };
    match rng.below(7) {
        0 => {
            let n = rng.below(512) as usize + 1;
            rng.bytes(n)
        }
        1 => {
            let mut out = u32::MAX.to_be_bytes().to_vec();
            out.extend(rng.bytes(16));
            out
        }
        2 => {
            // A prefix promising more than is sent (the connection then closes).
            let mut out = 1000u32.to_be_bytes().to_vec();
            let n = rng.below(999) as usize;
            out.extend(rng.bytes(n));
            out
        }
        3 => {
            let n = rng.below(256) as usize;
            framed(&rng.bytes(n))
        }
        4 => framed(&[
            0x81, 0xa4, b't', b'y', b'p', b'e', 0xa4, b'n', b'o', b'p', b'e',
        ]),
        5 => framed(&[
            0x82, 0xa4, b't', b'y', b'p', b'e', 0xa6, b's', b'u', b'b', b'm', b'i', b't', 0xa5,
            b'l', b'i', b'n', b'e', b's', 0x2a,
        ]),
        _ => framed(&[0x93, 0x01, 0x02, 0x03]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_once_and_missing_ids_are_lost() {
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let listing = concat!(
            "{\"attempts\":1,\"history\":[{\"event\":\"attempt\"},{\"event\":\"ok\"}],\"id\":\"a\",\"status\":\"ok\"}\n",
            "{\"attempts\":2,\"history\":[{\"event\":\"ok\"},{\"event\":\"ok\"}],\"id\":\"b\",\"status\":\"ok\"}\n",
        );
        let mut row = Row::default();
        count_records(listing, &ids, &mut row);
        assert_eq!((row.ok, row.lost, row.twice), (2, 1, 1));
    }

    #[test]
    fn worker_pids_are_collected_without_duplicates() {
        let out = Output {
            status: Command::new("true").status().unwrap(),
            stdout: b"[{\"id\":\"worker-0\",\"pid\":41},{\"pid\":42},{\"pid\":41}]".to_vec(),
            stderr: Vec::new(),
        };
        let seen = Mutex::new(Vec::new());
        note_workers(&out, &seen);
        assert_eq!(*seen.lock().unwrap(), [41, 42]);
    }
}
