//! The protocol is language-neutral: a real pool drives the Python SDK's example
//! worker (`sdk/python/example_worker.py`, written from `docs/PROTOCOL.md` alone) over
//! both transports — results, handler errors (retryable and fatal), a crash and a
//! cancellation.
//!
//! Needs `python3` with `msgpack`. When either is missing the tests FAIL with a
//! message saying so; set `CORTEX_SKIP_PYTHON=1` to skip them on purpose.
//! (`cargo xtask test` installs msgpack before it runs the suite.)
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod sdk_util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_pool::fifo::FifoTransport;
use cortex_pool::ipc::StdioTransport;
use cortex_pool::{Failure, FinalStatus, Pool, PoolEvent, Task, Transport, WorkerCommand};
use serde_json::{json, Value};

const WORKERS: usize = 2;

/// Whether the Python tests run: `false` only when `CORTEX_SKIP_PYTHON=1`; panics
/// with a clear message when python3 or msgpack is missing.
fn python_available() -> bool {
    if std::env::var_os("CORTEX_SKIP_PYTHON").is_some_and(|v| v == "1") {
        eprintln!("CORTEX_SKIP_PYTHON=1: the Python worker test is SKIPPED");
        return false;
    }
    let hint = "this test proves the protocol works with the Python SDK; \
                install python3 and msgpack (`python3 -m pip install msgpack`), \
                or set CORTEX_SKIP_PYTHON=1 to skip it";
    let out = Command::new("python3")
        .args(["-c", "import msgpack"])
        .output()
        .unwrap_or_else(|e| panic!("python3 cannot be run ({e}): {hint}"));
    assert!(
        out.status.success(),
        "python3 cannot import msgpack ({}): {hint}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    true
}

fn example_worker() -> WorkerCommand {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python/example_worker.py");
    WorkerCommand::new("python3")
        .args([script])
        .env("PYTHONDONTWRITEBYTECODE", "1")
}

#[test]
fn python_worker_over_stdio() {
    if python_available() {
        run(Arc::new(StdioTransport::new()));
    }
}

#[test]
fn python_worker_over_fifo() {
    if python_available() {
        let scratch = sdk_util::Scratch::new("python-fifo");
        let transport = FifoTransport::in_dir(&scratch.0).expect("fifo transport");
        run(Arc::new(transport));
        drop(scratch);
    }
}

fn run(transport: Arc<dyn Transport>) {
    sdk_util::run_bounded(60, scenario(transport));
}

async fn scenario(transport: Arc<dyn Transport>) {
    let name = transport.name();
    let config = sdk_util::config(WORKERS);
    let pool = Pool::builder_arc(transport, example_worker())
        .config(config)
        .start()
        .await
        .unwrap_or_else(|e| panic!("[{name}] the Python workers start: {e}"));
    let mut events = pool.events();

    // Results: payloads of every shape come back unchanged, also from a handler that
    // prints to stdout (the SDK keeps the protocol stream clean).
    let payloads = [
        json!({"msg": "hi", "n": 42, "nested": {"list": [1, 2.5, null, true]}}),
        json!("a string with ünïcödé"),
        json!([1, 2, 3]),
        json!(null),
        json!(-7),
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
        assert_eq!(&out.decode::<Value>().unwrap(), expected, "[{name}]");
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
    let doomed = pool
        .submit(Task::msgpack("fail", &json!({"times": 100})).unwrap())
        .await
        .unwrap();
    let doomed_id = doomed.id();
    let err = doomed.await.expect_err("always fails");
    assert_eq!(
        (err.status, err.attempts, err.failure.kind()),
        (FinalStatus::DeadLettered, 3, "handler"),
        "[{name}] {err}"
    );
    assert!(
        err.failure.to_string().contains("failing attempt 3 of 100"),
        "[{name}] {err}"
    );
    let dead = pool.dead_letters().await;
    assert_eq!(dead.len(), 1, "[{name}]");
    assert_eq!(dead[0].id, doomed_id);

    // A fatal handler error: failed at once, no retry, no dead letter.
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
        m.workers.ready == WORKERS as u64 && m.performance.workers_restarted >= 2
    })
    .await;
    let out = pool
        .submit(Task::msgpack("echo", "after the crash").unwrap())
        .await
        .unwrap()
        .await
        .unwrap_or_else(|e| panic!("[{name}] echo after crash: {e}"));
    assert_eq!(out.decode::<String>().unwrap(), "after the crash");

    // Cancellation: the worker stops the sleeping task and answers `cancelled`
    // itself, long before the 20 s grace after which the pool would kill it.
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

    let metrics = pool.metrics();
    assert_eq!(metrics.tasks.cancelled, 1);
    assert_eq!(metrics.tasks.dead_lettered, 2);
    pool.shutdown().await;
    assert_eq!(
        pool.metrics().workers.total,
        0,
        "[{name}] every worker reaped"
    );
}

/// Polls the metrics until `condition` holds (10 s at most).
async fn wait_until(
    pool: &Pool,
    what: &str,
    condition: impl Fn(&cortex_pool::PoolMetrics) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition(&pool.metrics()) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
