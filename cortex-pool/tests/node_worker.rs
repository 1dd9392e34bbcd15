//! The Node.js SDK (`sdk/node`) under the real pool, over both transports: results,
//! a 4 MiB payload, a handler that prints to stdout, retryable and fatal errors, a
//! crash mid-task, cancellation and a timeout; and the migration example (the Node
//! original's handler map, unchanged) through `cortex-pool run` and the daemon.
//!
//! Needs `node` (18 or later) and the SDK's dependencies (`npm ci` in `sdk/node`).
//! When either is missing the tests FAIL with a message saying so; set
//! `CORTEX_SKIP_NODE=1` to skip them on purpose. (`cargo xtask test` runs `npm ci`
//! before it runs the suite.)
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod daemon_util;
mod sdk_util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_pool::fifo::FifoTransport;
use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Failure, FinalStatus, Pool, PoolEvent, Task, Transport, WorkerCommand};
use daemon_util::{text, Daemon};
use serde_json::{json, Value};

const WORKERS: usize = 2;

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/node")
}

/// Whether the Node tests run: `false` only when `CORTEX_SKIP_NODE=1`; panics with a
/// clear message when node or the SDK's dependencies are missing.
fn node_available() -> bool {
    if std::env::var_os("CORTEX_SKIP_NODE").is_some_and(|v| v == "1") {
        eprintln!("CORTEX_SKIP_NODE=1: the Node worker test is SKIPPED");
        return false;
    }
    let hint = "this test proves the pool works with the Node.js SDK; install Node.js 18 \
                or later (https://nodejs.org, or `apt-get install nodejs npm`) and run \
                `npm ci` in sdk/node (`cargo xtask test` does it), or set \
                CORTEX_SKIP_NODE=1 to skip it";
    let out = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("node cannot be run ({e}): {hint}"));
    assert!(out.status.success(), "`node --version` failed: {hint}");
    let msgpack = sdk_dir().join("node_modules/@msgpack/msgpack/package.json");
    assert!(
        msgpack.is_file(),
        "{} is missing: {hint}",
        msgpack.display()
    );
    true
}

fn example_worker() -> WorkerCommand {
    WorkerCommand::new("node").args([sdk_dir().join("examples/example-worker.mjs")])
}

fn migration_worker() -> PathBuf {
    sdk_dir().join("examples/migration/worker.cjs")
}

#[test]
fn node_worker_over_stdio() {
    if node_available() {
        run(Arc::new(StdioTransport::new()));
    }
}

#[test]
fn node_worker_over_fifo() {
    if node_available() {
        let scratch = sdk_util::Scratch::new("node-fifo");
        let transport = FifoTransport::in_dir(&scratch.0).expect("fifo transport");
        run(Arc::new(transport));
        drop(scratch);
    }
}

fn run(transport: Arc<dyn Transport>) {
    sdk_util::run_bounded(90, scenario(transport));
}

