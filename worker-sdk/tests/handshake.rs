//! The handshake: hello → ready, version mismatch, a missing hello, a bad frame.

mod common;

use common::{Gate, Peer, Reply, MAX_FRAME, NO_HEARTBEAT};
use pool_core::protocol::{ToWorker, PROTOCOL_VERSION};
use worker_sdk::{ServeError, Stopped};

#[tokio::test]
async fn hello_is_answered_with_ready_listing_the_task_types() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.hello(PROTOCOL_VERSION, NO_HEARTBEAT, MAX_FRAME as u32)
        .await;
    let Some(Reply::Ready {
        version,
        task_types,
    }) = peer.next().await
    else {
        panic!("the first frame is ready");
    };
    assert_eq!(version, PROTOCOL_VERSION);
    let mut expected = [
        "add",
        "attempt",
        "big",
        "block",
        "bytes",
        "echo",
        "fail",
        "gated",
        "panic",
        "until_cancelled",
    ];
    expected.sort_unstable();
    assert_eq!(task_types, expected);
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn another_protocol_version_is_refused_without_a_reply() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.hello(PROTOCOL_VERSION + 1, NO_HEARTBEAT, MAX_FRAME as u32)
        .await;
    let err = peer.finish().await.expect_err("a version mismatch");
    assert!(
        matches!(err, ServeError::VersionMismatch { manager, worker }
            if manager == PROTOCOL_VERSION + 1 && worker == PROTOCOL_VERSION),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("version"), "{err}");
}

/// A manager of another version may have changed any key's type: the
/// version is compared first, so the mismatch is what the worker says.
#[tokio::test]
async fn another_version_is_named_even_when_other_keys_changed_type() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.send_json(&serde_json::json!({
        "type": "hello",
        "version": PROTOCOL_VERSION + 1,
        "worker_id": "worker-7",
        "heartbeat_ms": 0,
        "max_frame": 1u64 << 40,
    }))
    .await;
    let err = peer.finish().await.expect_err("a version mismatch");
    assert!(
        matches!(err, ServeError::VersionMismatch { manager, .. } if manager == PROTOCOL_VERSION + 1),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_task_before_hello_is_a_protocol_error() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.task(1, "echo", &serde_json::json!("x".repeat(60_000)))
        .await;
    let err = peer.finish().await.expect_err("no hello first");
    assert!(matches!(err, ServeError::Protocol(_)), "{err:?}");
    // It names the message, not its fields: the payload stays out of the log.
    let said = err.to_string();
    assert!(said.contains("task") && said.len() < 200, "{said}");
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test]
async fn a_malformed_frame_is_a_protocol_error() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    // A well-framed body that is not a message: the MessagePack integer 7.
    peer.send_raw(&[0, 0, 0, 1, 7]).await;
    let err = peer.finish().await.expect_err("a malformed frame");
    assert!(matches!(err, ServeError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn end_of_input_before_hello_stops_quietly() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.close_input();
    assert_eq!(
        peer.finish().await.expect("clean stop"),
        Stopped::Disconnected
    );
}
