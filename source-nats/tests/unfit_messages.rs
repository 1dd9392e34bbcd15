//! Task ids a NATS header cannot carry, repeats in one call, and messages the
//! client cannot read, against a real `nats-server -js` (started per test;
//! the test fails, saying how to install it, when the binary is missing).
//!
//! A message whose header block the client cannot read is written to the
//! server with a raw protocol write (as another client's bug may). Each
//! delivery of it ends the client's connection, so the source never sees
//! it: unswept, the server delivers it again every `ack_wait`, for ever.

mod common;

use std::time::{Duration, Instant};

use common::{claim_n, config, ok, publish_raw, task};
use source_nats::test_server::NatsServer;
use source_nats::NatsSource;
use task_source::{now_ms, Admission, Claimed, Filter, TaskRecord, TaskSource, TaskState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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
    // Its line lists the task it carried.
    assert_eq!(
        (record.task.task_type.as_str(), record.task.priority),
        ("echo", 50)
    );
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

/// How long a test waits for what the source does in the background.
const PATIENCE: Duration = Duration::from_secs(40);

/// Publishes `body` under the header block `headers` (the bytes between the
/// protocol line and the body, as written) on the normal band's subject
/// (prefix `cortex.tasks`) of `server`, through a raw protocol write: no
/// client checks or rewrites the block. Returns the stream sequence the
/// server stored it at.
///
/// # Panics
/// When the server answers with an error or no stream ack within 10 s.
async fn publish_raw_headers(server: &NatsServer, headers: &[u8], body: &[u8]) -> u64 {
    let url = server.url();
    let address = url.trim_start_matches("nats://");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (read, mut write) = tcp.into_split();
    let subject = source_nats::message::subject(source_nats::message::Band::Normal, "cortex.tasks");
    let mut out = Vec::new();
    out.extend_from_slice(b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n");
    out.extend_from_slice(b"SUB raw.ack 1\r\n");
    let total = headers.len() + body.len();
    let line = format!("HPUB {subject} raw.ack {} {total}\r\n", headers.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    write.write_all(&out).await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let ack = async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the server's answer");
            assert!(!line.starts_with("-ERR"), "the server refused: {line}");
            if line.starts_with('{') {
                return line;
            }
        }
    };
    let ack = tokio::time::timeout(Duration::from_secs(10), ack)
        .await
        .expect("a stream ack within 10 s");
    let ack: serde_json::Value = serde_json::from_str(&ack).unwrap();
    ack["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("a stream ack: {ack}"))
}

/// Claims until task `id` comes back; panics after [`PATIENCE`].
async fn claim_until(source: &NatsSource, id: &str) -> Claimed {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let claimed = source.claim(1, now_ms()).await.unwrap();
        if let Some(claim) = claimed.into_iter().find(|c| c.task.id == id) {
            return claim;
        }
        assert!(Instant::now() < deadline, "task {id} was never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Task `id`'s record once it is a dead letter; panics, saying what it
/// read last, after [`PATIENCE`].
async fn dead_lettered(source: &NatsSource, id: &str) -> TaskRecord {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let record = source.get(vec![id.into()]).await.unwrap().pop().flatten();
        if let Some(record) = record.clone().filter(|r| r.state == TaskState::DeadLetter) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} was never dead-lettered (last read: {record:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the queue holds nothing to deliver or redeliver; panics
/// after [`PATIENCE`].
async fn queue_empties(source: &NatsSource) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = source.unsettled().await.unwrap();
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} messages stay in the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message under the header block `headers` (body: an echo task `id`)
/// ends as a dead letter of `id` whose error says `why`, with its body in
/// the letter, and leaves the stream; a well-formed task published after it
/// is claimed, kept through the sweep, and settles.
async fn is_dead_lettered_and_removed(id: &str, headers: &[u8], why: &str) {
    let server = NatsServer::start();
    // The server would deliver it again only after 30 s: the first delivery
    // is the one that must end it.
    let source = NatsSource::connect(config(&server, 30_000)).await.unwrap();
    let body = format!(r#"{{"id":"{id}","type":"echo","payload":1}}"#);
    let unreadable = publish_raw_headers(&server, headers, body.as_bytes()).await;
    let behind = publish_raw_headers(
        &server,
        b"NATS/1.0\r\nNats-Msg-Id: behind\r\n\r\n",
        br#"{"id":"behind","type":"echo"}"#,
    )
    .await;

    let claim = claim_until(&source, "behind").await;
    let record = dead_lettered(&source, id).await;
    // Its line lists the task the body carries.
    assert_eq!(
        (record.task.task_type.as_str(), record.task.priority),
        ("echo", 50)
    );
    let error = record.error.expect("its error");
    assert_eq!(error.kind, "invalid_input");
    assert!(
        error
            .message
            .contains("the NATS client cannot read the message's headers")
            && error.message.contains(why)
            && error.message.contains(&format!("message {unreadable} of")),
        "{error:?}"
    );
    let letters = source
        .list(Filter {
            state: Some(TaskState::DeadLetter),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].task.id, id);
    assert_eq!(
        letters[0].task.task_type, "echo",
        "the letter keeps the body"
    );

    // Gone from the stream (never delivered again); the task behind it,
    // which the client can read, is kept.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream("CORTEX_TASKS").await.unwrap();
    let gone = stream.get_raw_message(unreadable).await.unwrap_err();
    assert_eq!(
        gone.kind(),
        async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
    );
    assert_eq!(
        stream.get_raw_message(behind).await.unwrap().sequence,
        behind
    );
    source
        .settle(vec![ok("behind", claim.attempt)])
        .await
        .unwrap();
    queue_empties(&source).await;
}

/// A header line without a colon (here a line break inside a value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_line_without_a_colon_is_dead_lettered_and_leaves_the_stream() {
    let headers = b"NATS/1.0\r\nNats-Msg-Id: no-colon\nsecond line\r\n\r\n";
    is_dead_lettered_and_removed("no-colon", headers, "has no colon").await;
}

/// A version line that is not `NATS/1.0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_line_is_dead_lettered_and_leaves_the_stream() {
    let headers = b"HTTP/1.1\r\nNats-Msg-Id: bad-version\r\n\r\n";
    is_dead_lettered_and_removed("bad-version", headers, "does not begin with NATS/1.0").await;
}

/// A header name with a character a name cannot hold (a space).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_with_a_space_is_dead_lettered_and_leaves_the_stream() {
    let headers = b"NATS/1.0\r\nNats-Msg-Id: bad-name\r\nBad Name: x\r\n\r\n";
    is_dead_lettered_and_removed(
        "bad-name",
        headers,
        "holds a character a header name cannot",
    )
    .await;
}
