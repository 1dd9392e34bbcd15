//! `hello.concurrency`: at most that many tasks run at once; the others wait and
//! start in arrival order; a cancel of a waiting task is answered at once.

mod common;

use common::{error_of, Gate, Peer, Reply};
use pool_core::protocol::ToWorker;
use serde_json::json;
use worker_sdk::{ServeError, Stopped};

fn result(id: u64, value: serde_json::Value) -> Reply {
    Reply::Result { id, value }
}

/// The error reply's message, for tasks answered without running.
fn message_of(reply: &Reply) -> &str {
    match reply {
        Reply::Error { message, .. } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn stop(mut peer: Peer) {
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn with_concurrency_one_a_second_task_waits_and_its_cancel_is_answered_at_once() {
    let gate = Gate::default();
    let mut peer = Peer::ready_with_concurrency(common::test_worker(gate.clone()), 1).await;
    peer.task(1, "gated", &json!("first")).await;
    peer.task(2, "echo", &json!("waits")).await;
    // Had task 2 run, it would have answered with its result at once: it waits.
    peer.send(&ToWorker::Cancel { id: 2 }).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 2), ("cancelled", false));
    assert!(
        message_of(&reply).contains("before it started"),
        "{reply:?}"
    );
    gate.open();
    assert_eq!(peer.reply().await, result(1, json!("first")));
    stop(peer).await;
}

#[tokio::test]
async fn waiting_tasks_start_in_arrival_order_as_slots_free_up() {
    let gate = Gate::default();
    let mut peer = Peer::ready_with_concurrency(common::test_worker(gate.clone()), 1).await;
    peer.task(1, "gated", &json!(1)).await;
    peer.task(2, "echo", &json!(2)).await;
    peer.task(3, "gated", &json!(3)).await;
    for id in 4..=8 {
        peer.task(id, "echo", &json!(id)).await;
    }
    gate.open();
    assert_eq!(peer.reply().await, result(1, json!(1)));
    assert_eq!(peer.reply().await, result(2, json!(2)));
    gate.open();
    for id in 3..=8 {
        assert_eq!(peer.reply().await, result(id, json!(id)));
    }
    stop(peer).await;
}

#[tokio::test]
async fn with_concurrency_two_two_tasks_run_and_a_third_waits() {
    let gate = Gate::default();
    let mut peer = Peer::ready_with_concurrency(common::test_worker(gate.clone()), 2).await;
    peer.task(1, "gated", &json!("one")).await;
    peer.task(2, "echo", &json!("beside one")).await;
    assert_eq!(peer.reply().await, result(2, json!("beside one")));
    peer.task(3, "gated", &json!("three")).await;
    peer.task(4, "echo", &json!("waits")).await;
    peer.send(&ToWorker::Cancel { id: 4 }).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 4), ("cancelled", false));
    assert!(
        message_of(&reply).contains("before it started"),
        "{reply:?}"
    );
    gate.open();
    gate.open();
    let mut ids = [peer.reply().await, peer.reply().await].map(|r| match r {
        Reply::Result { id, .. } => id,
        other => panic!("expected a result, got {other:?}"),
    });
    ids.sort_unstable();
    assert_eq!(ids, [1, 3]);
    stop(peer).await;
}

#[tokio::test]
async fn cancelling_the_running_task_starts_the_next_one() {
    let mut peer = Peer::ready_with_concurrency(common::test_worker(Gate::default()), 1).await;
    peer.task(1, "until_cancelled", &json!({})).await;
    peer.task(2, "echo", &json!("next")).await;
    peer.send(&ToWorker::Cancel { id: 1 }).await;
    assert_eq!(error_of(&peer.reply().await, 1), ("cancelled", false));
    assert_eq!(peer.reply().await, result(2, json!("next")));
    stop(peer).await;
}

#[tokio::test]
async fn graceful_shutdown_runs_the_waiting_tasks_too() {
    let gate = Gate::default();
    let mut peer = Peer::ready_with_concurrency(common::test_worker(gate.clone()), 1).await;
    peer.task(1, "gated", &json!("running")).await;
    peer.task(2, "echo", &json!("waiting")).await;
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    gate.open();
    assert_eq!(peer.reply().await, result(1, json!("running")));
    assert_eq!(peer.reply().await, result(2, json!("waiting")));
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn a_concurrency_of_zero_is_a_protocol_error() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.hello_with_concurrency(0).await;
    match peer.finish().await {
        Err(ServeError::Protocol(e)) => assert!(e.to_string().contains("concurrency"), "{e}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// `concurrency: nil` is malformed like `0` (PROTOCOL.md), not "no limit".
#[tokio::test]
async fn a_nil_concurrency_is_a_protocol_error() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.send_json(&json!({
        "type": "hello",
        "version": pool_core::protocol::PROTOCOL_VERSION,
        "worker_id": "worker-7",
        "heartbeat_ms": 0,
        "max_frame": 1 << 20,
        "concurrency": null,
    }))
    .await;
    match peer.finish().await {
        Err(ServeError::Protocol(e)) => assert!(e.to_string().contains("nil"), "{e}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}
