//! Task replies: results, handler errors, panics, unknown types, bad input, limits.

mod common;

use common::{error_of, Gate, Peer, Reply, NO_HEARTBEAT};
use pool_core::protocol::ToWorker;
use serde_json::json;
use worker_sdk::Stopped;

async fn ready() -> Peer {
    Peer::ready(common::test_worker(Gate::default()), NO_HEARTBEAT).await
}

async fn stop(mut peer: Peer) {
    peer.send(&ToWorker::Shutdown { graceful: true }).await;
    assert_eq!(peer.finish().await.expect("clean stop"), Stopped::Shutdown);
}

#[tokio::test]
async fn a_result_round_trips() {
    let mut peer = ready().await;
    let payload = json!({ "name": "cat.png", "sizes": [1, 2, 3], "nested": { "ok": true } });
    peer.task(1, "echo", &payload).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: payload
        }
    );
    peer.task(2, "add", &json!({ "a": 40, "b": 2 })).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 2,
            value: json!({ "sum": 42 })
        }
    );
    stop(peer).await;
}

/// More frames readable at once than one read batch handles (256): every one of
/// them is answered. The frame after a full batch used to be decoded and dropped,
/// and its task never answered.
#[tokio::test]
async fn a_long_run_of_readable_frames_is_answered_whole() {
    const TASKS: u64 = 1_000;
    let mut peer = ready().await;
    let payload = rmp_serde::to_vec_named(&json!("x")).expect("payload");
    let mut frames = bytes::BytesMut::new();
    for id in 1..=TASKS {
        let task = ToWorker::Task(pool_core::protocol::TaskFrame {
            id,
            task_type: "echo",
            payload: &payload,
            attempt: 1,
            timeout_ms: 60_000,
        });
        pool_core::protocol::encode_frame(&task, &mut frames, common::MAX_FRAME).expect("encode");
    }
    // About 40 KB in, 20 KB out: both fit in their pipes, so one write and then
    // the reads need no second task.
    peer.send_raw(&frames).await;
    let mut ids = Vec::new();
    while ids.len() < TASKS as usize {
        match peer.reply().await {
            Reply::Result { id, .. } => ids.push(id),
            other => panic!("expected a result, got {other:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=TASKS).collect::<Vec<_>>());
    stop(peer).await;
}

/// Replies of 64 KiB and more are written from their own buffer, after the
/// smaller replies batched before them: in one read of mixed sizes, every
/// reply arrives whole and in task order. (Two threads: the worker writes a
/// reply larger than the pipe holds with a blocking write, as to a real stdout,
/// while the test reads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_between_small_ones_arrive_whole_and_in_order() {
    const MAX: usize = 1 << 20;
    let mut peer = Peer::start_with_max_frame(common::test_worker(Gate::default()), MAX);
    peer.greet(MAX as u32).await;
    let sizes = [3, 70_000, 5, 65_536, 200_000, 1, 65_535];
    let values: Vec<serde_json::Value> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| json!(format!("{i}").repeat(n)))
        .collect();
    let payloads = values
        .iter()
        .map(|value| rmp_serde::to_vec_named(value).expect("payload"));
    peer.send_raw(&task_frames("echo", payloads, MAX)).await;
    for (i, value) in values.into_iter().enumerate() {
        assert_eq!(
            peer.reply().await,
            Reply::Result {
                id: i as u64 + 1,
                value
            },
            "reply {} ({} bytes)",
            i + 1,
            sizes[i]
        );
    }
    stop(peer).await;
}

/// `task` frames of `task_type` with these payloads, ids 1, 2, … in order.
fn task_frames(
    task_type: &str,
    payloads: impl Iterator<Item = Vec<u8>>,
    max_frame: usize,
) -> bytes::BytesMut {
    let mut frames = bytes::BytesMut::new();
    for (i, payload) in payloads.enumerate() {
        let task = ToWorker::Task(pool_core::protocol::TaskFrame {
            id: i as u64 + 1,
            task_type,
            payload: &payload,
            attempt: 1,
            timeout_ms: 60_000,
        });
        pool_core::protocol::encode_frame(&task, &mut frames, max_frame).expect("encode");
    }
    frames
}

/// A handler's large `ByteBuf` result is written from its own buffer, after its
/// `bin` marker; the replies still arrive whole and in task order. (Two threads,
/// as in the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_byte_buffers_written_from_their_own_buffer_arrive_whole_and_in_order() {
    const MAX: usize = 1 << 20;
    let mut peer = Peer::start_with_max_frame(common::test_worker(Gate::default()), MAX);
    peer.greet(MAX as u32).await;
    // Results of 64 KiB and more leave from the handler's buffer, the others
    // through the reply batch.
    let sizes = [3usize, 70_000, 5, 65_536, 200_000, 1, 65_535];
    let payloads = sizes.iter().map(|n| rmp_serde::to_vec(n).expect("payload"));
    peer.send_raw(&task_frames("bytes", payloads, MAX)).await;
    for (i, &n) in sizes.iter().enumerate() {
        let reply = peer.reply().await;
        let Reply::ResultBin { id, bytes } = reply else {
            panic!("reply {} is not a bin: {reply:?}", i + 1);
        };
        assert_eq!(id, i as u64 + 1);
        assert!(bytes == common::pattern(n), "reply {id}: {n} bytes changed");
    }
    stop(peer).await;
}

