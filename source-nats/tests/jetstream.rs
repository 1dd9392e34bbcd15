//! The JetStream source against a real `nats-server -js` (started per test;
//! the test fails, saying how to install it, when the binary is missing).

mod common;

use std::time::{Duration, Instant};

use common::{claim_n, config, ok, publish_raw, task};
use source_nats::test_server::{NatsServer, Security};
use source_nats::{NatsConfig, NatsError, NatsSource};
use task_source::{
    now_ms, Admission, ErrorInfo, Filter, NewTask, Outcome, Requeue, Settlement, TaskSource,
    TaskState,
};

/// A dead-lettering settlement of `id`'s attempt `attempt` (a handler's
/// "boom").
fn dead(id: &str, attempt: u32) -> Settlement {
    Settlement {
        id: id.into(),
        attempt,
        outcome: Outcome::Settled {
            state: TaskState::DeadLetter,
            line: format!(
                r#"{{"id":"{id}","status":"dead_letter","error":{{"kind":"handler","message":"boom"}},"attempts":{attempt}}}"#
            ),
            error: Some(ErrorInfo {
                kind: "handler".into(),
                message: "boom".into(),
            }),
        },
    }
}

/// Every dead letter `source` lists, newest first.
async fn dead_letters(source: &NatsSource) -> Vec<task_source::TaskRecord> {
    source
        .list(Filter {
            state: Some(TaskState::DeadLetter),
            ..Filter::default()
        })
        .await
        .unwrap()
}

