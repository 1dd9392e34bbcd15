//! What the source holds between a claim and its settlement, against a real
//! `nats-server -js`: attempts given back (and what becomes of them when the
//! attempts bucket cannot be used, or its count changed), settlements slower
//! than `ack_wait`, redeliveries of messages held, and two messages of one
//! task id.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use common::{claim_n, config, ok, publish_raw, task};
use futures_util::StreamExt;
use source_nats::test_server::{told, told_until, NatsServer, Security};
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
async fn given_back_keys(bucket: &kv::Store) -> Vec<String> {
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

/// Claims task `id` `times` over, each time its first attempt, and gives
/// each claim back unstarted.
async fn give_back_unstarted(source: &NatsSource, id: &str, times: usize) {
    for _ in 0..times {
        assert_eq!(claim_attempt(source, id).await, 1);
        source
            .settle(vec![ended(id, 1, Outcome::NotStarted)])
            .await
            .unwrap();
    }
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
    give_back_unstarted(&source, "g", 3).await;
    let bucket = attempts_bucket(&server, &source).await;
    assert_eq!(
        given_back_keys(&bucket).await,
        [first_message_key(&server).await],
        "the stream, when it was made, and the message's sequence"
    );
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
    let left = given_back_keys(&bucket).await;
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
    for msg_id in ["twice-1", "twice-2"] {
        publish_raw(&server, msg_id, r#"{"id":"twice","type":"echo"}"#).await;
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

/// A raw client of `server`, as its admin when it has one.
async fn admin_client(server: &NatsServer) -> async_nats::Client {
    let options = match &server.client().admin_seed {
        Some(path) => {
            let seed = std::fs::read_to_string(path).unwrap();
            async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        }
        None => async_nats::ConnectOptions::new(),
    };
    options.connect(server.url()).await.unwrap()
}

/// The attempts bucket's key of the first message of the tasks' stream on
/// `server` (still in the stream): the stream, sequence 1, and when the
/// message was stored, in nanoseconds since the Unix epoch.
async fn first_message_key(server: &NatsServer) -> String {
    let js = async_nats::jetstream::new(admin_client(server).await);
    let stream = js.get_stream("CORTEX_TASKS").await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    format!("CORTEX_TASKS.1.{}", first.time.unix_timestamp_nanos())
}

/// A tasks' stream deleted and made again numbers its messages from 1 again,
/// while the counts of its old messages stay in the attempts bucket: a new
/// message is not charged with the deliveries an old one at the same
/// sequence gave back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_again_does_not_inherit_the_counts_of_the_old_one() {
    let server = NatsServer::start();
    let old = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    old.accept(vec![task("old", 50)]).await.unwrap();
    give_back_unstarted(&old, "old", 2).await;
    drop(old);
    let js = async_nats::jetstream::new(admin_client(&server).await);
    js.delete_stream("CORTEX_TASKS").await.unwrap();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let bucket = attempts_bucket(&server, &source).await;
    assert_eq!(
        given_back_keys(&bucket).await.len(),
        1,
        "the old count stays"
    );
    source.accept(vec![task("new", 50)]).await.unwrap();
    assert_eq!(claim_attempt(&source, "new").await, 1);
    source
        .settle(vec![ended("new", 1, failed())])
        .await
        .unwrap();
    assert_eq!(
        claim_attempt(&source, "new").await,
        2,
        "its second delivery is its second attempt"
    );
    source.settle(vec![ok("new", 2)]).await.unwrap();
}

/// The attempts bucket of `source`, read by an admin of `server`.
async fn attempts_bucket(server: &NatsServer, source: &NatsSource) -> kv::Store {
    async_nats::jetstream::new(admin_client(server).await)
        .get_key_value(source.config().attempts_bucket.as_str())
        .await
        .unwrap()
}

/// Credentials that may read what an admin made but may not write the
/// attempts bucket: a claim given back is still NAKed (its settlement does
/// not fail, and the daemon is not held up), and counts as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_the_attempts_bucket_refuses_is_nakd_and_counts_as_an_attempt() {
    let server = NatsServer::start_with(Security::Restricted);
    let mut admin = config(&server, 5_000);
    admin.credentials = server.client().admin_seed.clone();
    let admin = NatsSource::connect(admin).await.unwrap();
    let mut user = config(&server, 5_000);
    user.credentials = server.client().seed.clone();
    let source = NatsSource::connect(user).await.unwrap();
    let watcher = admin_client(&server).await;
    let mut acks = watcher.subscribe("$JS.ACK.>").await.unwrap();
    watcher.flush().await.unwrap();
    source.accept(vec![task("w", 50)]).await.unwrap();
    assert_eq!(claim_attempt(&source, "w").await, 1);

    let back = ended("w", 1, Outcome::NotStarted);
    source.settle(vec![back]).await.expect("given back");
    assert_eq!(source.held_count(), 0);
    // The source's own connection sends the NAK: waited for, not raced
    // against a marker sent on the watcher's.
    assert!(told_until(&mut acks, "-NAK")
        .await
        .contains(&"-NAK".to_owned()));
    assert_eq!(claim_attempt(&source, "w").await, 2, "counted by delivery");
    source.settle(vec![ok("w", 2)]).await.unwrap();
    assert!(given_back_keys(&attempts_bucket(&server, &admin).await)
        .await
        .is_empty());
}

/// Credentials that may not create streams, on a queue whose attempts
/// bucket is not there (made by a version without it): the source connects
/// without the bucket, and every delivery counts as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_can_neither_open_nor_make_the_attempts_bucket_connects_without() {
    let server = NatsServer::start_with(Security::Restricted);
    let mut admin = config(&server, 5_000);
    admin.credentials = server.client().admin_seed.clone();
    drop(NatsSource::connect(admin.clone()).await.unwrap());
    let js = async_nats::jetstream::new(admin_client(&server).await);
    js.delete_key_value(admin.attempts_bucket.as_str())
        .await
        .unwrap();
    let mut user = config(&server, 5_000);
    user.credentials = server.client().seed.clone();

    let source = NatsSource::connect(user).await.expect("connected");
    source.accept(vec![task("v", 50)]).await.unwrap();
    assert_eq!(claim_attempt(&source, "v").await, 1);
    let back = ended("v", 1, Outcome::NotStarted);
    source.settle(vec![back]).await.expect("given back");
    assert_eq!(claim_attempt(&source, "v").await, 2, "counted by delivery");
    source.settle(vec![ok("v", 2)]).await.unwrap();
    assert_eq!(source.unsettled().await.unwrap(), 0);
    let bucket = js.get_key_value(admin.attempts_bucket.as_str()).await;
    assert!(bucket.is_err(), "made without the right to");
}

/// A count that cannot be read at a claim (here: the bucket stops answering
/// direct reads) is not written over when that delivery is given back: the
/// stored count stays, and the delivery counts as an attempt (once too
/// often at worst, never too seldom).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_that_could_not_be_read_is_not_written_over() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    source.accept(vec![task("u", 50)]).await.unwrap();
    give_back_unstarted(&source, "u", 2).await;
    let js = async_nats::jetstream::new(admin_client(&server).await);
    let name = format!("KV_{}", source.config().attempts_bucket);
    let direct = |allow: bool| {
        let js = js.clone();
        let name = name.clone();
        async move {
            let mut stream = js.get_stream(&name).await.unwrap();
            let mut stream_config = stream.info().await.unwrap().config.clone();
            stream_config.allow_direct = allow;
            js.update_stream(stream_config).await.unwrap();
        }
    };
    direct(false).await;

    assert_eq!(
        claim_attempt(&source, "u").await,
        3,
        "every delivery counts"
    );
    let back = ended("u", 3, Outcome::NotStarted);
    source.settle(vec![back]).await.unwrap();
    let bucket = attempts_bucket(&server, &source).await;
    let count = bucket.get(first_message_key(&server).await).await.unwrap();
    assert_eq!(count.as_deref(), Some(&b"2"[..]), "written over");
    direct(true).await;
    assert_eq!(
        claim_attempt(&source, "u").await,
        2,
        "4 deliveries, 2 given back"
    );
    source.settle(vec![ok("u", 2)]).await.unwrap();
}

