//! Shared by the examples: the demo worker each example's own executable becomes when
//! started with `--worker`, so running an example needs no other binary.
//!
//! The worker's task types mirror the `cortex-pool worker` demo worker:
//!
//! | task type | payload | does |
//! |---|---|---|
//! | `echo` | anything | returns the payload unchanged |
//! | `sleep` | `{"ms": N}` | sleeps N ms (stops early when cancelled), returns `"ok"` |
//! | `fail` | `{"times": N}` | fails (retryable) while the attempt is ≤ N, then returns the attempt |
//! | `crash` | `{"code": N}` | exits the whole process with code N mid-task |
//! | `hang` | anything | never replies unless cancelled; heartbeats keep flowing |
#![allow(dead_code)] // Each example uses a different part of this module.

use std::error::Error;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use cortex_pool::{Pool, PoolMetrics, WorkerCommand};
use serde_json::{json, Value};
use worker_sdk::{HandlerError, TaskContext, Worker};

/// The argument that turns an example's executable into a worker.
pub(crate) const WORKER_FLAG: &str = "--worker";

/// What an example's body returns.
pub(crate) type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// When this process was started as a worker (`EXAMPLE --worker`), serves the pool
/// until it is told to stop and returns the exit code; otherwise `None`.
pub(crate) fn serve_if_worker() -> Option<ExitCode> {
    is_worker().then(|| demo_worker().run())
}

/// Whether this process was started with [`WORKER_FLAG`].
pub(crate) fn is_worker() -> bool {
    std::env::args().nth(1).as_deref() == Some(WORKER_FLAG)
}

/// The command that starts this very executable as a worker.
pub(crate) fn worker_command() -> WorkerCommand {
    let me = std::env::current_exe().expect("the example can find its own executable");
    WorkerCommand::new(me).args([WORKER_FLAG])
}

/// An example's `main`: serve as its worker when started with [`WORKER_FLAG`],
/// else run `body` (the manager side).
pub(crate) fn main<F: Future<Output = Result>>(body: impl FnOnce() -> F) -> ExitCode {
    match serve_if_worker() {
        Some(code) => code,
        None => run(body()),
    }
}

/// Runs an example's body on a multi-threaded runtime; exit 0 when it returns `Ok`.
/// A failed assertion panics, which exits with status 101.
pub(crate) fn run(body: impl Future<Output = Result>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits until `condition` holds for the pool's metrics, checking every 20 ms, for
/// at most 10 s (then an error naming `what`).
pub(crate) async fn until(
    pool: &Pool,
    what: &str,
    condition: impl Fn(&PoolMetrics) -> bool,
) -> Result<PoolMetrics> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = pool.metrics();
        if condition(&metrics) {
            return Ok(metrics);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "timed out waiting for: {what}; last metrics: workers {}, performance {}",
                serde_json::to_string(&metrics.workers)?,
                serde_json::to_string(&metrics.performance)?
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The demo worker: `echo`, `sleep`, `fail`, `crash`, `hang`.
pub(crate) fn demo_worker() -> Worker {
    Worker::new()
        .handle("echo", |_ctx: TaskContext, payload: Value| async move {
            Ok::<_, HandlerError>(payload)
        })
        .handle("sleep", |ctx: TaskContext, input: Value| async move {
            let ms = field(&input, "ms")?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!("ok")),
                () = ctx.cancelled() => Err(cancelled()),
            }
        })
        .handle("fail", |ctx: TaskContext, input: Value| async move {
            let times = field(&input, "times")?;
            if u64::from(ctx.attempt()) <= times {
                return Err(HandlerError::retryable(format!(
                    "failing on purpose: attempt {} of {times} planned failures",
                    ctx.attempt()
                )));
            }
            Ok(json!({ "attempt": ctx.attempt() }))
        })
        .handle("crash", crash)
        .handle("hang", |ctx: TaskContext, _input: Value| async move {
            ctx.cancelled().await;
            Err::<Value, _>(cancelled())
        })
}

async fn crash(_ctx: TaskContext, input: Value) -> std::result::Result<Value, HandlerError> {
    let code = i32::try_from(field(&input, "code")?)
        .map_err(|_| HandlerError::fatal("`code` must fit an i32"))?;
    #[allow(clippy::exit)] // On purpose: a worker that dies mid-task.
    std::process::exit(code)
}

fn field(input: &Value, name: &str) -> std::result::Result<u64, HandlerError> {
    input.get(name).and_then(Value::as_u64).ok_or_else(|| {
        HandlerError::fatal(format!("`{name}` must be a non-negative integer"))
            .with_kind("bad_input")
    })
}

fn cancelled() -> HandlerError {
    HandlerError::fatal("cancelled by the manager").with_kind("cancelled")
}