#[tokio::test]
async fn the_context_carries_attempt_and_worker_id() {
    let mut peer = ready().await;
    peer.task_attempt(5, "attempt", &json!(null), 3).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 5,
            value: json!({ "attempt": 3, "worker": "worker-7" })
        }
    );
    stop(peer).await;
}

#[tokio::test]
async fn handler_errors_keep_their_retry_hint_and_kind() {
    let mut peer = ready().await;
    peer.task(1, "fail", &json!({ "retryable": true })).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 1), ("handler", true));
    assert!(matches!(&reply, Reply::Error { message, .. } if message == "try again"));
    peer.task(2, "fail", &json!({ "retryable": false })).await;
    assert_eq!(error_of(&peer.reply().await, 2), ("invalid", false));
    stop(peer).await;
}

#[tokio::test]
async fn a_panic_becomes_an_error_and_the_worker_keeps_serving() {
    let mut peer = ready().await;
    peer.task(1, "panic", &json!(null)).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 1), ("panic", true));
    assert!(matches!(&reply, Reply::Error { message, .. } if message.contains("boom")));
    peer.echoes(2, "still here").await;
    stop(peer).await;
}

#[tokio::test]
async fn a_panic_after_the_handler_waited_becomes_an_error_and_the_worker_keeps_serving() {
    let worker = common::test_worker(Gate::default()).handle(
        "panic_later",
        |_ctx: worker_sdk::TaskContext, _: serde_json::Value| async move {
            // Not finished in its first poll: the rest runs on its own tokio task.
            tokio::task::yield_now().await;
            if true {
                panic!("late boom");
            }
            Ok::<_, worker_sdk::HandlerError>(serde_json::Value::Null)
        },
    );
    let mut peer = Peer::ready(worker, NO_HEARTBEAT).await;
    peer.task(1, "panic_later", &json!(null)).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 1), ("panic", true));
    assert!(matches!(&reply, Reply::Error { message, .. } if message.contains("late boom")));
    peer.task(2, "panic_later", &json!(null)).await;
    assert_eq!(error_of(&peer.reply().await, 2), ("panic", true));
    peer.task(3, "echo", &json!("still here")).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 3,
            value: json!("still here")
        }
    );
    stop(peer).await;
}

#[tokio::test]
async fn an_unknown_type_is_not_retryable() {
    let mut peer = ready().await;
    peer.task(1, "nope", &json!(null)).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 1), ("unknown_type", false));
    assert!(matches!(&reply, Reply::Error { message, .. } if message.contains("nope")));
    stop(peer).await;
}