/// A give-back whose count changed since its claim read it (here: the
/// write of an earlier try arrived, its reply lost) is refused: nothing is
/// written again and no NAK goes; the message comes back once `ack_wait`
/// passes, at the same attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_whose_count_changed_since_the_claim_lapses_unanswered() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 400)).await.unwrap();
    let watcher = admin_client(&server).await;
    let mut acks = watcher.subscribe("$JS.ACK.>").await.unwrap();
    watcher.flush().await.unwrap();
    source.accept(vec![task("l", 50)]).await.unwrap();
    // The delivery comes after this: its redelivery, `ack_wait` after it.
    let before_claim = Instant::now();
    assert_eq!(claim_attempt(&source, "l").await, 1);
    let bucket = attempts_bucket(&server, &source).await;
    let written = bucket
        .put(first_message_key(&server).await, "1".into())
        .await
        .unwrap();

    let back = ended("l", 1, Outcome::NotStarted);
    source.settle(vec![back]).await.unwrap();
    assert_eq!(source.held_count(), 0);
    let answers = told(&watcher, &mut acks).await;
    assert!(answers.iter().all(|a| a == "+WPI"), "{answers:?}");
    let entry = bucket
        .entry(first_message_key(&server).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.revision, &entry.value[..]), (written, &b"1"[..]));
    assert_eq!(
        claim_attempt(&source, "l").await,
        1,
        "2 deliveries, 1 given back"
    );
    // A NAK, sent at any time, would have brought the message back at once:
    // it came back once `ack_wait` passed, and the server heard no NAK.
    let lapsed = before_claim.elapsed();
    assert!(lapsed >= source.ack_wait(), "back after {lapsed:?}");
    let told_since = told(&watcher, &mut acks).await;
    assert!(
        !told_since.iter().any(|a| a.starts_with("-NAK")),
        "{told_since:?}"
    );
    source.settle(vec![ok("l", 1)]).await.unwrap();
}

