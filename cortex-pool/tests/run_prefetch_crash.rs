//! A task that kills its worker while the worker's prefetch window is full is
//! charged alone: every SDK writes a finished task's reply before it starts a later
//! one (`docs/PROTOCOL.md`), so the pool has the replies of the tasks before the
//! crash, and the tasks behind it go back to the queue without losing an attempt.
//!
//! Driven through `cortex-pool run` with the built-in Rust worker, the Python SDK's
//! example worker and the Node SDK's. Python needs `python3` with `msgpack`, Node
//! needs `node` and `npm ci` in `sdk/node` (`cargo xtask test` installs both); when
//! one is missing its test FAILS saying so, unless `CORTEX_SKIP_PYTHON=1` /
//! `CORTEX_SKIP_NODE=1` skips it on purpose.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// Echo tasks written before the crash task, and after it.
const BEFORE: usize = 16;
const AFTER: usize = 16;

/// How the tasks before the crash task run.
#[derive(Clone, Copy)]
enum Before {
    /// `echo`: on the reading thread in the Python SDK, on the first poll in Rust.
    Echo,
    /// `sleep` 0 ms: on a task thread in the Python SDK, a tokio task in Rust, a
    /// timer in Node.
    Sleep,
}

/// `BEFORE` tasks, one task that exits its worker with code 3, `AFTER` echo tasks:
/// one worker with a window of 16 gets the first ones and the crash in one batch.
fn tasks(before: Before) -> String {
    let echo = |prefix: &str, n: usize| {
        json!({"id": format!("{prefix}{n}"), "type": "echo", "payload": format!("{prefix}{n}")})
            .to_string()
    };
    let mut lines: Vec<String> = (0..BEFORE)
        .map(|n| match before {
            Before::Echo => echo("before-", n),
            Before::Sleep => {
                json!({"id": format!("before-{n}"), "type": "sleep", "payload": {"ms": 0}})
                    .to_string()
            }
        })
        .collect();
    lines.push(json!({"id": "poison", "type": "crash", "payload": {"code": 3}}).to_string());
    lines.extend((0..AFTER).map(|n| echo("after-", n)));
    lines.join("\n") + "\n"
}

/// Runs the tasks on one worker with `extra` flags and checks that only the crash
/// task was charged: it fails after `crash_attempts` attempts, every other task
/// succeeds, and the tasks before it ran exactly once.
fn check(worker: &[&str], extra: &[&str], crash_attempts: u64, after_attempts_at_most: u64) {
    check_with(
        worker,
        extra,
        Before::Echo,
        crash_attempts,
        after_attempts_at_most,
    );
}

fn check_with(
    worker: &[&str],
    extra: &[&str],
    before: Before,
    crash_attempts: u64,
    after_attempts_at_most: u64,
) {
    let mut args = vec!["-w", "1", "--prefetch", "16", "--backoff-ms", "10"];
    args.extend_from_slice(extra);
    if !worker.is_empty() {
        args.push("--");
        args.extend_from_slice(worker);
    }
    let run = common::run(&args, &tasks(before));
    assert_eq!(run.code, 1, "the crash task fails the run: {}", run.stderr);
    assert_eq!(run.lines.len(), BEFORE + 1 + AFTER, "{:#?}", run.lines);
    let poison = run.line("poison");
    assert_eq!(poison["status"], "dead_letter", "{poison}");
    assert_eq!(poison["attempts"], crash_attempts, "{poison}");
    assert_eq!(poison["error"]["kind"], "worker_crashed", "{poison}");
    for n in 0..BEFORE {
        let id = format!("before-{n}");
        let line = run.line(&id);
        assert_eq!(
            (line["status"].as_str(), line["attempts"].as_u64()),
            (Some("ok"), Some(1)),
            "a task that finished before the crash keeps its reply and its attempt: {line}"
        );
        if matches!(before, Before::Echo) {
            assert_eq!(line["result"], Value::String(id));
        }
    }
    for n in 0..AFTER {
        let id = format!("after-{n}");
        let line = run.line(&id);
        if n == 0 && after_attempts_at_most > 1 {
            // With several run slots the task right behind the crash may share
            // every one of its attempts: charged each time, it may run out too.
            let shared_its_fate = line["status"] == "dead_letter"
                && line["error"]["kind"] == "worker_crashed"
                && line["attempts"].as_u64() == Some(crash_attempts);
            if shared_its_fate {
                continue;
            }
        }
        assert_eq!(line["status"], "ok", "{line}");
        assert!(
            line["attempts"].as_u64() <= Some(after_attempts_at_most),
            "a task that waited behind the crash is not charged for it: {line}"
        );
        assert_eq!(line["result"], Value::String(id));
    }
}

#[test]
fn rust_worker_a_crash_in_a_full_window_is_charged_to_the_crash_task_alone() {
    // Handlers done on their first poll (replies gathered by the dispatcher), then
    // handlers that wait (each on its own tokio task, which writes its reply).
    check(&[], &["--max-retries", "0"], 1, 1);
    check_with(&[], &["--max-retries", "0"], Before::Sleep, 1, 1);
}

#[test]
fn rust_worker_with_concurrency_two_a_crash_charges_at_most_the_two_oldest() {
    // With two run slots the pool cannot tell which of its two oldest unanswered
    // tasks killed the worker: both are charged, so the task right behind a crash
    // may need a retry per crash, and if it shares every attempt of the crash
    // task it is dead-lettered with it. Every other task is charged at most once
    // per crash; the tasks that finished before it never.
    check(&[], &["--concurrency", "2", "--max-retries", "2"], 3, 3);
}

#[test]
fn python_worker_a_crash_in_a_full_window_is_charged_to_the_crash_task_alone() {
    if !available(
        "CORTEX_SKIP_PYTHON",
        "python3",
        &["-c", "import msgpack"],
        "install python3 and msgpack (`python3 -m pip install msgpack`)",
    ) {
        return;
    }
    let script = sdk("python/example_worker.py");
    let worker = ["python3", script.to_str().expect("utf-8 path")];
    // Inline handlers (replies gathered on the reading thread), then handlers on a
    // task thread, which starts the crash right after its previous task.
    check(&worker, &["--max-retries", "0"], 1, 1);
    check_with(&worker, &["--max-retries", "0"], Before::Sleep, 1, 1);
}

#[test]
fn node_worker_a_crash_in_a_full_window_is_charged_to_the_crash_task_alone() {
    let hint = "install Node.js 18 or later and run `npm ci` in sdk/node";
    if !available("CORTEX_SKIP_NODE", "node", &["--version"], hint) {
        return;
    }
    let msgpack = sdk("node/node_modules/@msgpack/msgpack/package.json");
    assert!(
        msgpack.is_file(),
        "{} is missing: {hint}",
        msgpack.display()
    );
    let script = sdk("node/examples/example-worker.mjs");
    let worker = ["node", script.to_str().expect("utf-8 path")];
    check(&worker, &["--max-retries", "0"], 1, 1);
    check_with(&worker, &["--max-retries", "0"], Before::Sleep, 1, 1);
}

fn sdk(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .join(path)
}

/// `false` only when `skip` is set to 1; panics with `hint` when `program args`
/// does not run successfully.
fn available(skip: &str, program: &str, args: &[&str], hint: &str) -> bool {
    if std::env::var_os(skip).is_some_and(|v| v == "1") {
        eprintln!("{skip}=1: this test is SKIPPED");
        return false;
    }
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot be run ({e}): {hint}, or set {skip}=1"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {hint}, or set {skip}=1",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    true
}
