//! Cancellation, shutdown, end of input and heartbeats.

mod common;

use common::{error_of, Gate, Peer, Reply, NO_HEARTBEAT};
use pool_core::protocol::ToWorker;
use serde_json::json;
use worker_sdk::Stopped;

#[tokio::test]
async fn cancel_ends_a_cooperative_task_with_a_cancelled_error() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.task(1, "until_cancelled", &json!({})).await;
    peer.send(&ToWorker::Cancel { id: 1 }).await;
    assert_eq!(error_of(&peer.reply().await, 1), ("cancelled", false));
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn a_handler_that_finishes_despite_cancel_sends_its_result() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.task(1, "until_cancelled", &json!({ "finish": true }))
        .await;
    peer.send(&ToWorker::Cancel { id: 1 }).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!("finished anyway")
        }
    );
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn cancel_for_an_unknown_task_is_ignored() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.send(&ToWorker::Cancel { id: 99 }).await;
    peer.echoes(1, "after").await;
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

/// A message of a type the worker does not know is ignored (PROTOCOL.md: the
/// protocol grows by new messages); a known type that is malformed still ends
/// the worker.
#[tokio::test]
async fn a_message_of_an_unknown_type_is_ignored() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.send_json(&json!({"type": "ping", "at": 1})).await;
    peer.echoes(1, "after").await;
    peer.send_json(&json!({"type": "cancel"})).await;
    assert!(
        peer.finish().await.is_err(),
        "a cancel without an id is malformed"
    );
}

/// A body that is no map is no message (PROTOCOL.md: every body is a map):
/// the worker ends with a protocol error instead of skipping it as a message
/// of an unknown type (serde reads an array as a struct's fields in order).
#[tokio::test]
async fn a_body_that_is_no_map_ends_the_worker() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.send_json(&json!(["foo"])).await;
    let ended = peer.finish().await;
    assert!(
        matches!(&ended, Err(e) if e.to_string().contains("must be a MessagePack map")),
        "{ended:?}"
    );
}

/// Opens `gate`, and expects task 1's result ("in flight") and then a clean
/// stop: the end of a graceful drain.
async fn release_the_task_in_flight(mut peer: Peer, gate: &Gate) {
    gate.open();
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!("in flight")
        }
    );
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_tasks_first() {
    let gate = Gate::default();
    let mut peer = Peer::ready(common::test_worker(gate.clone()), NO_HEARTBEAT).await;
    peer.task(1, "gated", &json!("in flight")).await;
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    // A task after the shutdown is refused (retryable elsewhere), proving the shutdown
    // was seen while task 1 still runs.
    peer.task(2, "echo", &json!("late")).await;
    assert_eq!(error_of(&peer.reply().await, 2), ("shutting_down", true));
    assert!(!peer.worker.is_finished());
    release_the_task_in_flight(peer, &gate).await;
}

#[tokio::test]
async fn a_task_read_with_the_shutdown_is_refused_before_the_worker_stops() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    // Both frames are in the worker's input before it runs again: one read
    // takes them together, and nothing is running when the shutdown is seen.
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    peer.task(2, "echo", &json!("late")).await;
    assert_eq!(error_of(&peer.reply().await, 2), ("shutting_down", true));
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn immediate_shutdown_does_not_wait_for_tasks() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.task(1, "gated", &json!("never released")).await;
    peer.send(&ToWorker::Shutdown { graceful: false }).await;
    // `finish` asserts that nothing but heartbeats follows.
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn end_of_input_stops_promptly_even_with_a_task_in_flight() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await;
    peer.task(1, "gated", &json!("never released")).await;
    peer.close_input();
    assert_eq!(
        peer.finish().await.expect("clean stop"),
        Stopped::Disconnected
    );
}

#[tokio::test]
async fn end_of_input_after_a_graceful_shutdown_lets_the_tasks_in_flight_reply() {
    let gate = Gate::default();
    let mut peer = Peer::ready(common::test_worker(gate.clone()), NO_HEARTBEAT).await;
    peer.task(1, "gated", &json!("in flight")).await;
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    // As the manager does: the input closes right after the shutdown.
    peer.close_input();
    // The worker runs on this test's one thread: these yields let it read the
    // end of its input before the task is released. One that stopped there
    // would be finished now, its task dropped.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!peer.worker.is_finished(), "the drain goes on");
    release_the_task_in_flight(peer, &gate).await;
}

#[tokio::test]
async fn a_worker_whose_output_breaks_stops_while_its_input_stays_open() {
    // Heartbeats every 10 ms: the first one after the reader is gone fails,
    // on the heartbeat thread, while the dispatcher waits for input.
    let peer = Peer::ready(common::test_worker(Gate::default()), 10).await;
    assert_eq!(
        peer.finish_unread().await.expect("clean stop"),
        Stopped::Disconnected
    );
}

#[tokio::test]
async fn heartbeats_arrive_with_the_worker_counters() {
    let mut peer = Peer::ready(common::test_worker(Gate::default()), 10).await;
    peer.task(1, "echo", &json!(1)).await;
    let mut saw_result = false;
    // Heartbeats keep coming; once the result is out, one reports the finished task.
    loop {
        match peer.next().await.expect("the worker is still running") {
            Reply::Result { id: 1, .. } => saw_result = true,
            Reply::Heartbeat(beat) if saw_result && beat.tasks_done == 1 => {
                assert_eq!(beat.in_flight, 0);
                assert!(beat.rss_bytes > 0, "{beat:?}");
                break;
            }
            Reply::Heartbeat(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_while_a_handler_blocks_its_thread() {
    let gate = Gate::default();
    let mut peer = Peer::ready(common::test_worker(gate.clone()), 10).await;
    peer.task(1, "block", &json!(null)).await;
    // The handler holds a runtime thread until released; a heartbeat reporting it as
    // in flight must still arrive.
    loop {
        match peer.next().await.expect("the worker is still running") {
            Reply::Heartbeat(beat) if beat.in_flight == 1 => break,
            Reply::Heartbeat(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    gate.unblock();
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!("unblocked")
        }
    );
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

/// A heartbeat's `in_flight` counts the tasks received and not yet answered,
/// those waiting for a slot included (`docs/PROTOCOL.md`), as the Python and
/// Node SDKs count them; it used to count only the running ones.
#[tokio::test]
async fn a_heartbeats_in_flight_counts_the_tasks_waiting_for_a_slot() {
    let mut peer = Peer::start(common::test_worker(Gate::default()));
    peer.send_raw(&common::hello_frame(1, 10)).await;
    assert!(matches!(peer.next().await, Some(Reply::Ready { .. })));
    for id in 1..=4 {
        peer.task(id, "until_cancelled", &json!(null)).await;
    }
    // Its answer to the cancel of a waiting task says every task before it was read.
    peer.send(&ToWorker::Cancel { id: 4 }).await;
    assert_eq!(error_of(&peer.reply().await, 4).0, "cancelled");
    loop {
        match peer.next().await.expect("the worker is still running") {
            // Counted before the cancel, written after its answer.
            Reply::Heartbeat(beat) if beat.in_flight == 4 => {}
            Reply::Heartbeat(beat) => {
                assert_eq!(beat.in_flight, 3, "one running, two waiting");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for id in 1..=3 {
        peer.send(&ToWorker::Cancel { id }).await;
        assert!(matches!(peer.reply().await, Reply::Error { .. }));
    }
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}