#[tokio::test]
async fn bad_input_is_not_retryable() {
    let mut peer = ready().await;
    peer.task(1, "add", &json!({ "a": "forty" })).await;
    assert_eq!(error_of(&peer.reply().await, 1), ("bad_input", false));
    peer.task_bytes(2, "echo", &[0xc1], 1).await; // 0xc1 is never valid MessagePack
    assert_eq!(error_of(&peer.reply().await, 2), ("bad_input", false));
    stop(peer).await;
}

#[tokio::test]
async fn a_result_larger_than_a_frame_becomes_an_error() {
    let mut peer = ready().await;
    peer.task(1, "big", &json!(common::MAX_FRAME + 1)).await;
    let reply = peer.reply().await;
    assert_eq!(error_of(&reply, 1), ("result_too_large", false));
    peer.task(2, "big", &json!(10)).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 2,
            value: json!("x".repeat(10))
        }
    );
    stop(peer).await;
}

#[tokio::test]
async fn tasks_run_concurrently() {
    let gate = Gate::default();
    let mut peer = Peer::ready(common::test_worker(gate.clone()), NO_HEARTBEAT).await;
    peer.task(1, "gated", &json!("first")).await;
    peer.task(2, "echo", &json!("second")).await;
    // The second task finishes while the first still waits.
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 2,
            value: json!("second")
        }
    );
    gate.open();
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!("first")
        }
    );
    stop(peer).await;
}

#[tokio::test]
async fn a_raw_handler_gets_and_returns_the_bytes_as_they_travel() {
    let worker = worker_sdk::Worker::new().handle_raw(
        "raw",
        |_ctx: worker_sdk::TaskContext, payload: bytes::Bytes| async move {
            // Not decoded: the MessagePack string "hi" arrives as its three bytes.
            assert_eq!(&payload[..], b"\xa2hi");
            Ok::<_, worker_sdk::HandlerError>(bytes::Bytes::from_static(b"\xa3bye"))
        },
    );
    let mut peer = Peer::ready(worker, common::NO_HEARTBEAT).await;
    peer.task_bytes(1, "raw", b"\xa2hi", 1).await;
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!("bye")
        }
    );
    stop(peer).await;
}

/// What a [`Recording`] reader saw: for the reads made at or after `mark`
/// (bytes into the stream) that began inside a `frame`-byte frame (not at its
/// start, where its length is not known yet), those offered less room than
/// the rest of it.
#[derive(Default)]
struct ReadLog {
    delivered: usize,
    mark: Option<usize>,
    frame: usize,
    short: Vec<(usize, usize)>,
}

/// Passes reads through and notes the room each one was offered.
struct Recording<R> {
    inner: R,
    log: std::sync::Arc<std::sync::Mutex<ReadLog>>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Recording<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let room = buf.remaining();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            let mut log = self.log.lock().expect("lock");
            if let Some(mark) = log.mark {
                let into_frame = (log.delivered - mark) % log.frame;
                if into_frame > 0 && room < log.frame - into_frame {
                    let at = log.delivered;
                    log.short.push((at, room));
                }
            }
            log.delivered += read;
        }
        polled
    }
}