async fn scenario(transport: Arc<dyn Transport>) {
    let name = transport.name();
    let config = sdk_util::config(WORKERS);
    let pool = Pool::builder_arc(transport, example_worker())
        .config(config)
        .start()
        .await
        .unwrap_or_else(|e| panic!("[{name}] the Node workers start: {e}"));
    let mut events = pool.events();

    // Results: payloads of every shape come back unchanged, also a 4 MiB one and one
    // from a handler that prints to stdout (the SDK keeps the protocol stream clean).
    let big = json!({"big": "x".repeat(4 * 1024 * 1024)});
    let payloads = [
        json!({"msg": "hi", "n": 42, "nested": {"list": [1, 2.5, null, true]}}),
        json!("a string with ünïcödé"),
        json!([1, 2, 3]),
        json!(null),
        json!(-7),
        big,
    ];
    let mut handles = Vec::new();
    for p in &payloads {
        handles.push(
            pool.submit(Task::msgpack("echo", p).unwrap())
                .await
                .unwrap(),
        );
    }
    handles.push(
        pool.submit(Task::msgpack("noisy", &payloads[0]).unwrap())
            .await
            .unwrap(),
    );
    for (handle, expected) in handles
        .into_iter()
        .zip(payloads.iter().chain([&payloads[0]]))
    {
        let out = handle
            .await
            .unwrap_or_else(|e| panic!("[{name}] echo: {e}"));
        assert!(
            out.decode::<Value>().unwrap() == *expected,
            "[{name}] a payload came back changed"
        );
        assert_eq!(out.attempts, 1);
    }

    // A retryable handler error: retried, then it succeeds.
    let out = pool
        .submit(Task::msgpack("fail", &json!({"times": 1})).unwrap())
        .await
        .unwrap()
        .await
        .unwrap_or_else(|e| panic!("[{name}] fail once: {e}"));
    assert_eq!(out.attempts, 2, "[{name}]");
    assert_eq!(out.decode::<Value>().unwrap(), json!({"attempt": 2}));

    // A retryable error every time: retried, then dead-lettered with the real cause.
    let err = pool
        .submit(Task::msgpack("fail", &json!({"times": 100})).unwrap())
        .await
        .unwrap()
        .await
        .expect_err("always fails");
    assert_eq!(
        (err.status, err.attempts, err.failure.kind()),
        (FinalStatus::DeadLettered, 3, "handler"),
        "[{name}] {err}"
    );
    assert!(
        err.failure.to_string().contains("failing attempt 3 of 100"),
        "[{name}] {err}"
    );

    // A fatal handler error (FatalError): failed at once, no retry, no dead letter.
    let err = pool
        .submit(Task::msgpack("fail", &json!({"times": 1, "fatal": true})).unwrap())
        .await
        .unwrap()
        .await
        .expect_err("fatal");
    assert_eq!(
        (err.status, err.attempts),
        (FinalStatus::Failed, 1),
        "[{name}] {err}"
    );
    assert!(
        err.failure
            .to_string()
            .contains("fatal failure on attempt 1"),
        "[{name}] {err}"
    );
    assert_eq!(pool.dead_letters().await.len(), 1);

    // A crash: the process exits mid-task; the task is retried on a replacement
    // worker (which crashes too), and the pool is back to full strength after.
    let before = pool.metrics().performance.workers_crashed;
    let err = pool
        .submit(
            Task::msgpack("crash", &json!({"code": 5}))
                .unwrap()
                .with_max_retries(1),
        )
        .await
        .unwrap()
        .await
        .expect_err("crashes every time");
    assert_eq!(
        (err.status, err.attempts),
        (FinalStatus::DeadLettered, 2),
        "[{name}] {err}"
    );
    assert!(
        matches!(&err.failure, Failure::WorkerDied { exit, .. } if exit.contains("exit code 5")),
        "[{name}] {err}"
    );
    assert_eq!(pool.metrics().performance.workers_crashed, before + 2);
    wait_until(&pool, "the crashed workers replaced", |m| {
        m.workers.ready == WORKERS as u64
    })
    .await;

    // A timeout: the attempt runs past its limit; the pool kills the worker and
    // reports `timeout`; a replacement serves the next task.
    let err = pool
        .submit(
            Task::msgpack("sleep", &json!({"ms": 60_000}))
                .unwrap()
                .with_timeout(Duration::from_millis(500))
                .with_max_retries(0),
        )
        .await
        .unwrap()
        .await
        .expect_err("times out");
    assert_eq!(
        (err.failure.kind(), err.attempts),
        ("timeout", 1),
        "[{name}] {err}"
    );
    wait_until(&pool, "the timed-out worker replaced", |m| {
        m.workers.ready == WORKERS as u64
    })
    .await;
    let out = pool
        .submit(Task::msgpack("echo", "after the crash and the timeout").unwrap())
        .await
        .unwrap()
        .await
        .unwrap_or_else(|e| panic!("[{name}] echo after the timeout: {e}"));
    assert_eq!(
        out.decode::<String>().unwrap(),
        "after the crash and the timeout"
    );

    // Cancellation: the AbortSignal stops the sleeping task and the worker answers
    // `cancelled` itself, long before the 20 s grace after which the pool kills it.
    let pids: BTreeSet<u32> = pool.workers().await.iter().map(|w| w.pid).collect();
    let sleeper = pool
        .submit(Task::msgpack("sleep", &json!({"ms": 60_000})).unwrap())
        .await
        .unwrap();
    let sleeper_id = sleeper.id();
    loop {
        match events.recv().await.expect("events flow") {
            PoolEvent::TaskAssigned { task, .. } if task == sleeper_id => break,
            _ => continue,
        }
    }
    let cancelled_at = Instant::now();
    sleeper.cancel();
    let err = sleeper.await.expect_err("cancelled");
    assert_eq!(err.status, FinalStatus::Cancelled, "[{name}] {err}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "[{name}] the worker honoured the cancel"
    );
    let after: BTreeSet<u32> = pool.workers().await.iter().map(|w| w.pid).collect();
    assert_eq!(pids, after, "[{name}] no worker was killed for the cancel");

    assert_eq!(pool.metrics().tasks.cancelled, 1);
    pool.shutdown().await;
    assert_eq!(
        pool.metrics().workers.total,
        0,
        "[{name}] every worker reaped"
    );
}

