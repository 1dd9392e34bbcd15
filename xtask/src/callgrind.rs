//! `cargo xtask callgrind`: instructions per 64 B echo task, manager side and worker
//! side, counted by `valgrind --tool=callgrind` (repeatable where wall-clock timings
//! are not).
//!
//! Each side runs twice, with `N` and `2N` tasks; start-up, warm-up and shutdown cost
//! the same in both runs, so `(Ir(2N) − Ir(N)) / N` is what one task costs.
//!
//! - **manager**: `pool-bench tput N 2` under callgrind (the process that hosts the
//!   pool and its caller; the two `bench-worker`s run natively, untraced), a
//!   handle a task (bench `callgrind.manager`); the same with `CALLER=completions`,
//!   the outcomes through one `Completions` channel as `run` and the daemon take
//!   them (`callgrind.manager.completions`); and `pool-bench lat N/10`, a round
//!   trip at a time to one worker (`callgrind.manager.lat`, per round trip).
//! - **worker**: `bench-worker` under callgrind, its stdin a pipe fed with the frames
//!   of `pool-bench frames N TYPE` (hello, `N` tasks, a graceful shutdown), its
//!   stdout `/dev/null`; once with `echo` (a typed handler: serde decodes and
//!   encodes the payload, bench `callgrind.worker`) and once with `echo_raw` (a raw
//!   handler, bytes in and out: what the SDK itself costs, `callgrind.worker.raw`).
//!
//! Prints `RESULT {json}` lines (bench `callgrind.manager[.completions|.lat]` /
//! `callgrind.worker[.raw]`,
//! metric `ir_per_task`, unit `instr`) in `pool-bench`'s format. Environment: `N`
//! (default 20 000), `WORKER_CMD` (a command line split on whitespace) to count
//! another worker than `bench-worker` (e.g. a Python SDK worker). The callgrind
//! files are kept in `target/callgrind/`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::peers::target_dir;
use crate::steps::{cargo, root, run};

