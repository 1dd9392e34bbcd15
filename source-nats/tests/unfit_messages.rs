//! Task ids a NATS header cannot carry, repeats in one call, and a message the
//! client cannot read, against a real `nats-server -js` (started per test;
//! the test fails, saying how to install it, when the binary is missing).

mod common;

use std::time::Duration;

use common::{claim_n, config, ok, publish_raw, task};
use source_nats::test_server::NatsServer;
use source_nats::NatsSource;
use task_source::{now_ms, Admission, TaskSource, TaskState};

/// A line break in an id would end the message's header early: the server
/// would read another id, and the client reading it would drop its
/// connection. Such ids are refused, naming why; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_a_header_cannot_carry_is_refused_and_the_rest_are_taken() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let admitted = source
        .accept(vec![task("a\nb", 50), task("d\r\n1", 50), task("fine", 50)])
        .await
        .unwrap();
    for refused in &admitted[..2] {
        assert!(
            matches!(refused, Admission::Refused(why) if why.contains("invalid_input: the id") && why.contains("control character")),
            "{admitted:?}"
        );
    }
    assert_eq!(admitted[2], Admission::Accepted);
    // `d\r\n2` would have been read as a repeat of `d` before.
    assert!(matches!(
        &source.accept(vec![task("d\r\n2", 50)]).await.unwrap()[0],
        Admission::Refused(_)
    ));
    let claimed = claim_n(&source, 1).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task.id, "fine");
    assert!(source.claim(10, now_ms()).await.unwrap().is_empty());
    source
        .settle(vec![ok("fine", claimed[0].attempt)])
        .await
        .unwrap();
    assert_eq!(source.unsettled().await.unwrap(), 0);
}

/// A repeat of an id in one call is answered as its first copy was: refused
/// with it, not "queued".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_of_a_refused_task_in_one_call_is_refused_with_it() {
    const MAX: usize = 8 * 1024;
    let server = NatsServer::start_with_max_payload(MAX);
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let mut big = task("big", 50);
    big.payload = format!("\"{}\"", "x".repeat(MAX));
    let admitted = source.accept(vec![big, task("big", 50)]).await.unwrap();
    for answer in &admitted {
        assert!(
            matches!(answer, Admission::Refused(why) if why.contains("too_large")),
            "{admitted:?}"
        );
    }
    let admitted = source
        .accept(vec![task("twice", 50), task("twice", 50)])
        .await
        .unwrap();
    assert_eq!(
        admitted,
        vec![Admission::Accepted, Admission::Known(TaskState::Queued)]
    );
}

/// A body another client published with an id its dead letter could not
/// carry is dead-lettered as invalid (under the message's own id), not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_body_whose_id_a_header_cannot_carry_is_dead_lettered() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let body = serde_json::json!({"id": "x\ny", "type": "echo", "payload": 1});
    publish_raw(&server, "outside-1", body.to_string()).await;
    source.accept(vec![task("after", 50)]).await.unwrap();
    let claimed = claim_n(&source, 1).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].task.id, "after");
    let record = source.get(vec!["outside-1".into()]).await.unwrap()[0]
        .clone()
        .expect("the invalid message's line");
    assert_eq!(record.state, TaskState::DeadLetter);
    let error = record.error.expect("its error");
    assert_eq!(error.kind, "invalid_input");
    assert!(error.message.contains("control character"), "{error:?}");
}

/// A message whose header the client cannot read drops the client's
/// connection as it is delivered, and the fetch's end with it: the claim
/// gives up on that fetch instead of waiting for ever, and the next claims
/// take the tasks behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_whose_end_is_lost_with_the_connection_does_not_hold_claims_for_ever() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 30_000)).await.unwrap();
    let body = serde_json::json!({"id": "broken", "type": "echo"});
    publish_raw(&server, "broken\nheader", body.to_string()).await;
    source.accept(vec![task("behind", 50)]).await.unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(25), claim_n(&source, 1))
        .await
        .expect("claims end although a fetch lost its end");
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.task.id.as_str())
            .collect::<Vec<_>>(),
        ["behind"]
    );
}
