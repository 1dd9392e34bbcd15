//! A worker whose handler prints to stdout, to show that the SDK keeps the protocol
//! stream intact: the `shout` handler's `println!` ends up on stderr.
//!
//! Its `runtime` handler answers which tokio runtime it runs on (`flavor` and
//! `threads`); `NOISY_WORKER_THREADS=n` passes `n` to `Worker::threads`. `nap`
//! answers after waiting the number of milliseconds it is given; `later` answers
//! at once and leaves a tokio task behind that creates the file it names a
//! moment later.
//!
//! Run it under a cortex-pool manager (it reads the link from the environment);
//! `worker-sdk`'s `child_process` tests drive it directly.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::runtime::{Handle, RuntimeFlavor};
use worker_sdk::{HandlerError, TaskContext, Worker};

fn main() -> ExitCode {
    let threads = match std::env::var("NOISY_WORKER_THREADS") {
        Ok(n) => match n.parse() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("NOISY_WORKER_THREADS={n:?}: {e}");
                return ExitCode::from(1);
            }
        },
        Err(_) => 1,
    };
    Worker::new()
        .threads(threads)
        .handle("echo", |_ctx: TaskContext, value: Value| async move {
            Ok::<_, HandlerError>(value)
        })
        .handle("shout", |ctx: TaskContext, value: Value| async move {
            // On purpose: this is the mistake the SDK protects against.
            println!(
                "task {} says: {value} (this line must not reach the manager)",
                ctx.id()
            );
            Ok::<_, HandlerError>(value)
        })
        .handle("nap", |_ctx: TaskContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HandlerError>(ms)
        })
        .handle("later", |_ctx: TaskContext, path: String| async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Err(e) = std::fs::write(&path, b"done") {
                    eprintln!("later: cannot write {path}: {e}");
                }
            });
            Ok::<_, HandlerError>(())
        })
        .handle("runtime", |_ctx: TaskContext, _: Value| async move {
            let runtime = Handle::current();
            let flavor = match runtime.runtime_flavor() {
                RuntimeFlavor::CurrentThread => "current_thread",
                RuntimeFlavor::MultiThread => "multi_thread",
                _ => "other",
            };
            let threads = runtime.metrics().num_workers();
            Ok::<_, HandlerError>(json!({ "flavor": flavor, "threads": threads }))
        })
        .run()
}
