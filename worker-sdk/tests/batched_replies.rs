//! Batched replies (`Worker::hold_replies`): the replies of tasks that finish at
//! once leave in one write per batch, `ready` says so, and a handler that runs
//! past the hold has the replies before it written before the next task starts.

mod common;

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use pool_core::protocol::{
    decode_from_worker, encode_frame, FrameCodec, FromWorker, TaskFrame, ToWorker,
};
use tokio_util::codec::Decoder;
use worker_sdk::{HandlerError, Stopped, TaskContext, Worker};

use common::MAX_FRAME;

/// A writer that keeps each write call's bytes apart.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").push(buf.to_vec());
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.write(&joined)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What one write carried: `ready` as 0, a result as its task id.
fn frames_of(write: &[u8]) -> Vec<u64> {
    let mut buf = BytesMut::from(write);
    let mut codec = FrameCodec::new(MAX_FRAME);
    let mut ids = Vec::new();
    while let Some(body) = codec.decode(&mut buf).expect("whole frames") {
        match decode_from_worker(&body).expect("a worker message") {
            FromWorker::Ready { .. } => ids.push(0),
            FromWorker::Result { id, .. } => ids.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(buf.is_empty(), "a write ends on a frame boundary");
    ids
}

/// Whether the `ready` in the first write says the worker batches replies.
fn declares_batching(first_write: &[u8]) -> bool {
    let mut buf = BytesMut::from(first_write);
    let body = FrameCodec::new(MAX_FRAME)
        .decode(&mut buf)
        .expect("a frame")
        .expect("whole");
    match decode_from_worker(&body).expect("ready") {
        FromWorker::Ready {
            batches_replies, ..
        } => batches_replies,
        other => panic!("expected ready, got {other:?}"),
    }
}

/// `hello` (concurrency 1, no heartbeats) and the tasks `(id, type)`, as one input.
fn input(tasks: &[(u64, &str)]) -> Vec<u8> {
    let mut buf = BytesMut::from(&common::hello_with_concurrency(1)[..]);
    for &(id, task_type) in tasks {
        let task = ToWorker::Task(TaskFrame {
            id,
            task_type,
            payload: &[0xc0],
            attempt: 1,
            timeout_ms: 60_000,
        });
        encode_frame(&task, &mut buf, MAX_FRAME).expect("task encodes");
    }
    buf.to_vec()
}

/// Serves `tasks` with `worker` until the input ends; the writes it made.
async fn serve(worker: Worker, tasks: &[(u64, &str)]) -> Vec<Vec<u8>> {
    let writes = Writes::default();
    let input = input(tasks);
    let stopped = worker
        .handle(
            "echo",
            |_ctx: TaskContext, v: serde_json::Value| async move { Ok::<_, HandlerError>(v) },
        )
        .handle(
            "slow",
            |_ctx: TaskContext, v: serde_json::Value| async move {
                // Holds its thread, as CPU-bound work outside spawn_blocking does.
                std::thread::sleep(Duration::from_millis(20));
                Ok::<_, HandlerError>(v)
            },
        )
        .serve(&input[..], writes.clone())
        .await
        .expect("serves");
    assert_eq!(stopped, Stopped::Disconnected);
    let written = writes.0.lock().expect("lock").clone();
    written
}

#[tokio::test]
async fn replies_of_tasks_read_together_leave_in_one_write() {
    let worker = Worker::new().hold_replies(Duration::from_secs(60));
    let writes = serve(worker, &[(1, "echo"), (2, "echo"), (3, "echo")]).await;
    assert!(declares_batching(&writes[0]), "ready says batches_replies");
    let frames: Vec<Vec<u64>> = writes.iter().map(|w| frames_of(w)).collect();
    assert_eq!(frames, [vec![0], vec![1, 2, 3]]);
}

#[tokio::test]
async fn without_a_hold_each_reply_leaves_before_the_next_task_starts() {
    let worker = Worker::new().hold_replies(Duration::ZERO);
    let writes = serve(worker, &[(1, "echo"), (2, "echo"), (3, "echo")]).await;
    assert!(
        !declares_batching(&writes[0]),
        "ready says nothing of batches"
    );
    let frames: Vec<Vec<u64>> = writes.iter().map(|w| frames_of(w)).collect();
    assert_eq!(frames, [vec![0], vec![1], vec![2], vec![3]]);
}

#[tokio::test]
async fn replies_held_past_the_hold_are_written_before_the_next_task_starts() {
    // The slow task holds its thread for 20 ms, past the 5 ms hold: the replies
    // before it and its own are written before task 3 starts.
    let worker = Worker::new().hold_replies(Duration::from_millis(5));
    let writes = serve(worker, &[(1, "echo"), (2, "slow"), (3, "echo")]).await;
    let frames: Vec<Vec<u64>> = writes.iter().map(|w| frames_of(w)).collect();
    let with_3 = frames
        .iter()
        .find(|ids| ids.contains(&3))
        .expect("task 3 was answered");
    assert_eq!(with_3, &[3], "task 3's reply left on its own: {frames:?}");
    let all: Vec<u64> = frames.concat();
    assert_eq!(all, [0, 1, 2, 3], "every reply once, in order");
}

/// A task's id, and the tasks whose replies were written as it started.
type Seen = (u64, Vec<u64>);

/// The tasks whose replies `writes` holds, `ready` left out.
fn answered(writes: &Writes) -> Vec<u64> {
    let writes = writes.0.lock().expect("lock");
    let mut ids: Vec<u64> = writes.iter().flat_map(|w| frames_of(w)).collect();
    ids.retain(|&id| id != 0);
    ids
}

#[tokio::test]
async fn a_task_of_a_type_seen_blocking_starts_once_the_replies_before_it_are_written() {
    // Task 1 shows `block` blocking (it holds its thread for 20 ms, past the
    // 5 ms hold); task 3 is then started only after task 2's reply is written,
    // instead of holding it for as long as it blocks.
    let writes = Writes::default();
    let seen = writes.clone();
    let at_start: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let noted = Arc::clone(&at_start);
    let input = input(&[(1, "block"), (2, "echo"), (3, "block"), (4, "echo")]);
    let stopped = Worker::new()
        .hold_replies(Duration::from_millis(5))
        .handle(
            "echo",
            |_ctx: TaskContext, v: serde_json::Value| async move { Ok::<_, HandlerError>(v) },
        )
        .handle("block", move |ctx: TaskContext, v: serde_json::Value| {
            // What the manager has as this task starts.
            let answered = answered(&seen);
            noted.lock().expect("lock").push((ctx.id(), answered));
            // Holds its thread, as CPU-bound work outside spawn_blocking does.
            std::thread::sleep(Duration::from_millis(20));
            async move { Ok::<_, HandlerError>(v) }
        })
        .serve(&input[..], writes.clone())
        .await
        .expect("serves");
    assert_eq!(stopped, Stopped::Disconnected);
    let at_start = at_start.lock().expect("lock").clone();
    assert_eq!(
        at_start,
        [(1, vec![]), (3, vec![1, 2])],
        "the replies written as each block task started"
    );
    assert_eq!(
        answered(&writes),
        [1, 2, 3, 4],
        "every reply once, in order"
    );
}
