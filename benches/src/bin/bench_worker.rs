//! The worker the benches drive, written with `worker-sdk`.
//!
//! | task type | does |
//! |---|---|
//! | `echo` | returns its payload (MessagePack bin) unchanged |
//! | `block` | waits until cancelled (keeps its worker busy, for the memory bench) |

use std::process::ExitCode;

use serde_bytes::ByteBuf;
use worker_sdk::{HandlerError, TaskContext, Worker};

fn main() -> ExitCode {
    Worker::new()
        .handle("echo", |_ctx: TaskContext, payload: ByteBuf| async move {
            Ok::<_, HandlerError>(payload)
        })
        .handle("block", |ctx: TaskContext, _payload: ByteBuf| async move {
            ctx.cancelled().await;
            Err::<ByteBuf, _>(HandlerError::fatal("cancelled"))
        })
        .run()
}