/// Polls the metrics until `condition` holds (30 s at most: the machine may be loaded).
async fn wait_until(
    pool: &Pool,
    what: &str,
    condition: impl Fn(&cortex_pool::PoolMetrics) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition(&pool.metrics()) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The migration example's expected outcomes, by input id.
fn check_migration_output(out: &Output) {
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{}", text(out));
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {}", text(out)))
    };
    assert_eq!(
        by_id("impl")["result"],
        json!({"status": "completed", "result": {"feature": "login"}})
    );
    assert_eq!(
        by_id("words")["result"],
        json!({"status": "completed", "result": {"words": 6, "longest": "workers"}})
    );
    assert_eq!(
        by_id("ada")["result"],
        json!({"status": "completed", "result": "tested ada"})
    );
    let nameless = by_id("nameless");
    assert_eq!(nameless["status"], "dead_letter", "{}", text(out));
    assert_eq!(nameless["error"]["message"], "test needs a name");
}

#[test]
fn migration_example_under_cortex_pool_run() {
    if !node_available() {
        return;
    }
    let tasks = sdk_dir().join("examples/migration/tasks.jsonl");
    for transport in ["stdio", "fifo"] {
        let scratch = sdk_util::Scratch::new("node-run");
        let mut cmd = Command::new(daemon_util::bin());
        cmd.args([
            "run",
            "-w",
            "2",
            "--max-retries",
            "0",
            "--transport",
            transport,
        ]);
        if transport == "fifo" {
            cmd.arg("--fifo-dir").arg(&scratch.0);
        }
        let out = cmd
            .arg(&tasks)
            .arg("--")
            .arg("node")
            .arg(migration_worker())
            .stdin(Stdio::null())
            .output()
            .expect("cortex-pool runs");
        assert_eq!(out.status.code(), Some(1), "[{transport}] {}", text(&out));
        check_migration_output(&out);
    }
}

#[test]
fn migration_example_under_the_daemon() {
    if !node_available() {
        return;
    }
    let worker = format!("node {}", migration_worker().display());
    let mut d = Daemon::new(
        "node-migration",
        &[
            ("CORTEX_POOL_WORKER", &worker),
            ("CORTEX_POOL_TRANSPORT", "fifo"),
            ("CORTEX_POOL_MAX_RETRIES", "0"),
        ],
    );
    d.watchdog(60);
    d.start();
    let tasks = sdk_dir().join("examples/migration/tasks.jsonl");
    let out = d.cli(&["submit", "--wait", tasks.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    check_migration_output(&out);
    let stop = d.stop();
    assert!(stop.status.success(), "{}", text(&stop));
    // The daemon removed its socket, PID file and FIFOs; its log and its task
    // store (kept across restarts by design) are left.
    let mut left: Vec<String> = std::fs::read_dir(&d.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["daemon.log", "store.db"], "left in the runtime dir");
    let _ = std::fs::remove_dir_all(&d.dir);
}
