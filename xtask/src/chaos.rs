//! `cargo xtask chaos`: attacks the real `cortex-pool` binary and checks that every
//! task still settles exactly once and nothing is left behind.
//!
//! Each scenario runs `cortex-pool run` (or the daemon) with hostile workers, input
//! or signals, and yields a [`Row`]: submitted / ok / failed / dead-lettered /
//! invalid, and the faults: lost (an input line with no output line), twice (an
//! output line repeated), orphans (a worker process alive after the pool exited),
//! and crash (a panic, an exit status other than 0 or 1, a hang, harm done to files
//! the pool does not own). The table is printed; any fault fails the command.
//!
//! To add a scenario, write a `fn(&Ctx) -> Result<Row, String>` (most are a
//! [`Spec`] handed to [`run_pool`]) and list it in [`SCENARIOS`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::steps::{cargo, root, run};

mod daemon;

/// One scenario: a name for the table and the function that plays it.
struct Scenario {
    name: &'static str,
    play: fn(&Ctx) -> Result<Row, String>,
}

/// Every scenario, in the order they run.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "worker kill storm",
        play: kill_storm,
    },
    Scenario {
        name: "SIGSTOPped workers",
        play: sigstop,
    },
    Scenario {
        name: "rogue workers",
        play: rogue_workers,
    },
    Scenario {
        name: "stderr floods",
        play: stderr_floods,
    },
    Scenario {
        name: "hostile input",
        play: hostile_input,
    },
    Scenario {
        name: "resource limits",
        play: resource_limits,
    },
    Scenario {
        name: "SIGTERM mid-run",
        play: sigterm_mid_run,
    },
    Scenario {
        name: "planted symlinks",
        play: planted_symlinks,
    },
    Scenario {
        name: "daemon SIGHUP rolls under load",
        play: daemon::sighup_rolls,
    },
    Scenario {
        name: "daemon control-socket fuzz",
        play: daemon::control_socket_fuzz,
    },
];

/// What every scenario gets: the binaries and a scratch directory of its own.
pub(crate) struct Ctx {
    pool: PathBuf,
    rogue: PathBuf,
    scratch: PathBuf,
}

/// One row of the table.
#[derive(Debug, Default)]
struct Row {
    submitted: u64,
    ok: u64,
    failed: u64,
    dead_lettered: u64,
    invalid: u64,
    lost: u64,
    twice: u64,
    orphans: u64,
    crash: Option<String>,
}

impl Row {
    fn faulty(&self) -> bool {
        self.lost > 0 || self.twice > 0 || self.orphans > 0 || self.crash.is_some()
    }
}

/// `cargo xtask chaos`.
pub(crate) fn chaos() -> Result<(), String> {
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "cortex-pool",
        "-p",
        "tests-integration",
        "--bins",
    ]);
    run("build cortex-pool and the rogue worker", build)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let bin = target.join("debug");
    let scratch_root = target.join(format!("chaos-{}", std::process::id()));
    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        eprintln!("\n==> chaos: {}", scenario.name);
        let scratch = scratch_root.join(scenario.name.replace(' ', "-"));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let ctx = Ctx {
            pool: bin.join("cortex-pool"),
            rogue: bin.join("conformance-worker"),
            scratch,
        };
        let started = Instant::now();
        let row = (scenario.play)(&ctx).unwrap_or_else(|e| Row {
            crash: Some(e),
            ..Row::default()
        });
        eprintln!("    {:.1} s", started.elapsed().as_secs_f64());
        rows.push((scenario.name, row));
    }
    let _ = std::fs::remove_dir_all(&scratch_root);
    println!("{}", table(&rows));
    let faulty: Vec<&str> = rows
        .iter()
        .filter(|(_, r)| r.faulty())
        .map(|(n, _)| *n)
        .collect();
    if faulty.is_empty() {
        Ok(())
    } else {
        Err(format!("chaos: faults in {}", faulty.join(", ")))
    }
}

fn table(rows: &[(&str, Row)]) -> String {
    let mut out = String::from(
        "| scenario | submitted | ok | failed | dead-lettered | invalid | lost | settled twice | orphans | crash |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (name, r) in rows {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.submitted,
            r.ok,
            r.failed,
            r.dead_lettered,
            r.invalid,
            r.lost,
            r.twice,
            r.orphans,
            r.crash.as_deref().unwrap_or("none"),
        ));
    }
    out
}

/// Something done to a running `run` while it runs: `Err` saying why when the
/// attack could not be made (the run is then faulty, not passed untested).
type During = Box<dyn FnOnce(&Live) -> Result<(), String> + Send>;