/// The server redelivers a message this source holds (its in-progress acks
/// did not reach it in time; here a NAK from outside) after a give-back
/// stored its count but lost its reply: the redelivery is no second claim,
/// and the claim's settlement, tried again, gives back the newest delivery,
/// counted once more, instead of answering a delivery the pool runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_of_a_held_message_is_answered_by_its_claim_not_claimed_again() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 400)).await.unwrap();
    let watcher = admin_client(&server).await;
    let mut acks = watcher.subscribe("$JS.ACK.>").await.unwrap();
    watcher.flush().await.unwrap();
    source.accept(vec![task("r", 50)]).await.unwrap();
    assert_eq!(claim_attempt(&source, "r").await, 1);
    let bucket = attempts_bucket(&server, &source).await;
    bucket
        .put(first_message_key(&server).await, "1".into())
        .await
        .unwrap();
    let progress = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), acks.next()).await;
        let ack = next.expect("an in-progress ack").expect("open");
        if &ack.payload[..] == b"+WPI" {
            break ack;
        }
    };
    watcher
        .publish(progress.subject, "-NAK".into())
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut claimed = Vec::new();
    while source.queue_stats().await.unwrap().redeliveries == 0 {
        assert!(Instant::now() < deadline, "not redelivered");
        claimed.extend(source.claim(10, now_ms()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(claimed.is_empty(), "claimed again: {claimed:?}");
    assert_eq!(source.held_count(), 1);

    let back = ended("r", 1, Outcome::NotStarted);
    source.settle(vec![back]).await.unwrap();
    let count = bucket.get(first_message_key(&server).await).await.unwrap();
    assert_eq!(count.as_deref(), Some(&b"2"[..]));
    assert_eq!(
        claim_attempt(&source, "r").await,
        1,
        "3 deliveries, 2 given back"
    );
    source.settle(vec![ok("r", 1)]).await.unwrap();
    assert!(given_back_keys(&bucket).await.is_empty());
}

/// A redelivered message whose outcome is stored (its runner died before
/// the ack) is acked without running, and its count of deliveries given
/// back goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_acked_for_its_stored_line_forgets_its_count() {
    let server = NatsServer::start();
    let holder = NatsSource::connect(config(&server, 400)).await.unwrap();
    let other = NatsSource::connect(config(&server, 400)).await.unwrap();
    holder.accept(vec![task("s", 50)]).await.unwrap();
    assert_eq!(claim_attempt(&holder, "s").await, 1);
    let back = ended("s", 1, Outcome::NotStarted);
    holder.settle(vec![back]).await.unwrap();
    assert_eq!(claim_attempt(&holder, "s").await, 1);
    let bucket = attempts_bucket(&server, &holder).await;
    assert_eq!(
        given_back_keys(&bucket).await,
        [first_message_key(&server).await]
    );
    let js = async_nats::jetstream::new(admin_client(&server).await);
    let results = js
        .get_key_value(holder.config().results_bucket.as_str())
        .await
        .unwrap();
    let line = r#"{"id":"s","status":"ok","result":1,"attempts":1}"#;
    results.put("s", line.into()).await.unwrap();
    drop(holder);

    let deadline = Instant::now() + Duration::from_secs(10);
    while other.unsettled().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "not acked");
        let claimed = other.claim(10, now_ms()).await.unwrap();
        assert!(claimed.is_empty(), "run again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(given_back_keys(&bucket).await.is_empty());
}
