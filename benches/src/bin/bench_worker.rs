//! The worker the benches drive, written with `worker-sdk`.
//!
//! | task type | does |
//! |---|---|
//! | `echo` | returns its payload (MessagePack bin) unchanged, a `serde_bytes::ByteBuf` in and out: a large one is neither copied in nor out (`pool-bench tput`, `lat`, `big`) |
//! | `echo_bytes` | the same, typed as `bytes::Bytes` in and out (`BIG_TASK=echo_bytes pool-bench big`) |
//! | `echo_raw` | the same with a raw handler (bytes in, bytes out, no serde; `BIG_TASK=echo_raw pool-bench big`) |
//! | `spin` | runs `benches::spin` for the payload's number of iterations (a MessagePack integer) and returns its sum: CPU-bound work (`pool-bench cpu`) |
//! | `block` | waits until cancelled (keeps its worker busy, for the memory bench) |

use std::process::ExitCode;

use bytes::Bytes;
use serde_bytes::ByteBuf;
use worker_sdk::{HandlerError, TaskContext, Worker};

fn main() -> ExitCode {
    Worker::new()
        .handle("echo", |_ctx: TaskContext, payload: ByteBuf| async move {
            Ok::<_, HandlerError>(payload)
        })
        .handle(
            "echo_bytes",
            |_ctx: TaskContext, payload: Bytes| async move { Ok::<_, HandlerError>(payload) },
        )
        .handle_raw("echo_raw", |_ctx: TaskContext, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        })
        .handle("spin", |_ctx: TaskContext, iterations: u64| async move {
            Ok::<_, HandlerError>(benches::spin(iterations))
        })
        .handle("block", |ctx: TaskContext, _payload: ByteBuf| async move {
            ctx.cancelled().await;
            Err::<ByteBuf, _>(HandlerError::fatal("cancelled"))
        })
        .run()
}