/// A large frame is read into a buffer of its own size once its length is
/// in, not into a buffer that starts small and grows (each growth a copy, and
/// for 1 MiB payloads fresh memory a page fault per 4 KiB). Seen from the
/// reader: once a read brought a frame's length, the next is offered room for
/// the whole rest of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_a_large_frame_is_read_into_room_for_all_of_it() {
    const MAX: usize = 1 << 20;
    const PAYLOAD: usize = 200_000;
    let log = std::sync::Arc::new(std::sync::Mutex::new(ReadLog::default()));
    let reads = std::sync::Arc::clone(&log);
    let worker = worker_sdk::Worker::new().handle_raw(
        "drop",
        |_ctx: worker_sdk::TaskContext, _payload: bytes::Bytes| async move {
            Ok::<_, worker_sdk::HandlerError>(bytes::Bytes::from_static(b"\xc0"))
        },
    );
    let mut peer =
        Peer::start_reading_through(worker, MAX, |inner| Recording { inner, log: reads });
    peer.greet(MAX as u32).await;
    // A MessagePack bin 32 (the raw handler does not decode it).
    let mut payload = vec![0xc6];
    payload.extend_from_slice(&(PAYLOAD as u32).to_be_bytes());
    payload.resize(5 + PAYLOAD, 7);
    for id in 1..=5 {
        let mut frame = bytes::BytesMut::new();
        let task = ToWorker::Task(pool_core::protocol::TaskFrame {
            id,
            task_type: "drop",
            payload: &payload,
            attempt: 1,
            timeout_ms: 60_000,
        });
        pool_core::protocol::encode_frame(&task, &mut frame, MAX).expect("encode");
        if id == 2 {
            // From here on, the frames are read after a first one of this size.
            let mut log = log.lock().expect("lock");
            log.mark = Some(log.delivered);
            log.frame = frame.len();
        }
        peer.send_raw(&frame).await;
        assert_eq!(
            peer.reply().await,
            Reply::Result {
                id,
                value: serde_json::Value::Null
            }
        );
    }
    // Every task frame was read (the shutdown's bytes come after these).
    let (read, short) = {
        let log = log.lock().expect("lock");
        let mark = log.mark.expect("marked");
        (log.delivered - mark == 4 * log.frame, log.short.clone())
    };
    stop(peer).await;
    assert!(read, "the reader saw every task frame");
    assert!(
        short.is_empty(),
        "reads inside a frame offered less room than its rest (at, room): {short:?}"
    );
}

/// A typed handler that takes a large input as a `ByteBuf` is handed the
/// memory its frame was read into, not a copy: that buffer holds the frame's
/// header too, so it has room beyond the payload, where a copy has exactly
/// the payload's length. A small input is decoded by serde, into a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_byte_buf_input_is_the_memory_its_frame_was_read_into() {
    const MAX: usize = 1 << 20;
    let worker = worker_sdk::Worker::new().handle(
        "own",
        |_ctx: worker_sdk::TaskContext, input: serde_bytes::ByteBuf| async move {
            Ok::<_, worker_sdk::HandlerError>(input.capacity() > input.len())
        },
    );
    let mut peer = Peer::start_reading_through(worker, MAX, |inner| inner);
    peer.greet(MAX as u32).await;
    for (id, len, own) in [(1, 200_000, true), (2, 10, false), (3, 300_000, true)] {
        let payload =
            rmp_serde::to_vec(&serde_bytes::ByteBuf::from(vec![1u8; len])).expect("encode");
        let mut frame = bytes::BytesMut::new();
        let task = ToWorker::Task(pool_core::protocol::TaskFrame {
            id,
            task_type: "own",
            payload: &payload,
            attempt: 1,
            timeout_ms: 60_000,
        });
        pool_core::protocol::encode_frame(&task, &mut frame, MAX).expect("encode");
        peer.send_raw(&frame).await;
        assert_eq!(
            peer.reply().await,
            Reply::Result {
                id,
                value: json!(own)
            },
            "{len} bytes"
        );
    }
    stop(peer).await;
}

/// An empty payload means nil (`docs/PROTOCOL.md`, "Payload convention"): a
/// `()` or `Option<_>` input takes it, and a `Value` one reads `null`.
#[tokio::test]
async fn an_empty_payload_is_nil_to_a_typed_handler() {
    let worker = common::test_worker(Gate::default())
        .handle("unit", |_ctx: worker_sdk::TaskContext, (): ()| async move {
            Ok::<_, worker_sdk::HandlerError>("no input")
        })
        .handle(
            "optional",
            |_ctx: worker_sdk::TaskContext, input: Option<String>| async move {
                Ok::<_, worker_sdk::HandlerError>(input.unwrap_or_else(|| "none".into()))
            },
        );
    let mut peer = Peer::ready(worker, NO_HEARTBEAT).await;
    for (id, task_type, value) in [
        (1, "unit", json!("no input")),
        (2, "optional", json!("none")),
        (3, "echo", json!(null)),
    ] {
        peer.task_bytes(id, task_type, &[], 1).await;
        assert_eq!(
            peer.reply().await,
            Reply::Result { id, value },
            "{task_type}"
        );
    }
    // A type that nil is not still refuses it.
    peer.task_bytes(4, "big", &[], 1).await;
    assert_eq!(error_of(&peer.reply().await, 4), ("bad_input", false));
    stop(peer).await;
}

