//! A task that finishes in its first poll hands its cancellation signal to a later
//! task: never while its context is still held, and never fired.

mod common;

use std::sync::{Arc, Mutex};

use common::{error_of, Peer, Reply, NO_HEARTBEAT};
use pool_core::protocol::ToWorker;
use serde_json::{json, Value};
use worker_sdk::{HandlerError, Stopped, TaskContext, Worker};

/// `keep` stores its context and finishes at once; `cancel_self` fires its own
/// token and fails at once; `fail` fails at once; `until_cancelled` waits for a
/// cancel.
fn worker(kept: Arc<Mutex<Vec<TaskContext>>>) -> Worker {
    Worker::new()
        .handle("keep", move |ctx: TaskContext, v: Value| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock()
                    .map_err(|_| HandlerError::fatal("poisoned"))?
                    .push(ctx);
                Ok::<_, HandlerError>(v)
            }
        })
        .handle("cancel_self", |ctx: TaskContext, _: Value| async move {
            ctx.cancellation_token().cancel();
            Err::<Value, _>(HandlerError::retryable("gave up"))
        })
        .handle("fail", |ctx: TaskContext, _: Value| async move {
            assert!(!ctx.is_cancelled(), "a fresh task starts uncancelled");
            Err::<Value, _>(HandlerError::retryable("try again"))
        })
        .handle("until_cancelled", |ctx: TaskContext, _: Value| async move {
            ctx.cancelled().await;
            Err::<Value, _>(HandlerError::retryable("stopped"))
        })
}

async fn stop(mut peer: Peer) {
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn a_context_kept_after_its_task_is_not_cancelled_with_a_later_task() {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut peer = Peer::ready(worker(Arc::clone(&kept)), NO_HEARTBEAT).await;
    peer.task(1, "keep", &json!("kept")).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!("kept")
        }
    );
    peer.task(2, "until_cancelled", &json!({})).await;
    peer.send(&ToWorker::Cancel { id: 2 }).await;
    assert_eq!(error_of(&peer.reply().await, 2), ("cancelled", false));
    let kept = kept.lock().expect("lock").clone();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].id(), 1);
    assert!(!kept[0].is_cancelled());
    assert!(!kept[0].cancellation_token().is_cancelled());
    stop(peer).await;
}

#[tokio::test]
async fn a_task_after_one_that_fired_its_own_token_starts_uncancelled() {
    let mut peer = Peer::ready(worker(Arc::default()), NO_HEARTBEAT).await;
    peer.task(1, "cancel_self", &json!({})).await;
    // An error after the task's token fired is reported as `cancelled`.
    assert_eq!(error_of(&peer.reply().await, 1), ("cancelled", false));
    peer.task(2, "fail", &json!({})).await;
    assert_eq!(error_of(&peer.reply().await, 2), ("handler", true));
    stop(peer).await;
}
