//! A daemon whose pool's actor died says so in `status` (health `failed` and
//! the reason, no phantom workers) and refuses new tasks, naming why.

use std::time::Duration;

use pool_core::testing::panic_actor;
use tokio::sync::mpsc;

use super::durable::api;
use super::protocol::Reply;
use super::test_daemon::daemon;

#[tokio::test]
async fn status_reveals_a_dead_pool_actor_and_submits_are_refused() {
    let daemon = daemon().await;
    let before = super::server::status(&daemon).await;
    assert_eq!(before["metrics"]["health"]["status"], "healthy");
    let workers = daemon.pool.metrics().workers.total;
    assert!(workers > 0);
    assert_eq!(before["metrics"]["workers"]["ready"], workers);

    panic_actor(&daemon.pool);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while daemon.pool.failure().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "failure noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let after = super::server::status(&daemon).await;
    let health = &after["metrics"]["health"];
    assert_eq!(health["status"], "failed", "{after}");
    let reason = health["failure"].as_str().expect("a reason");
    assert!(reason.contains("panicked"), "{reason}");
    assert_eq!(
        after["metrics"]["workers"]["total"], 0,
        "no phantom workers"
    );
    assert_eq!(after["metrics"]["workers"]["ready"], 0);
    assert_eq!(after["workers"], serde_json::json!([]));

    // As maps (an older client) and as text.
    for text in [false, true] {
        let (tx, mut rx) = mpsc::channel(16);
        let line = r#"{"id":"t1","type":"echo","payload":1}"#.to_owned();
        api::submit(vec![line], false, 1, text, &daemon, &tx)
            .await
            .expect("answered");
        drop(tx);
        let lines: Vec<serde_json::Value> = match rx.recv().await {
            Some(Reply::Lines { lines }) if !text => lines,
            Some(Reply::LinesText { lines }) if text => lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            other => panic!("a line per task, text {text}: {other:?}"),
        };
        assert_eq!(lines[0]["status"], "refused", "{lines:?}");
        let error = lines[0]["error"].as_str().unwrap();
        assert!(
            error.starts_with("pool_failed: the pool stopped working (the pool's actor panicked"),
            "{error}"
        );
        assert!(matches!(
            rx.recv().await,
            Some(Reply::Done {
                accepted: 0,
                refused: 1
            })
        ));
    }
}