/// `timeout_ms` 0 means no limit: no time limit, nothing remaining to count,
/// and a deadline far ahead rather than at the task's start.
#[tokio::test]
async fn a_timeout_of_0_is_no_deadline() {
    let worker = worker_sdk::Worker::new().handle(
        "limits",
        |ctx: worker_sdk::TaskContext, _: serde_json::Value| async move {
            let far = std::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
            Ok::<_, worker_sdk::HandlerError>(json!({
                "limit_ms": ctx.time_limit().map(|d| d.as_millis() as u64),
                "remaining": ctx.remaining().is_some(),
                "deadline_past_a_day": ctx.deadline() > far,
            }))
        },
    );
    let mut peer = Peer::ready(worker, NO_HEARTBEAT).await;
    for (id, timeout_ms) in [(1, 0), (2, 60_000)] {
        peer.send(&ToWorker::Task(pool_core::protocol::TaskFrame {
            id,
            task_type: "limits",
            payload: &[],
            attempt: 1,
            timeout_ms,
        }))
        .await;
    }
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 1,
            value: json!({ "limit_ms": null, "remaining": false, "deadline_past_a_day": true })
        }
    );
    assert_eq!(
        peer.reply().await,
        Reply::Result {
            id: 2,
            value: json!({ "limit_ms": 60_000, "remaining": true, "deadline_past_a_day": false })
        }
    );
    stop(peer).await;
}

/// An error reply too large for a frame is still sent within it: its message
/// cut (kind and retry hint kept), or, when even an empty message would not
/// fit, with kind `handler` and the same retry hint (as the Python and Node
/// SDKs do), never left unanswered.
#[tokio::test]
async fn an_error_reply_too_large_for_a_frame_is_cut_or_replaced_never_dropped() {
    const MAX: usize = 1024;
    let worker = common::test_worker(Gate::default()).handle(
        "huge_error",
        |_ctx: worker_sdk::TaskContext, (kind, chars, retryable): (usize, usize, bool)| async move {
            // Two bytes a character: a cut at a byte count may fall inside one.
            let message = "é".repeat(chars);
            let error = if retryable {
                worker_sdk::HandlerError::retryable(message)
            } else {
                worker_sdk::HandlerError::fatal(message)
            };
            Err::<(), _>(error.with_kind("k".repeat(kind)))
        },
    );
    let mut peer = Peer::start_with_max_frame(worker, MAX);
    peer.greet(MAX as u32).await;
    // A long message: cut on a character boundary, kind and hint kept.
    peer.task(1, "huge_error", &json!([5, 2000, false])).await;
    match peer.reply().await {
        Reply::Error {
            id: 1,
            kind,
            message,
            retryable: false,
        } => {
            assert_eq!(kind, "kkkkk");
            assert!(message.starts_with("éé"), "{message}");
            assert!(
                message.ends_with(" … (cut to fit a frame of 1024 bytes)"),
                "{message}"
            );
        }
        other => panic!("expected task 1's cut error, got {other:?}"),
    }
    // A kind that alone is over the frame: kind `handler`, the hint kept.
    for (id, retryable) in [(2, true), (3, false)] {
        peer.task(id, "huge_error", &json!([MAX, 4, retryable]))
            .await;
        assert_eq!(
            peer.reply().await,
            Reply::Error {
                id,
                kind: "handler".into(),
                message: "the error reply does not fit in a frame".into(),
                retryable
            }
        );
    }
    peer.echoes(4, "still serving").await;
    stop(peer).await;
}
