//! A custom worker written with `worker-sdk`, and the pool that drives it, in one
//! file: run without arguments it is the manager; the pool starts this same
//! executable with `--worker`, and then it is the worker.
//!
//! The original's `exampleCustomWorkerScript` pointed `workerScript` at a placeholder
//! path. In a real project the worker is its own binary (any language that speaks
//! `docs/PROTOCOL.md`) and `WorkerCommand::new("path/to/worker")` names it.

use std::process::ExitCode;

use cortex_pool::ipc::StdioTransport;
use cortex_pool::{FinalStatus, Pool, PoolConfig, Task, WorkerCommand};
use serde::{Deserialize, Serialize};
use worker_sdk::{HandlerError, TaskContext, Worker};

/// The `word_count` task's input.
#[derive(Debug, Serialize, Deserialize)]
struct Text {
    text: String,
}

/// The `word_count` task's result.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counts {
    words: usize,
    lines: usize,
    longest: String,
}

// ---- The worker side ------------------------------------------------------------

/// Handlers by task type. Inputs and outputs are serde types, carried as MessagePack.
fn worker() -> Worker {
    Worker::new()
        .handle("word_count", |_ctx: TaskContext, input: Text| async move {
            if input.text.is_empty() {
                // Fatal: no retry can fix this input.
                return Err(HandlerError::fatal("empty text").with_kind("bad_input"));
            }
            let longest = input
                .text
                .split_whitespace()
                .max_by_key(|w| w.len())
                .unwrap_or_default();
            Ok(Counts {
                words: input.text.split_whitespace().count(),
                lines: input.text.lines().count(),
                longest: longest.to_owned(),
            })
        })
        .handle("shout", |ctx: TaskContext, input: String| async move {
            // The context knows the task's id, attempt, deadline and cancellation.
            eprintln!(
                "worker {}: task {} attempt {}",
                ctx.worker_id(),
                ctx.id(),
                ctx.attempt()
            );
            Ok::<_, HandlerError>(input.to_uppercase())
        })
}

// ---- The manager side -----------------------------------------------------------

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--worker") {
        // Speaks the protocol on the link the pool set up (stdin/stdout here).
        return worker().run();
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    match runtime.block_on(manager()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn manager() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let me = std::env::current_exe()?;
    let command = WorkerCommand::new(me).args(["--worker"]);
    let pool = Pool::builder(StdioTransport::new(), command)
        .config(PoolConfig {
            pool_size: 2,
            min_workers: 1,
            ..PoolConfig::default()
        })
        .start()
        .await?;

    let input = Text {
        text: "a pool of long-lived workers\nfed with tasks".into(),
    };
    let counts: Counts = pool
        .submit(Task::msgpack("word_count", &input)?)
        .await?
        .await?
        .decode()?;
    println!("{counts:?}");
    assert_eq!(
        counts,
        Counts {
            words: 8,
            lines: 2,
            longest: "long-lived".into()
        }
    );

    let loud: String = pool
        .submit(Task::msgpack("shout", "hello")?)
        .await?
        .await?
        .decode()?;
    assert_eq!(loud, "HELLO");

    // The handler's fatal error reaches the caller with its kind; no retry happened.
    let empty = Text {
        text: String::new(),
    };
    let err = pool
        .submit(Task::msgpack("word_count", &empty)?)
        .await?
        .await
        .expect_err("empty text is refused");
    println!("{err}");
    assert_eq!(
        (err.status, err.attempts, err.failure.kind()),
        (FinalStatus::Failed, 1, "bad_input")
    );

    // A payload that does not decode into the handler's input type is `bad_input` too.
    let err = pool
        .submit(Task::msgpack("word_count", &42)?)
        .await?
        .await
        .expect_err("not a Text");
    assert_eq!(err.failure.kind(), "bad_input");

    pool.shutdown().await;
    println!("custom_worker: ok");
    Ok(())
}
