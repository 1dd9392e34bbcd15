//! A worker whose handler prints to stdout, to show that the SDK keeps the protocol
//! stream intact: the `shout` handler's `println!` ends up on stderr.
//!
//! Run it under a cortex-pool manager (it reads the link from the environment);
//! `worker-sdk`'s `child_process` tests drive it directly.

use std::process::ExitCode;

use serde_json::Value;
use worker_sdk::{HandlerError, TaskContext, Worker};

fn main() -> ExitCode {
    Worker::new()
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
        .run()
}