/// A source on `server` that accepted task `id`, claimed it and dead-lettered it.
async fn dead_lettered(server: &NatsServer, id: &str) -> NatsSource {
    let source = NatsSource::connect(config(server, 5_000)).await.unwrap();
    source.accept(vec![task(id, 50)]).await.unwrap();
    let claimed = claim_n(&source, 1).await;
    source
        .settle(vec![dead(id, claimed[0].attempt)])
        .await
        .unwrap();
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_is_idempotent_by_id_and_results_land_in_the_bucket() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let admitted = source
        .accept(vec![task("a", 50), task("b", 50), task("a", 50)])
        .await
        .unwrap();
    assert_eq!(
        admitted,
        vec![
            Admission::Accepted,
            Admission::Accepted,
            Admission::Known(TaskState::Queued)
        ]
    );
    // Resubmitted inside the duplicate window: not enqueued twice.
    assert_eq!(
        source.accept(vec![task("b", 50)]).await.unwrap(),
        vec![Admission::Known(TaskState::Queued)]
    );
    let claimed = claim_n(&source, 2).await;
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.attempt == 1));
    assert!(source.claim(10, now_ms()).await.unwrap().is_empty());
    source.settle(vec![ok("a", 1), ok("b", 1)]).await.unwrap();
    let records = source
        .get(vec!["a".into(), "b".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(records[0].as_ref().unwrap().state, TaskState::Ok);
    assert_eq!(
        records[1].as_ref().unwrap().line.as_deref(),
        Some(r#"{"id":"b","status":"ok","result":1,"attempts":1}"#)
    );
    assert!(records[2].is_none());
    // Settled: a resubmission answers the stored state.
    assert_eq!(
        source.accept(vec![task("a", 50)]).await.unwrap(),
        vec![Admission::Known(TaskState::Ok)]
    );
    assert_eq!(source.unsettled().await.unwrap(), 0);
}

/// The tasks' and dead letters' streams are made with the configured
/// duplicate window (24 h by default): a task id, and a letter's message id,
/// is not enqueued twice for that long. The attempts bucket keeps a count
/// for ever, as the tasks' stream keeps its messages: a message may wait
/// any time, and its count of deliveries given back must not expire
/// before it (the count sweep removes those of messages gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_keep_ids_for_the_duplicate_window_and_counts_for_ever() {
    let server = NatsServer::start();
    let config = config(&server, 5_000);
    NatsSource::connect(config.clone()).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let day = Duration::from_secs(24 * 3600);
    for name in [config.stream.as_str(), config.dlq_stream.as_str()] {
        let mut stream = js.get_stream(name).await.unwrap();
        let window = stream.info().await.unwrap().config.duplicate_window;
        assert_eq!(window, day, "{name}");
    }
    assert_eq!(attempts_max_age(&js, &config).await, Duration::ZERO);
}

/// The max age of the attempts bucket of `config` on `js` (zero: for ever).
async fn attempts_max_age(js: &async_nats::jetstream::Context, config: &NatsConfig) -> Duration {
    let name = format!("KV_{}", config.attempts_bucket);
    let mut attempts = js.get_stream(&name).await.unwrap();
    attempts.info().await.unwrap().config.max_age
}

/// The tasks' stream of `config` on `js`, made (as an admin may) with
/// `max_age` (zero: for ever).
async fn tasks_stream(js: &async_nats::jetstream::Context, config: &NatsConfig, max_age: Duration) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: source_nats::message::Band::ALL
            .iter()
            .map(|&band| source_nats::message::subject(band, &config.subject_prefix))
            .collect(),
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        max_age,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The attempts bucket of `config` on `js`, made as an earlier version made
/// it: its counts kept for `max_age`.
async fn old_attempts_bucket(
    js: &async_nats::jetstream::Context,
    config: &NatsConfig,
    max_age: Duration,
) {
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: config.attempts_bucket.clone(),
        history: 1,
        max_age,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// A tasks' stream made with a max age (by an admin) keeps its messages no
/// longer: the attempts bucket keeps a count as long, not `result_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempts_bucket_keeps_a_count_as_long_as_the_stream_keeps_a_message() {
    let server = NatsServer::start();
    let mut config = config(&server, 5_000);
    config.result_ttl = Duration::from_secs(60);
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let max_age = Duration::from_secs(3 * 24 * 3600);
    tasks_stream(&js, &config, max_age).await;
    NatsSource::connect(config.clone()).await.unwrap();
    assert_eq!(attempts_max_age(&js, &config).await, max_age);
}

/// An attempts bucket an earlier version made keeps its counts 30 days
/// (for a tasks' stream that keeps messages for ever), or `result_ttl`
/// before that: a count would expire while its message waits. The source
/// raises it to what the stream needs when it opens it, and never lowers
/// one that keeps counts longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempts_bucket_made_by_an_earlier_version_is_raised_to_the_streams_age() {
    let day = Duration::from_secs(24 * 3600);
    let server = NatsServer::start();
    let config = config(&server, 5_000);
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    old_attempts_bucket(&js, &config, 30 * day).await;
    NatsSource::connect(config.clone()).await.unwrap();
    assert_eq!(
        attempts_max_age(&js, &config).await,
        Duration::ZERO,
        "for ever"
    );

    let server = NatsServer::start();
    let mut config = common::config(&server, 5_000);
    config.result_ttl = day;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    tasks_stream(&js, &config, 3 * day).await;
    old_attempts_bucket(&js, &config, day).await;
    NatsSource::connect(config.clone()).await.unwrap();
    assert_eq!(attempts_max_age(&js, &config).await, 3 * day);

    let server = NatsServer::start();
    let config = common::config(&server, 5_000);
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    tasks_stream(&js, &config, 3 * day).await;
    old_attempts_bucket(&js, &config, 30 * day).await;
    NatsSource::connect(config.clone()).await.unwrap();
    assert_eq!(
        attempts_max_age(&js, &config).await,
        30 * day,
        "not lowered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_bands_are_fetched_first_and_claims_stop_at_max_in_flight() {
    let server = NatsServer::start();
    let mut cfg = config(&server, 5_000);
    cfg.max_in_flight = 2;
    let source = NatsSource::connect(cfg).await.unwrap();
    source
        .accept(vec![task("low", 90), task("mid", 50), task("high", 0)])
        .await
        .unwrap();
    // Each band's consumer counts its message pending before the claim: one
    // that had not caught up yet (a loaded machine) would leave its band out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while source.queue_stats().await.unwrap().lag < 3 {
        assert!(
            Instant::now() < deadline,
            "the consumers never saw 3 messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fetch may come back empty while the consumers catch up: claim until two.
    let first = claim_n(&source, 2).await;
    let ids: Vec<&str> = first.iter().map(|c| c.task.id.as_str()).collect();
    assert_eq!(ids, ["high", "mid"]);
    assert!(source.claim(10, now_ms()).await.unwrap().is_empty());
    source.settle(vec![ok("high", 1)]).await.unwrap();
    let next = claim_n(&source, 1).await;
    assert_eq!(next[0].task.id, "low");
    let stats = source.queue_stats().await.unwrap();
    assert!(stats.connected);
    assert_eq!(stats.fetch_batch_max, 2);
    assert_eq!(stats.held, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_a_nak_with_the_delay_and_uses_an_attempt() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    source.accept(vec![task("r", 50)]).await.unwrap();
    let first = claim_n(&source, 1).await;
    assert_eq!(first[0].attempt, 1);
    let nacked = Instant::now();
    source
        .settle(vec![Settlement {
            id: "r".into(),
            attempt: 1,
            outcome: Outcome::Retry {
                due_ms: now_ms() + 300,
                error: ErrorInfo {
                    kind: "handler".into(),
                    message: "flaky".into(),
                },
            },
        }])
        .await
        .unwrap();
    let second = claim_n(&source, 1).await;
    assert!(
        nacked.elapsed() >= Duration::from_millis(250),
        "redelivered before the delay"
    );
    assert_eq!(second[0].attempt, 2);
    assert_eq!(source.queue_stats().await.unwrap().redeliveries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_to_the_dlq_stream_and_come_back_by_id() {
    let server = NatsServer::start();
    let source = dead_lettered(&server, "d").await;
    let dead = dead_letters(&source).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task, task("d", 50));
    assert_eq!(dead[0].error.as_ref().unwrap().message, "boom");
    assert_eq!(
        source.get(vec!["d".into()]).await.unwrap()[0]
            .as_ref()
            .unwrap()
            .state,
        TaskState::DeadLetter
    );
    let requeued = source
        .requeue_dead(Some(vec!["d".into(), "zz".into()]))
        .await
        .unwrap();
    assert_eq!(
        requeued,
        vec![
            ("d".into(), Requeue::Requeued),
            ("zz".into(), Requeue::Unknown)
        ]
    );
    let again = claim_n(&source, 1).await;
    assert_eq!(again[0].task.id, "d");
    assert_eq!(again[0].attempt, 1, "attempts reset");
    assert!(source.purge_dead().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_tasks_are_kept_by_progress_acks_and_a_dead_holder_s_are_redelivered() {
    let server = NatsServer::start();
    let runner = NatsSource::connect(config(&server, 400)).await.unwrap();
    let other = NatsSource::connect(config(&server, 400)).await.unwrap();
    runner
        .accept(vec![task("long", 50), task("lost", 50)])
        .await
        .unwrap();
    let claimed = claim_n(&runner, 2).await;
    assert_eq!(claimed.len(), 2);
    // Three ack_waits pass while `runner` holds both: progress acks keep them.
    let until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < until {
        assert!(
            other.claim(10, now_ms()).await.unwrap().is_empty(),
            "redelivered while held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.settle(vec![ok("long", 1)]).await.unwrap();
    // The holder dies: what it held comes back to the other after ack_wait.
    drop(runner);
    let back = claim_n(&other, 1).await;
    assert_eq!(back[0].task.id, "lost");
    assert_eq!(back[0].attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_survived_without_losing_tasks() {
    let mut server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    source
        .accept(vec![task("x", 50), task("y", 50)])
        .await
        .unwrap();
    let first = claim_n(&source, 1).await;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !source.connected() {
        assert!(Instant::now() < deadline, "did not reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = first[0].task.id.clone();
    source.settle(vec![ok(&id, 1)]).await.unwrap();
    // The other task still comes. The first may come back once more when the
    // restarted server lost its delivery before the ack (at-least-once): it is
    // settled again and the claims go on.
    let deadline = Instant::now() + Duration::from_secs(15);
    let rest = loop {
        let claimed = claim_n(&source, 1).await;
        assert_eq!(claimed.len(), 1);
        if claimed[0].task.id != id {
            break claimed;
        }
        assert!(Instant::now() < deadline, "only {id} came back");
        source
            .settle(vec![ok(&id, claimed[0].attempt)])
            .await
            .unwrap();
    };
    assert_ne!(rest[0].task.id, id);
    assert_eq!(
        source.get(vec![id]).await.unwrap()[0]
            .as_ref()
            .unwrap()
            .state,
        TaskState::Ok
    );
}

/// The longest line the source says it stores is stored (the server would
/// close the connection of a client that sent more than its limit), and it
/// is below the server's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_line_the_source_takes_is_stored() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    let max = source.max_line_bytes().expect("the queue has a limit");
    assert!(
        max > 0 && max < 1024 * 1024,
        "{max}: the server's default limit is 1 MiB"
    );
    source.accept(vec![task("big", 50)]).await.unwrap();
    let claimed = claim_n(&source, 1).await;
    assert_eq!(claimed.len(), 1);
    let head = r#"{"id":"big","status":"ok","result":""#;
    let line = format!("{head}{}\"}}", "x".repeat(max - head.len() - 2));
    assert_eq!(line.len(), max);
    source
        .settle(vec![Settlement {
            id: "big".into(),
            attempt: 1,
            outcome: Outcome::Settled {
                state: TaskState::Ok,
                line: line.clone(),
                error: None,
            },
        }])
        .await
        .unwrap();
    let record = source.get(vec!["big".into()]).await.unwrap();
    assert_eq!(record[0].as_ref().and_then(|r| r.line.clone()), Some(line));
}

/// A purge removes the letters it read, naming each id once, and keeps their
/// `dead_letter` lines (a resubmission inside the stream's duplicate window
/// then answers `dead_letter`, not a queued task that never runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_removes_the_letters_and_keeps_their_lines() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    source
        .accept(vec![task("p", 50), task("q", 50)])
        .await
        .unwrap();
    let claimed = claim_n(&source, 2).await;
    let settled = claimed
        .iter()
        .map(|c| dead(&c.task.id, c.attempt))
        .collect();
    source.settle(settled).await.unwrap();
    let mut purged = source.purge_dead().await.unwrap();
    purged.sort();
    assert_eq!(purged, ["p", "q"]);
    let letters = dead_letters(&source).await;
    assert!(letters.is_empty(), "{letters:?}");
    assert!(source.purge_dead().await.unwrap().is_empty());
    assert_eq!(
        source.accept(vec![task("p", 50)]).await.unwrap(),
        vec![Admission::Known(TaskState::DeadLetter)],
        "its line says what became of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_acks_follow_the_consumers_ack_wait_not_a_longer_configured_one() {
    let server = NatsServer::start();
    let first = NatsSource::connect(config(&server, 400)).await.unwrap();
    assert_eq!(first.ack_wait(), Duration::from_millis(400));
    let runner = NatsSource::connect(config(&server, 60_000)).await.unwrap();
    assert_eq!(
        runner.ack_wait(),
        Duration::from_millis(400),
        "the server's"
    );
    runner.accept(vec![task("long", 50)]).await.unwrap();
    assert_eq!(claim_n(&runner, 1).await.len(), 1);
    // Three of the server's ack_waits pass while `runner` holds it.
    let until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < until {
        assert!(
            first.claim(10, now_ms()).await.unwrap().is_empty(),
            "redelivered while held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.settle(vec![ok("long", 1)]).await.unwrap();
}

/// Task `id` claimed by a daemon that stored `line` for it and died before
/// it acked; returns a second daemon's source, to which the message was
/// redelivered past three ack_waits without being claimed as a task.
async fn redelivered_after_its_line(server: &NatsServer, id: &str, line: &str) -> NatsSource {
    let holder = NatsSource::connect(config(server, 400)).await.unwrap();
    let other = NatsSource::connect(config(server, 400)).await.unwrap();
    holder.accept(vec![task(id, 50)]).await.unwrap();
    assert_eq!(claim_n(&holder, 1).await.len(), 1);
    let client = async_nats::connect(server.url()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value(holder.config().results_bucket.as_str())
        .await
        .unwrap();
    bucket
        .put(source_nats::message::result_key(id), line.to_owned().into())
        .await
        .unwrap();
    drop(holder);
    let until = Instant::now() + Duration::from_millis(1_200);
    while Instant::now() < until {
        assert!(
            other.claim(10, now_ms()).await.unwrap().is_empty(),
            "run again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other
}

/// A task whose outcome was stored by a daemon that then died before its ack
/// reached the server is acked on redelivery, not run again: its final line
/// stays the one the task ended with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_task_whose_line_is_stored_is_acked_not_run_again() {
    let server = NatsServer::start();
    let line = r#"{"id":"done","status":"ok","result":1,"attempts":1}"#;
    let other = redelivered_after_its_line(&server, "done", line).await;
    assert_eq!(other.unsettled().await.unwrap(), 0, "acked");
    let record = other.get(vec!["done".into()]).await.unwrap();
    assert_eq!(
        record[0].as_ref().and_then(|r| r.line.as_deref()),
        Some(line)
    );
}

/// A message that was no task is dead-lettered with the bytes it carried, and
/// a retry of that letter keeps it as it is instead of publishing a task made
/// up of nothing (which would lose the bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_that_was_no_task_is_kept_by_a_retry() {
    let server = NatsServer::start();
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    publish_raw(&server, "raw-1", "hello, not json").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dead_letters(&source).await.is_empty() && Instant::now() < deadline {
        assert!(
            source.claim(10, now_ms()).await.unwrap().is_empty(),
            "rejected, not claimed"
        );
    }
    let dead = dead_letters(&source).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task.id, "raw-1");
    assert_eq!(dead[0].error.as_ref().unwrap().kind, "invalid_input");
    assert_eq!(
        source
            .requeue_dead(Some(vec!["raw-1".into()]))
            .await
            .unwrap(),
        vec![("raw-1".into(), Requeue::NotATask)]
    );
    let kept = dead_letters(&source).await;
    assert_eq!(kept.len(), 1, "the letter stays");
    assert_eq!(kept[0].task.payload, "hello, not json");
}

/// Listings past one fetch of the ordered consumer (500 messages) and around
/// holes: 1 200 tasks settle, half ok and half dead-lettered, and every third
/// letter is requeued (its message deleted from the dead-letter stream, its
/// line from the bucket). The dead-letter listing is exactly the letters
/// left, each once, newest first; the full listing every line left; a purge names each
/// letter left once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_read_every_message_past_one_fetch_and_around_holes() {
    const N: usize = 1_200;
    let server = NatsServer::start();
    let config = config(&server, 30_000);
    let source = NatsSource::connect(config.clone()).await.unwrap();
    let tasks: Vec<NewTask> = (0..N).map(|i| task(&format!("t{i:04}"), 50)).collect();
    source.accept(tasks).await.unwrap();
    let mut settled = 0;
    while settled < N {
        let claimed = claim_n(&source, 100.min(N - settled)).await;
        assert!(!claimed.is_empty(), "claims stopped after {settled}");
        let settlements = claimed
            .iter()
            .map(|c| {
                let id = c.task.id.clone();
                let n: usize = id[1..].parse().unwrap();
                if n % 2 == 0 {
                    ok(&id, c.attempt)
                } else {
                    dead(&id, c.attempt)
                }
            })
            .collect::<Vec<_>>();
        settled += settlements.len();
        source.settle(settlements).await.unwrap();
    }
    let requeue: Vec<String> = (0..N)
        .filter(|n| n % 2 == 1 && n % 3 == 0)
        .map(|n| format!("t{n:04}"))
        .collect();
    let requeued = source.requeue_dead(Some(requeue.clone())).await.unwrap();
    assert!(requeued.iter().all(|(_, r)| *r == Requeue::Requeued));
    let left: Vec<String> = (0..N)
        .filter(|n| n % 2 == 1 && n % 3 != 0)
        .map(|n| format!("t{n:04}"))
        .collect();
    let dead = dead_letters(&source).await;
    assert!(
        dead.windows(2).all(|w| w[0].updated_ms >= w[1].updated_ms),
        "newest first"
    );
    let mut listed: Vec<String> = dead.iter().map(|r| r.task.id.clone()).collect();
    listed.sort();
    assert_eq!(listed, left, "the letters left, each once");
    let all = source.list(Filter::default()).await.unwrap();
    let oks = all.iter().filter(|r| r.state == TaskState::Ok).count();
    let lettered = all
        .iter()
        .filter(|r| r.state == TaskState::DeadLetter)
        .count();
    assert_eq!(
        (oks, lettered, all.len()),
        (N / 2, left.len(), N / 2 + left.len())
    );
    assert!(
        all.iter().all(|r| !requeue.contains(&r.task.id)),
        "a requeued task's line was listed"
    );
    let mut purged = source.purge_dead().await.unwrap();
    purged.sort();
    assert_eq!(purged, left);
    // Each listing's consumer is gone once it is done.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    for name in [
        config.dlq_stream.clone(),
        format!("KV_{}", config.results_bucket),
    ] {
        let mut stream = js.get_stream(&name).await.unwrap();
        let consumers = stream.info().await.unwrap().state.consumer_count;
        assert_eq!(consumers, 0, "consumers left on {name}");
    }
}

/// The id, type and priority of each of `records`, sorted.
fn typed(records: &[task_source::TaskRecord]) -> Vec<(String, String, u8)> {
    let mut out: Vec<_> = records
        .iter()
        .map(|r| (r.task.id.clone(), r.task.task_type.clone(), r.task.priority))
        .collect();
    out.sort();
    out
}

/// Listings show each settled task's own type and priority (its line in the
/// bucket carries them after `run`'s keys), and a type filter picks tasks by
/// it; a look-up still answers `run`'s line, byte for byte. A line stored by
/// an earlier version, without them, lists with an empty type, which no type
/// filter picks, and the default priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_each_task_s_type_and_priority() {
    let server = NatsServer::start();
    let config = config(&server, 5_000);
    let source = NatsSource::connect(config.clone()).await.unwrap();
    let mut resize = task("r", 80);
    resize.task_type = "resize".into();
    let admitted = source
        .accept(vec![task("e", 10), resize, task("d", 40)])
        .await
        .unwrap();
    assert!(admitted.iter().all(|a| *a == Admission::Accepted));
    let claimed = claim_n(&source, 3).await;
    assert_eq!(claimed.len(), 3);
    let settlements = claimed
        .iter()
        .map(|c| match c.task.id.as_str() {
            "d" => dead("d", c.attempt),
            id => ok(id, c.attempt),
        })
        .collect();
    source.settle(settlements).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let bucket = js.get_key_value(&config.results_bucket).await.unwrap();
    let old = r#"{"id":"old","status":"ok","result":1,"attempts":1}"#;
    bucket.put("old", old.into()).await.unwrap();

    // What any reader of the bucket sees: `run`'s keys, then the task's.
    let stored = bucket.get("e").await.unwrap().expect("e's line");
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"id": "e", "status": "ok", "result": 1, "attempts": 1, "type": "echo", "priority": 10})
    );

    let owned = |v: &[(&str, &str, u8)]| -> Vec<(String, String, u8)> {
        v.iter()
            .map(|(i, t, p)| ((*i).to_owned(), (*t).to_owned(), *p))
            .collect()
    };
    let all = source.list(Filter::default()).await.unwrap();
    assert_eq!(
        typed(&all),
        owned(&[
            ("d", "echo", 40),
            ("e", "echo", 10),
            ("old", "", 50),
            ("r", "resize", 80)
        ])
    );
    let echo = Filter {
        task_type: Some("echo".into()),
        ..Filter::default()
    };
    let listed = source.list(echo.clone()).await.unwrap();
    assert_eq!(
        typed(&listed),
        owned(&[("d", "echo", 40), ("e", "echo", 10)])
    );
    let ok_echo = Filter {
        state: Some(TaskState::Ok),
        ..echo
    };
    let listed = source.list(ok_echo).await.unwrap();
    assert_eq!(typed(&listed), owned(&[("e", "echo", 10)]));

    let records = source
        .get(vec!["e".into(), "d".into(), "old".into()])
        .await
        .unwrap();
    let lines: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.as_ref().and_then(|r| r.line.as_deref()))
        .collect();
    let dead_line = r#"{"id":"d","status":"dead_letter","error":{"kind":"handler","message":"boom"},"attempts":1}"#;
    assert_eq!(
        lines,
        [
            Some(r#"{"id":"e","status":"ok","result":1,"attempts":1}"#),
            Some(dead_line),
            Some(old)
        ]
    );
}

/// Sets the largest message the stream `name` takes (`-1`: no limit), as an
/// operator would: the server then refuses what is larger.
async fn limit_messages(server: &NatsServer, name: &str, max: i32) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(name).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = max;
    js.update_stream(config).await.unwrap();
}

/// A dead-lettering settlement whose result line could not be stored (the
/// bucket refused it after the letter was published) is tried again, and the
/// second try letters the task once more under the same message id: the
/// stream drops the repeat, and one letter is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_settled_again_after_a_failed_put_is_kept_once() {
    let server = NatsServer::start();
    let config = config(&server, 30_000);
    let bucket_stream = format!("KV_{}", config.results_bucket);
    let source = NatsSource::connect(config).await.unwrap();
    source.accept(vec![task("x", 50)]).await.unwrap();
    let claimed = claim_n(&source, 1).await;
    limit_messages(&server, &bucket_stream, 8).await;
    let refused = source.settle(vec![dead("x", claimed[0].attempt)]).await;
    assert!(refused.is_err(), "the bucket took a line past its limit");
    limit_messages(&server, &bucket_stream, -1).await;
    source
        .settle(vec![dead("x", claimed[0].attempt)])
        .await
        .unwrap();
    let letters = dead_letters(&source).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].task.id, "x");
    assert_eq!(source.queue_stats().await.unwrap().dead_letters, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_fits_the_server_s_max_payload_and_a_task_with_no_room_for_one_is_refused() {
    const MAX: usize = 8 * 1024;
    let server = NatsServer::start_with_max_payload(MAX);
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    // A task whose letter could not carry its headers is refused with why.
    let mut full = task("full", 50);
    full.payload = format!("\"{}\"", "x".repeat(MAX - 400));
    let refused = source.accept(vec![full]).await.unwrap();
    assert!(
        matches!(&refused[0], Admission::Refused(why) if why.contains("too_large") && why.contains("max_payload")),
        "{refused:?}"
    );
    // Two tasks published from outside, filled nearly to the limit: the
    // letter of the first has room for part of its error, the second's for
    // none of its body. Either would have made the server close the
    // connection.
    for (id, fill) in [("near", MAX - 800), ("brim", MAX - 120)] {
        let body = serde_json::json!({"id": id, "type": "echo", "payload": "x".repeat(fill)});
        publish_raw(&server, id, body.to_string()).await;
    }
    let claimed = claim_n(&source, 2).await;
    assert_eq!(claimed.len(), 2);
    let letters = claimed.iter().map(|c| {
        let mut letter = dead(&c.task.id, c.attempt);
        if let Outcome::Settled { error, .. } = &mut letter.outcome {
            *error = Some(ErrorInfo {
                kind: "handler".into(),
                message: "e".repeat(4000),
            });
        }
        letter
    });
    source.settle(letters.collect()).await.unwrap();
    let near = dead_letters(&source)
        .await
        .into_iter()
        .find(|r| r.task.id == "near")
        .expect("the near-full task's letter");
    let kept = &near.error.as_ref().unwrap().message;
    assert!(!kept.is_empty() && kept.len() < 1024, "{}", kept.len());
    for id in ["near", "brim"] {
        let state = source.get(vec![id.into()]).await.unwrap()[0]
            .as_ref()
            .map(|r| r.state);
        assert_eq!(state, Some(TaskState::DeadLetter), "{id}");
    }
    // The connection lived through it: the source still takes tasks.
    assert_eq!(
        source.accept(vec![task("after", 50)]).await.unwrap(),
        vec![Admission::Accepted]
    );
    assert_eq!(claim_n(&source, 1).await[0].task.id, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_stale_letter_keeps_the_task_s_final_line() {
    let server = NatsServer::start();
    let source = dead_lettered(&server, "s").await;
    // What a requeue that stopped half-way leaves once the task ran again:
    // its letter, and its new final line.
    let client = async_nats::connect(server.url()).await.unwrap();
    let results = async_nats::jetstream::new(client)
        .get_key_value("cortex-results")
        .await
        .unwrap();
    let line = r#"{"id":"s","status":"ok","result":1,"attempts":1}"#;
    results.put("s", line.into()).await.unwrap();
    let retried = source.requeue_dead(Some(vec!["s".into()])).await.unwrap();
    assert_eq!(
        retried,
        vec![("s".into(), Requeue::NotDeadLettered(TaskState::Ok))]
    );
    let now = source.get(vec!["s".into()]).await.unwrap()[0].clone();
    assert_eq!(
        now.map(|r| r.state),
        Some(TaskState::Ok),
        "the line is kept"
    );
    assert!(
        dead_letters(&source).await.is_empty(),
        "the stale letter is gone"
    );
    assert!(
        source.claim(10, now_ms()).await.unwrap().is_empty(),
        "nothing was enqueued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_its_holder_died_before_publishing_is_published_by_the_redelivery() {
    let server = NatsServer::start();
    // The holder stored the dead letter's line, then died before the letter:
    // the daemon the redelivery reached published it and terminated the
    // message instead of running it.
    let line = r#"{"id":"late","status":"dead_letter","error":{"kind":"handler","message":"boom"},"attempts":1}"#;
    let other = redelivered_after_its_line(&server, "late", line).await;
    assert_eq!(other.unsettled().await.unwrap(), 0, "terminated");
    let letters = dead_letters(&other).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].task, task("late", 50));
    assert_eq!(letters[0].error.as_ref().unwrap().message, "boom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_whose_task_fills_the_message_is_put_back_by_a_retry() {
    const MAX: usize = 8 * 1024;
    let server = NatsServer::start_with_max_payload(MAX);
    let source = NatsSource::connect(config(&server, 5_000)).await.unwrap();
    // Published from outside, 600 bytes under the limit: its letter fits
    // with a short error, not with the longest one.
    let body = serde_json::json!({"id": "full", "type": "echo", "payload": "x".repeat(MAX - 600)});
    publish_raw(&server, "full", body.to_string()).await;
    let claimed = claim_n(&source, 1).await;
    source
        .settle(vec![dead("full", claimed[0].attempt)])
        .await
        .unwrap();
    let retried = source
        .requeue_dead(Some(vec!["full".into()]))
        .await
        .unwrap();
    assert_eq!(retried, vec![("full".into(), Requeue::Requeued)]);
    let again = claim_n(&source, 1).await;
    assert_eq!(again[0].task.id, "full");
    assert_eq!(
        again[0].task.payload.len(),
        MAX - 600 + 2,
        "the whole payload"
    );
}

/// A user that may not create streams, on a server where none exists yet:
/// connecting fails, naming the subject the server denied, the stream and
/// the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_credentials_may_not_create_is_named_as_denied() {
    let server = NatsServer::start_with(Security::Restricted);
    let mut user = config(&server, 5_000);
    user.credentials = server.client().seed.clone();
    let stream = user.stream.clone();
    let seed = user.credentials.clone().expect("a seed file");
    let err = NatsSource::connect(user).await.expect_err("refused");
    match &err {
        NatsError::Denied {
            subject,
            what,
            credentials,
            advice,
            ..
        } => {
            assert!(advice.contains("may create the stream"), "{advice}");
            assert_eq!(subject, &format!("$JS.API.STREAM.CREATE.{stream}"));
            assert_eq!(what, &format!("stream {stream}"));
            assert!(
                credentials.contains(&seed.display().to_string()),
                "{credentials}"
            );
        }
        other => panic!("not named as denied: {other}"),
    }
    assert!(!err.to_string().contains("timed out"), "{err}");
}

/// The restricted user's source on `server`, once its admin made the queue.
async fn restricted_user_on_a_made_queue(server: &NatsServer) -> NatsSource {
    let mut admin = config(server, 5_000);
    admin.credentials = server.client().admin_seed.clone();
    drop(
        NatsSource::connect(admin)
            .await
            .expect("the admin makes the queue"),
    );
    let mut user = config(server, 5_000);
    user.credentials = server.client().seed.clone();
    NatsSource::connect(user).await.expect("connected")
}

/// Once an admin made the queue, the same user connects: a denial is
/// named only for a step the server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_user_connects_once_an_admin_made_the_queue() {
    let server = NatsServer::start_with(Security::Restricted);
    restricted_user_on_a_made_queue(&server).await;
}

/// A task on a subject the credentials may not publish to is refused with
/// the subject named as denied (its ack would never come), and the others
/// of the same submission are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_denied_subject_is_refused_as_denied() {
    let server = NatsServer::start_with(Security::Restricted);
    let source = restricted_user_on_a_made_queue(&server).await;
    // The low band (priority 67 and up) is denied to this user.
    let admitted = source
        .accept(vec![task("low", 90), task("normal", 50)])
        .await
        .unwrap();
    match &admitted[0] {
        Admission::Refused(why) => {
            assert!(why.contains("denied"), "{why}");
            assert!(why.contains("cortex.tasks.low"), "{why}");
        }
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(admitted[1], Admission::Accepted);
    let claimed = claim_n(&source, 1).await;
    let ids: Vec<&str> = claimed.iter().map(|c| c.task.id.as_str()).collect();
    assert_eq!(ids, ["normal"], "the other task is in the stream");
}

/// The restricted user's source on `server`, and what its settlement of
/// task `id` met: accepted, claimed, then settled by `settlement`, which
/// fails (`why`).
async fn refused_settlement(
    server: &NatsServer,
    id: &str,
    settlement: fn(&str, u32) -> Settlement,
    why: &str,
) -> (NatsSource, String) {
    let source = restricted_user_on_a_made_queue(server).await;
    source.accept(vec![task(id, 50)]).await.unwrap();
    let claimed = claim_n(&source, 1).await;
    let err = source
        .settle(vec![settlement(id, claimed[0].attempt)])
        .await
        .expect_err(why);
    (source, err.to_string())
}

/// A settlement whose dead letter the credentials may not publish fails at
/// once, naming the subject, instead of waiting out the publish's timeout;
/// the task's line is stored and its message kept, to be lettered later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_on_a_denied_subject_is_named_as_denied() {
    let server = NatsServer::start_with(Security::Restricted);
    let (source, said) = refused_settlement(&server, "doomed", dead, "the letter is denied").await;
    assert!(
        said.contains("denied: the NATS server denies the subject cortex.tasks.dead"),
        "{said}"
    );
    assert!(said.contains("the dead letter of task doomed"), "{said}");
    assert!(!said.contains("timed out"), "{said}");
    let records = source.get(vec!["doomed".into()]).await.unwrap();
    let record = records[0].as_ref().expect("its line is stored");
    assert_eq!(record.state, TaskState::DeadLetter);
    assert_eq!(source.unsettled().await.unwrap(), 1, "its message is kept");
}

/// A settlement whose result the credentials may not store fails at once,
/// naming the bucket's subject; the task stays held, to be settled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_on_a_denied_subject_is_named_as_denied() {
    let server = NatsServer::start_with(Security::Restricted);
    let (source, said) = refused_settlement(&server, "sealed", ok, "the result is denied").await;
    assert!(
        said.contains("denied: the NATS server denies the subject $KV.cortex-results.sealed"),
        "{said}"
    );
    assert!(said.contains("the result of task sealed"), "{said}");
    assert_eq!(source.unsettled().await.unwrap(), 1, "still held");
}

/// An ack the credentials may not publish (the low band's consumer's) gets
/// no answer, only the server's error on the side: the source then reports
/// itself failing and refuses new tasks, naming the ack's subject and the
/// permission to grant, since each task it runs would be delivered again and
/// never leave the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_ack_makes_the_source_fail_naming_the_permission() {
    let server = NatsServer::start_with(Security::Restricted);
    let source = restricted_user_on_a_made_queue(&server).await;
    let mut admin = config(&server, 5_000);
    admin.credentials = server.client().admin_seed.clone();
    let admin = NatsSource::connect(admin)
        .await
        .expect("the admin connects");
    // Only the admin may publish a task of the low band.
    assert_eq!(
        admin.accept(vec![task("low", 90)]).await.unwrap(),
        [Admission::Accepted]
    );
    let health = source.stats().await.unwrap().health;
    assert_eq!(health, task_source::SourceHealth::Ok, "nothing denied yet");
    let claimed = claim_n(&source, 1).await;
    source
        .settle(vec![ok("low", claimed[0].attempt)])
        .await
        .expect("the result is stored; the ack gets no answer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        match source.stats().await.unwrap().health {
            task_source::SourceHealth::Failing { reason } => break reason,
            task_source::SourceHealth::Ok => {
                assert!(
                    Instant::now() < deadline,
                    "the denied ack is never reported"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        reason.contains("denies this daemon's acks ($JS.ACK.CORTEX_TASKS.cortex-pool-low."),
        "{reason}"
    );
    assert!(reason.contains("grant publish on $JS.ACK.>"), "{reason}");
    let refused = source
        .accept(vec![task("more", 50)])
        .await
        .expect_err("new tasks are refused, saying why");
    assert!(
        refused.to_string().contains("denies this daemon's acks"),
        "{refused}"
    );
}

/// A result the credentials may not read is named as denied at once, not
/// after the read's timeout; submitting its task still works (its id is
/// published without knowing whether it settled before, and the stream's
/// duplicate window takes it once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_credentials_may_not_read_is_named_as_denied() {
    let server = NatsServer::start_with(Security::Restricted);
    let source = restricted_user_on_a_made_queue(&server).await;
    assert_eq!(
        source.accept(vec![task("hidden", 50)]).await.unwrap(),
        [Admission::Accepted]
    );
    let err = source
        .get(vec!["hidden".into()])
        .await
        .expect_err("the read is denied");
    let said = err.to_string();
    assert!(
        said.contains(
            "denied: the NATS server denies the subject \
             $JS.API.DIRECT.GET.KV_cortex-results.$KV.cortex-results.hidden"
        ),
        "{said}"
    );
    assert!(
        said.contains("the result of task hidden cannot be read"),
        "{said}"
    );
    assert!(!said.contains("timed out"), "{said}");
    // Another task's result is read as before.
    source.accept(vec![task("shown", 50)]).await.unwrap();
    assert_eq!(
        source.get(vec!["shown".into()]).await.unwrap(),
        [None],
        "waiting, and not held here"
    );
}