/// A running `run`, as the scenario's `during` sees it.
struct Live {
    pid: u32,
    events: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Live {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// [`wait_events`](Self::wait_events), an `Err` naming what never came.
    fn await_events(&self, name: &str, n: u64) -> Result<(), String> {
        if self.wait_events(name, n) {
            Ok(())
        } else {
            Err(format!(
                "the attack never started: {n} {name} events did not come"
            ))
        }
    }

    /// Waits (at most 30 s, or until the run ends) until the events file holds `n`
    /// events named `name`; whether it did.
    fn wait_events(&self, name: &str, n: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.stopped() && Instant::now() < deadline {
            let text = std::fs::read_to_string(&self.events).unwrap_or_default();
            if count_events(&text, name) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// One `cortex-pool run`.
struct Spec {
    args: Vec<String>,
    /// The worker command after `--` (the demo worker when empty).
    worker: Vec<String>,
    input: Vec<u8>,
    /// Input lines that must each get exactly one output line; `None` when the
    /// scenario cannot know (a signal stops the reading): then the count of
    /// `task-queued` events plus invalid lines is used.
    expected: Option<u64>,
    during: Option<During>,
    /// How long the run may take.
    limit: Duration,
}

impl Spec {
    fn new(args: &[&str], input: Vec<u8>, expected: u64) -> Self {
        Self {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            worker: Vec::new(),
            input,
            expected: Some(expected),
            during: None,
            limit: Duration::from_secs(120),
        }
    }
}

/// A child killed and reaped on drop, even when the scenario fails early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one `cortex-pool run` and counts its outcome.
fn run_pool(ctx: &Ctx, spec: Spec) -> Result<Row, String> {
    let events = ctx.scratch.join("events.jsonl");
    let mut cmd = Command::new(&ctx.pool);
    cmd.arg("run")
        .args(&spec.args)
        .arg("--events")
        .arg(&events)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !spec.worker.is_empty() {
        cmd.arg("--").args(&spec.worker);
    }
    let mut child = Guard(
        cmd.spawn()
            .map_err(|e| format!("cannot start {}: {e}", ctx.pool.display()))?,
    );
    let pid = child.0.id();
    let mut stdin = child.0.stdin.take().ok_or("no stdin")?;
    let input = spec.input;
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.0.stderr.take().ok_or("no stderr")?;
    let sink = stderr_text.clone();
    let stderr_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = String::from_utf8_lossy(&all).into();
    });
    let stop = Arc::new(AtomicBool::new(false));
    let during = spec.during.map(|during| {
        let live = Live {
            pid,
            events: events.clone(),
            stop: stop.clone(),
        };
        std::thread::spawn(move || during(&live))
    });
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(spec.limit);
    stop.store(true, Ordering::Relaxed);
    let mut row = Row::default();
    if let Some(during) = during {
        row.crash = match during.join() {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("the attack panicked".to_owned()),
        };
    }
    let lines = match lines {
        Ok(lines) => lines,
        Err(_) => {
            row.crash = Some(format!("no end within {:?}", spec.limit));
            return Ok(row);
        }
    };
    let status = child.0.wait().map_err(|e| format!("wait: {e}"))?;
    let _ = feeder.join();
    let _ = stderr_reader.join();
    let stderr = stderr_text
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for line in &lines {
        let Some(key) = line_key(line) else {
            row.crash = Some(format!("output line is not a result: {line:.120}"));
            continue;
        };
        *seen.entry(key).or_default() += 1;
        match status_of(line).as_str() {
            "ok" => row.ok += 1,
            "failed" => row.failed += 1,
            "dead_letter" => row.dead_lettered += 1,
            "invalid" => row.invalid += 1,
            other => row.crash = Some(format!("unknown status {other:?}")),
        }
    }
    row.twice = seen.values().filter(|&&n| n > 1).map(|n| n - 1).sum();
    let event_text = std::fs::read_to_string(&events).unwrap_or_default();
    let expected = spec
        .expected
        .unwrap_or_else(|| count_events(&event_text, "task-queued") + row.invalid);
    row.submitted = expected;
    row.lost = expected.saturating_sub(seen.len() as u64);
    match status.code() {
        Some(0 | 1) => {}
        other => {
            row.crash = Some(format!(
                "exit {other:?}: {}",
                stderr.lines().last().unwrap_or("")
            ));
        }
    }
    if stderr.contains("panicked") {
        row.crash = Some("a panic on stderr".into());
    }
    row.orphans = orphans(&event_text);
    Ok(row)
}

/// A line's identity: its input line for invalid lines, else its id.
fn line_key(line: &str) -> Option<String> {
    let start = line.find("\"id\":\"")? + 6;
    let id_end = start + line[start..].find('"')?;
    let id = &line[start..id_end];
    if let Some(at) = line.find("\"line\":") {
        let digits: String = line[at + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return Some(format!("line:{digits}"));
    }
    Some(format!("id:{id}"))
}

fn status_of(line: &str) -> String {
    line.find("\"status\":\"")
        .and_then(|at| {
            let rest = &line[at + 10..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .unwrap_or_default()
}

fn count_events(events: &str, name: &str) -> u64 {
    let needle = format!("\"event\":\"{name}\"");
    events.lines().filter(|l| l.contains(&needle)).count() as u64
}

/// Worker processes (from `worker-ready` events) still alive 5 s after the pool.
fn orphans(events: &str) -> u64 {
    let pids: Vec<u32> = events
        .lines()
        .filter(|l| l.contains("\"event\":\"worker-ready\""))
        .filter_map(|l| {
            let at = l.find("\"pid\":")? + 6;
            l[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive = pids.iter().filter(|&&pid| is_alive(pid)).count() as u64;
        if alive == 0 || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie.
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// The children of `pid` (its workers).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(") ")?;
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Sends signal `sig` (`KILL`, `TERM`, …) to `pid`; `Err` when `kill` cannot
/// run (a process already gone is no error: the run moves on without it).
fn signal(pid: u32, sig: &str) -> Result<(), String> {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
        .map_err(|e| format!("cannot run kill -{sig} {pid}: {e} (install procps)"))
}

/// `n` task lines `{"id":"tI","type":T,"payload":P}` built by `task(i)`.
fn lines(n: u64, task: impl Fn(u64) -> String) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{}\n", task(i)))
        .collect::<String>()
        .into_bytes()
}

fn kill_storm(ctx: &Ctx) -> Result<Row, String> {
    let n = 3000;
    let mut spec = Spec::new(
        &["-w", "4", "--max-retries", "5", "--backoff-ms", "5"],
        lines(n, |i| {
            format!("{{\"id\":\"t{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":2}}}}")
        }),
        n,
    );
    spec.during = Some(Box::new(|live: &Live| {
        live.await_events("worker-ready", 4)?;
        let mut kills = 0;
        while !live.stopped() && kills < 40 {
            if let Some(&worker) = children(live.pid).get(kills % 4) {
                signal(worker, "KILL")?;
                kills += 1;
            }
            std::thread::sleep(Duration::from_millis(60));
        }
        if kills == 0 {
            return Err("the run ended before a worker was killed".into());
        }
        Ok(())
    }));
    run_pool(ctx, spec)
}

fn sigstop(ctx: &Ctx) -> Result<Row, String> {
    let n = 400;
    let mut spec = Spec::new(
        &[
            "-w",
            "3",
            "--heartbeat-ms",
            "100",
            "--suspect-ms",
            "300",
            "--zombie-ms",
            "800",
            "--backoff-ms",
            "5",
        ],
        lines(n, |i| {
            format!("{{\"id\":\"t{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":10}}}}")
        }),
        n,
    );
    spec.during = Some(Box::new(|live: &Live| {
        live.await_events("worker-ready", 3)?;
        let mut stopped = 0;
        for _ in 0..3 {
            if live.stopped() {
                break;
            }
            if let Some(&worker) = children(live.pid).first() {
                signal(worker, "STOP")?;
                stopped += 1;
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        if stopped == 0 {
            return Err("the run ended before a worker was stopped".into());
        }
        Ok(())
    }));
    run_pool(ctx, spec)
}

/// The conformance worker misbehaving in every way it knows, among echo tasks.
fn rogue_workers(ctx: &Ctx) -> Result<Row, String> {
    const KINDS: [&str; 11] = [
        "garbage",
        "oversized",
        "die_mid_frame",
        "array_result",
        "wrong_types",
        "duplicate",
        "unknown",
        "stolen",
        "exit",
        "stderr_bad_utf8",
        "echo",
    ];
    // Each misbehaviour once, an echo after each (the restart breaker opens when
    // workers die without a success between them, and one start per 30 s is slow).
    let n = 2 * KINDS.len() as u64;
    let mut spec = Spec::new(
        &[
            "-w",
            "3",
            "--max-retries",
            "1",
            "--backoff-ms",
            "5",
            "--timeout-ms",
            "20000",
        ],
        lines(n, |i| {
            let kind = if i % 2 == 1 {
                "echo"
            } else {
                KINDS[(i / 2) as usize]
            };
            format!("{{\"id\":\"t{i}\",\"type\":\"{kind}\",\"payload\":{i}}}")
        }),
        n,
    );
    spec.worker = vec![ctx.rogue.display().to_string()];
    run_pool(ctx, spec)
}

fn stderr_floods(ctx: &Ctx) -> Result<Row, String> {
    const KINDS: [&str; 3] = ["stderr_lines", "stderr_no_newline", "stderr_bad_utf8"];
    let n = 30;
    let mut spec = Spec::new(
        &["-w", "2", "--max-retries", "1"],
        lines(n, |i| {
            let kind = KINDS[i as usize % KINDS.len()];
            format!("{{\"id\":\"t{i}\",\"type\":\"{kind}\",\"payload\":{i}}}")
        }),
        n,
    );
    spec.worker = vec![ctx.rogue.display().to_string()];
    run_pool(ctx, spec)
}

/// Every kind of bad line among good ones; each must get its own line.
fn hostile_input(ctx: &Ctx) -> Result<Row, String> {
    let mut input = Vec::new();
    let mut count = 0;
    let mut push = |line: &[u8]| {
        input.extend_from_slice(line);
        input.push(b'\n');
        count += 1;
    };
    for i in 0..50 {
        push(format!("{{\"id\":\"ok{i}\",\"type\":\"echo\",\"payload\":{i}}}").as_bytes());
        push(b"{\"type\":\"echo\",\"payload\":\"\xff\xfe\"}");
        push(format!("{{\"id\":\"ok{i}\",\"type\":\"echo\"}}").as_bytes());
        push(b"{\"type\":\"echo\",\"timeout_ms\":68719476735}");
        push(b"{\"type\":\"echo\",\"priority\":500}");
        push(b"{\"type\":\"\"}");
        push(b"not json at all");
        push(b"[1,2,3]");
        push(b"{\"type\":\"echo\",\"payload\":1}\r");
        push(b"{\"type\":\"echo\",\"payload\":\"\0\"}");
        push(
            &[
                b"{\"type\":\"echo\",\"payload\":[".as_slice(),
                &[b'['; 200],
                &[b']'; 200],
                b"]}",
            ]
            .concat(),
        );
        let mut long = b"{\"type\":\"echo\",\"payload\":\"".to_vec();
        long.extend(std::iter::repeat_n(b'x', 5000));
        long.extend_from_slice(b"\"}");
        push(&long);
    }
    run_pool(
        ctx,
        Spec::new(&["-w", "2", "--max-line-bytes", "4096"], input, count),
    )
}

fn resource_limits(ctx: &Ctx) -> Result<Row, String> {
    // Over the soft limit (recycled after the task), over the hard one (killed and
    // retried until it dead-letters), and echoes around them.
    let n = 8;
    run_pool(
        ctx,
        Spec::new(
            &[
                "-w",
                "2",
                "--max-rss-mb",
                "40",
                "--kill-rss-mb",
                "150",
                "--max-tasks-per-worker",
                "3",
                "--max-retries",
                "1",
            ],
            lines(n, |i| match i {
                2 => "{\"id\":\"soft\",\"type\":\"alloc\",\"payload\":{\"mb\":60}}".to_owned(),
                5 => "{\"id\":\"hard\",\"type\":\"alloc\",\"payload\":{\"mb\":300}}".to_owned(),
                _ => format!("{{\"id\":\"t{i}\",\"type\":\"echo\",\"payload\":{i}}}"),
            }),
            n,
        ),
    )
}

/// SIGTERM, then a second one, while tasks run: every task read gets its line.
fn sigterm_mid_run(ctx: &Ctx) -> Result<Row, String> {
    let n = 2000;
    let mut spec = Spec::new(
        &["-w", "2"],
        lines(n, |i| {
            format!("{{\"id\":\"t{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":20}}}}")
        }),
        n,
    );
    spec.expected = None;
    spec.during = Some(Box::new(|live: &Live| {
        live.await_events("task-completed", 20)?;
        signal(live.pid, "TERM")?;
        if live.wait_events("task-completed", 40) {
            signal(live.pid, "TERM")?;
        }
        Ok(())
    }));
    run_pool(ctx, spec)
}

/// A FIFO base directory full of planted symlinks (one named like a stale pool
/// directory, pointing at a victim): the pool runs, and the victim is untouched.
fn planted_symlinks(ctx: &Ctx) -> Result<Row, String> {
    let base = ctx.scratch.join("fifo-base");
    let victim = ctx.scratch.join("victim");
    std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&victim).map_err(|e| e.to_string())?;
    std::fs::write(victim.join("precious"), b"keep me").map_err(|e| e.to_string())?;
    for name in ["cortex-pool-1-0000000000000000", "pool.lock", "w0.in.fifo"] {
        let _ = std::os::unix::fs::symlink(&victim, base.join(name));
    }
    let n = 100;
    let base_arg = base.display().to_string();
    let mut row = run_pool(
        ctx,
        Spec::new(
            &["-w", "2", "--transport", "fifo", "--fifo-dir", &base_arg],
            lines(n, |i| {
                format!("{{\"id\":\"t{i}\",\"type\":\"echo\",\"payload\":{i}}}")
            }),
            n,
        ),
    )?;
    if std::fs::read(victim.join("precious")).ok().as_deref() != Some(b"keep me".as_slice()) {
        row.crash = Some("the victim behind a planted symlink was harmed".into());
    }
    Ok(row)
}