pub(crate) fn callgrind() -> Result<(), String> {
    let n = std::env::var("N")
        .ok()
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("N must be a number of tasks, got {v:?}"))
        })
        .transpose()?
        .unwrap_or(20_000)
        .max(1);
    let found = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Err(
            "valgrind is not installed (apt-get install valgrind); it counts the instructions"
                .into(),
        );
    }
    let mut build = cargo();
    build.args(["build", "--release", "-p", "benches", "--bins"]);
    run("cargo build --release -p benches --bins", build)?;
    let bin = target_dir().join("release");
    let out = target_dir().join("callgrind");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let pool_bench = bin.join("pool-bench");

    // The manager three ways: a handle a task (`tput`), the tasks' outcomes
    // through one `Completions` channel (what `run` and the daemon use), and
    // one task at a time (`lat`, a tenth as many: each is a round trip).
    let sides = [
        Side {
            bench: "callgrind.manager",
            mode: "tput",
            after_count: &["2"],
            caller: None,
            tasks: n,
        },
        Side {
            bench: "callgrind.manager.completions",
            mode: "tput",
            after_count: &["2"],
            caller: Some("completions"),
            tasks: n,
        },
        Side {
            bench: "callgrind.manager.lat",
            mode: "lat",
            after_count: &[],
            caller: None,
            tasks: (n / 10).max(1),
        },
    ];
    for side in sides {
        let manager = |tasks: u64| -> Result<u64, String> {
            let file = out.join(format!("{}.{tasks}.out", side.bench));
            let mut cmd = valgrind(&file);
            cmd.arg(&pool_bench)
                .arg(side.mode)
                .arg(tasks.to_string())
                .args(side.after_count);
            // Only what this side sets: a caller's own CALLER, CALLERS, CONC
            // or QUEUE_SHARDS would change what the line measures.
            for var in ["CALLER", "CALLERS", "CONC", "QUEUE_SHARDS"] {
                cmd.env_remove(var);
            }
            if let Some(caller) = side.caller {
                cmd.env("CALLER", caller);
            }
            cmd.stdout(Stdio::null());
            counted(cmd, &file)
        };
        let per_task = (manager(2 * side.tasks)?.saturating_sub(manager(side.tasks)?)) as f64
            / side.tasks as f64;
        result(side.bench, per_task);
    }

    let custom: Option<Vec<String>> = match std::env::var("WORKER_CMD") {
        Ok(line) if !line.trim().is_empty() => {
            Some(line.split_whitespace().map(str::to_owned).collect())
        }
        _ => None,
    };
    let bench_worker = vec![bin.join("bench-worker").to_string_lossy().into_owned()];
    // The bundled worker twice: a typed handler (serde decodes and encodes the
    // payload) and a raw one (bytes in, bytes out: the SDK alone).
    let runs: Vec<(&str, &str, Vec<String>)> = match custom {
        Some(cmd) => vec![("callgrind.worker", "echo", cmd)],
        None => vec![
            ("callgrind.worker", "echo", bench_worker.clone()),
            ("callgrind.worker.raw", "echo_raw", bench_worker),
        ],
    };
    for (bench, task_type, worker_cmd) in runs {
        let worker = |tasks: u64| -> Result<u64, String> {
            let mut gen = Command::new(&pool_bench);
            gen.args(["frames", &tasks.to_string(), task_type]);
            let made = gen
                .output()
                .map_err(|e| format!("pool-bench frames: {e}"))?;
            if !made.status.success() {
                return Err(format!("pool-bench frames failed ({})", made.status));
            }
            let file = out.join(format!("{bench}.{tasks}.out"));
            let mut cmd = valgrind(&file);
            cmd.args(&worker_cmd)
                .env("CORTEX_TRANSPORT", "stdio")
                .env("CORTEX_WORKER_ID", "worker-1")
                .current_dir(root())
                .stdout(Stdio::null());
            fed(cmd, made.stdout)?;
            totals(&file)
        };
        let per_task = (worker(2 * n)?.saturating_sub(worker(n)?)) as f64 / n as f64;
        result(bench, per_task);
    }
    eprintln!("callgrind files: {}", out.display());
    Ok(())
}

/// One way of counting the manager's side.
struct Side {
    /// The `RESULT` line's bench.
    bench: &'static str,
    /// `pool-bench`'s mode.
    mode: &'static str,
    /// Its arguments after the number of tasks (the workers, for `tput`).
    after_count: &'static [&'static str],
    /// `CALLER` for `pool-bench`, if any.
    caller: Option<&'static str>,
    /// `N`: the runs count `N` and `2N` tasks.
    tasks: u64,
}

fn valgrind(file: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--trace-children=no"])
        .arg(format!("--callgrind-out-file={}", file.display()))
        .stderr(Stdio::null());
    cmd
}

/// Runs `cmd` to completion and reads its instruction total from `file`.
fn counted(mut cmd: Command, file: &Path) -> Result<u64, String> {
    let status = cmd.status().map_err(|e| format!("valgrind: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})"));
    }
    totals(file)
}

/// Runs `cmd` with `input` written into its stdin (a pipe) by a thread.
fn fed(mut cmd: Command, input: Vec<u8>) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("valgrind: {e}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "the worker's stdin is not a pipe".to_owned())?;
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let status = child.wait().map_err(|e| format!("valgrind: {e}"))?;
    let fed = feeder
        .join()
        .map_err(|_| "the feeder thread panicked".to_owned())?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})"));
    }
    fed.map_err(|e| format!("feeding the worker: {e}"))
}

/// The `summary:` (or `totals:`) line of a callgrind output file: instructions
/// executed by every thread of the process.
fn totals(file: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: no summary line", file.display()))
}

fn result(bench: &str, value: f64) {
    println!(
        "RESULT {{\"bench\":\"{bench}\",\"metric\":\"ir_per_task\",\"value\":{value:.3},\"unit\":\"instr\"}}"
    );
}
