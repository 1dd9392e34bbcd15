//! What the source holds between a claim and its settlement, against a real
//! `nats-server -js`: attempts given back, settlements slower than
//! `ack_wait`, and two messages of one task id.

mod common;

use std::time::{Duration, Instant};

use common::{claim_n, config, ok, task};
use futures_util::StreamExt;
use source_nats::test_server::NatsServer;
use source_nats::NatsSource;
use task_source::{now_ms, ErrorInfo, Outcome, Settlement, TaskSource};

/// `id`'s attempt `attempt` ended as `outcome`.
fn ended(id: &str, attempt: u32, outcome: Outcome) -> Settlement {
    Settlement {
        id: id.into(),
        attempt,
        outcome,
    }
}

/// A retryable failure, due again now.
fn failed() -> Outcome {
    Outcome::Retry {
        due_ms: now_ms(),
        error: ErrorInfo {
            kind: "handler".into(),
            message: "flaky".into(),
        },
    }
}

/// Claims task `id` (the only one queued) and returns its attempt number.
async fn claim_attempt(source: &NatsSource, id: &str) -> u32 {
    let claimed = claim_n(source, 1).await;
    assert_eq!(claimed.len(), 1, "{id} did not come back");
    assert_eq!(claimed[0].task.id, id);
    claimed[0].attempt
}

/// The keys of the attempts bucket (given-back counts), sorted.
async fn given_back_keys(server: &NatsServer, source: &NatsSource) -> Vec<String> {
    let client = async_nats::connect(server.url()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value(source.config().attempts_bucket.as_str())
        .await
        .unwrap();
    let mut keys: Vec<String> = bucket
        .keys()
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    keys.sort();
    keys
}

/// Claims the pool gave back unstarted keep their attempt however often it
/// happens (a rolling restart withdraws the same task again and again), and
/// so does an attempt the pool's stop interrupted; real failures use one each.
/// Every one of them is a delivery for the server. The count of deliveries
/// given back lives in the attempts bucket under the message's stream
/// sequence until the message is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_back_claims_keep_their_attempt_and_real_failures_use_one() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    source.accept(vec![task("g", 50)]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(claim_attempt(&source, "g").await, 1);
        let back = ended("g", 1, Outcome::NotStarted);
        source.settle(vec![back]).await.unwrap();
    }
    assert_eq!(given_back_keys(&server, &source).await, ["CORTEX_TASKS.1"]);
    for attempt in 1..=2 {
        assert_eq!(claim_attempt(&source, "g").await, attempt);
        source
            .settle(vec![ended("g", attempt, failed())])
            .await
            .unwrap();
    }
    assert_eq!(claim_attempt(&source, "g").await, 3);
    let interrupted = ended("g", 3, Outcome::Interrupted);
    source.settle(vec![interrupted]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(claim_attempt(&source, "g").await, 3);
        let back = ended("g", 3, Outcome::NotStarted);
        source.settle(vec![back]).await.unwrap();
    }
    assert_eq!(claim_attempt(&source, "g").await, 3);
    source.settle(vec![ok("g", 3)]).await.unwrap();
    assert_eq!(
        source.queue_stats().await.unwrap().redeliveries,
        9,
        "ten deliveries of one message"
    );
    assert_eq!(source.unsettled().await.unwrap(), 0);
    let left = given_back_keys(&server, &source).await;
    assert!(left.is_empty(), "the count outlived its message: {left:?}");
}

/// A settlement whose result put takes longer than `ack_wait` keeps its
/// message: in-progress acks go on until the final ack, so the finished
/// task is not redelivered and run again meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_slower_than_ack_wait_keeps_its_message_until_acked() {
    let server = NatsServer::start();
    // A results bucket that answers late: its stream takes none of the
    // bucket's subjects, and the test answers each put in its place.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let bucket = "answered-late";
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec!["$KV.parked.>".into()],
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut puts = client.subscribe(format!("$KV.{bucket}.>")).await.unwrap();
    let mut acks = client.subscribe("$JS.ACK.>").await.unwrap();
    client.flush().await.unwrap();
    let mut config = config(&server, 400);
    config.results_bucket = bucket.into();
    let runner = NatsSource::connect(config.clone()).await.unwrap();
    let other = NatsSource::connect(config).await.unwrap();
    runner.accept(vec![task("slow", 50)]).await.unwrap();
    let attempt = claim_attempt(&runner, "slow").await;
    let settling = tokio::spawn({
        let runner = runner.clone();
        async move { runner.settle(vec![ok("slow", attempt)]).await }
    });
    let put = tokio::time::timeout(Duration::from_secs(10), puts.next())
        .await
        .expect("the settlement puts its line")
        .expect("the subscription is open");
    // Three ack_waits pass while the put waits for its answer.
    let until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < until {
        assert!(
            other.claim(10, now_ms()).await.unwrap().is_empty(),
            "redelivered while its settlement was in flight"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = put.reply.expect("a put asks for the stream's ack");
    let stored = format!(r#"{{"stream":"KV_{bucket}","seq":1}}"#);
    client.publish(reply, stored.into()).await.unwrap();
    settling.await.unwrap().unwrap();
    assert_eq!(runner.unsettled().await.unwrap(), 0, "acked");
    // What the server was told meanwhile: in progress, then the ack.
    let mut told = Vec::new();
    while told.last().is_none_or(|a| a != "+ACK") {
        let ack = tokio::time::timeout(Duration::from_secs(10), acks.next())
            .await
            .expect("the final ack")
            .expect("the subscription is open");
        told.push(String::from_utf8_lossy(&ack.payload).into_owned());
    }
    let progress = told.iter().filter(|a| *a == "+WPI").count();
    assert!(progress >= 2, "{told:?}");
    assert_eq!(progress + 1, told.len(), "{told:?}");
}

/// Two messages of one task id (published twice under different message
/// ids) delivered at once share its attempt number: both are held, kept
/// alive and settled, neither in place of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_of_one_task_id_and_attempt_are_both_held_and_settled() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = source_nats::message::subject(
        source_nats::message::Band::Normal,
        &source.config().subject_prefix,
    );
    for msg_id in ["twice-1", "twice-2"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        let body = r#"{"id":"twice","type":"echo"}"#;
        js.publish_with_headers(subject.clone(), headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let claimed = claim_n(&source, 2).await;
    let attempts: Vec<(&str, u32)> = claimed
        .iter()
        .map(|c| (c.task.id.as_str(), c.attempt))
        .collect();
    assert_eq!(attempts, [("twice", 1), ("twice", 1)]);
    assert_eq!(source.held_count(), 2);
    source
        .settle(vec![ok("twice", 1), ok("twice", 1)])
        .await
        .unwrap();
    assert_eq!(source.held_count(), 0);
    assert_eq!(source.unsettled().await.unwrap(), 0, "both acked");
}
