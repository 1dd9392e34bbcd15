//! The built-in demo worker: a handful of task types to try the pool with, and the
//! worker the pool's end-to-end tests drive (crashes, hangs, memory growth, noise).
//!
//! | task type | payload | does |
//! |---|---|---|
//! | `echo` | anything | returns the payload unchanged (its very bytes) |
//! | `sleep` | `{"ms": N}` | sleeps N ms (stops early when cancelled), returns `"ok"` |
//! | `sha256` | `{"data": "text", "rounds": N}` | CPU work: hex digest of SHA-256 applied N times (default 1) |
//! | `fail` | `{"times": N}` | fails (retryable) while the attempt is ≤ N, then returns `"ok"` |
//! | `crash` | `{"code": N}` | exits the process with code N (default 1) mid-task |
//! | `hang` | anything | never replies unless cancelled; heartbeats keep flowing |
//! | `alloc` | `{"mb": N, "hold_ms": M}` | allocates and touches N MiB, kept for the worker's lifetime, then waits M ms (default 0; stops early when cancelled), returns `"ok"` |
//! | `noise` | anything | prints a few lines with `println!`, returns `"ok"` |
//! | `stderr` | `{"hex": "6869ff0a", "repeat": N}` | writes the bytes (hex-encoded; any bytes, newlines only where given) to stderr N times (default 1), returns `"ok"` |
//! | `stop` | `{"times": N}` | while the attempt is ≤ N, stops its own process with SIGSTOP (a hung worker whose heartbeats stop too), then returns `"ok"` |

use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use worker_sdk::{HandlerError, TaskContext, Worker};

/// Memory the `alloc` task keeps alive, so the worker's RSS really grows.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Runs the demo worker on the link the manager set up; returns the exit code.
pub(crate) fn run() -> ExitCode {
    Worker::new()
        // The payload's own bytes back (a raw handler: nothing decoded or
        // re-encoded), so `echo` costs what the pool costs, not what serde does.
        .handle_raw("echo", |_ctx: TaskContext, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        })
        .handle("sleep", sleep)
        .handle("sha256", sha256)
        .handle("fail", fail)
        .handle("crash", crash)
        .handle("hang", hang)
        .handle("alloc", alloc)
        .handle("noise", noise)
        .handle("stderr", stderr)
        .handle("stop", stop)
        .run()
}

async fn sleep(ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let ms = number(&input, "ms", None)?;
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!("ok")),
        () = ctx.cancelled() => Err(cancelled()),
    }
}

async fn sha256(ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let data = input
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_input("`data` must be a string"))?
        .to_owned();
    let rounds = number(&input, "rounds", Some(1))?;
    tokio::task::spawn_blocking(move || {
        // Round 1 hashes the text; every further round hashes the previous digest.
        let mut digest = Sha256::digest(data.as_bytes());
        for round in 1..rounds {
            if round % 4096 == 0 && ctx.is_cancelled() {
                return Err(cancelled());
            }
            digest = Sha256::digest(digest);
        }
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(json!(hex))
    })
    .await?
}

async fn fail(ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let times = number(&input, "times", None)?;
    if u64::from(ctx.attempt()) <= times {
        return Err(HandlerError::retryable(format!(
            "failing on purpose: attempt {} of {times} planned failures",
            ctx.attempt()
        )));
    }
    Ok(json!("ok"))
}

#[allow(clippy::exit)] // On purpose: the pool's tests need a worker that dies mid-task.
async fn crash(_ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let code = number(&input, "code", Some(1))?;
    let code = i32::try_from(code).map_err(|_| bad_input("`code` must fit an i32"))?;
    std::process::exit(code)
}

async fn stop(ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let times = number(&input, "times", Some(1))?;
    if u64::from(ctx.attempt()) <= times {
        let me = rustix::process::getpid();
        rustix::process::kill_process(me, rustix::process::Signal::STOP)
            .map_err(|e| HandlerError::fatal(format!("cannot stop myself: {e}")))?;
        // A signal sent to one's own process stops the other threads a moment
        // later; without this pause the reply could leave before the stop lands.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(json!("ok"))
}

async fn hang(ctx: TaskContext, _input: Value) -> Result<Value, HandlerError> {
    ctx.cancelled().await;
    Err(cancelled())
}

async fn alloc(ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let mb = number(&input, "mb", None)?;
    let hold_ms = number(&input, "hold_ms", Some(0))?;
    let bytes = usize::try_from(mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1024 * 1024))
        .ok_or_else(|| bad_input("`mb` is too large"))?;
    tokio::task::spawn_blocking(move || {
        let mut block = Vec::new();
        block
            .try_reserve_exact(bytes)
            .map_err(|e| HandlerError::fatal(format!("cannot allocate {mb} MiB: {e}")))?;
        // Non-zero bytes: every page is written, so it is resident, not just reserved.
        block.resize(bytes, 1u8);
        HELD.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(block);
        Ok::<(), HandlerError>(())
    })
    .await??;
    // Still running with the memory held, so a check of its size finds it mid-task.
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(hold_ms)) => Ok(json!("ok")),
        () = ctx.cancelled() => Err(cancelled()),
    }
}

#[allow(clippy::print_stdout)] // On purpose: worker-sdk must route this to stderr.
async fn noise(ctx: TaskContext, _input: Value) -> Result<Value, HandlerError> {
    for line in 1..=3 {
        println!("noise from task {}: line {line} of 3", ctx.id());
    }
    Ok(json!("ok"))
}

async fn stderr(_ctx: TaskContext, input: Value) -> Result<Value, HandlerError> {
    let hex = input
        .get("hex")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_input("`hex` must be a string of hex digits"))?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad_input("`hex` must be a string of hex digits"))?;
    let repeat = number(&input, "repeat", Some(1))?;
    tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        for _ in 0..repeat {
            std::io::Write::write_all(&mut err, &bytes)
                .map_err(|e| HandlerError::fatal(format!("cannot write stderr: {e}")))?;
        }
        Ok(json!("ok"))
    })
    .await?
}

/// A non-negative integer field, or `default` when absent.
fn number(input: &Value, field: &str, default: Option<u64>) -> Result<u64, HandlerError> {
    match input.get(field) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| bad_input(&format!("`{field}` is required")))
        }
        Some(value) => value
            .as_u64()
            .ok_or_else(|| bad_input(&format!("`{field}` must be a non-negative integer"))),
    }
}

fn bad_input(message: &str) -> HandlerError {
    HandlerError::fatal(message).with_kind("bad_input")
}

fn cancelled() -> HandlerError {
    HandlerError::fatal("cancelled by the manager").with_kind("cancelled")
}
