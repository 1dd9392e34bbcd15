//! The feeder of `cortex-pool run`: reads task lines, parses them and submits
//! them to the pool in batches.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use pool_core::{CompletionSink, Pool};
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};

use super::collect::Accepted;
use super::input;
use super::interrupt::{self, Phase};
use super::output::{self, Line};
use super::reader::{LineReader, RawLine};

/// How many bytes of input one read takes in (a read of a file is a hop to a
/// blocking thread and back).
const READ_BUFFER: usize = 64 * 1024;

/// The most input lines submitted to the pool in one call.
const SUBMIT_BATCH: usize = 128;

/// Where the feeder hands its work on.
pub(crate) struct Stages<'a> {
    /// The pool the tasks go to.
    pub(crate) pool: &'a Pool,
    /// Where the outcomes of the tasks it submits go (the collector reads them).
    pub(crate) done: &'a CompletionSink,
    /// The lines of input that are not tasks, and of tasks the pool refused.
    pub(crate) lines: &'a mpsc::Sender<Vec<Line>>,
    /// The tasks the pool accepted, for the collector.
    pub(crate) accepted: &'a mpsc::Sender<Vec<Accepted>>,
}

/// Reads task lines and submits them (waiting for queue room): the accepted
/// tasks go to the collector, a line for each input line that is not a task (or
/// whose task the pool refused) straight to the writer. Every channel is
/// bounded, so a slow standard output stops the reading.
///
/// Lines that are already read in are parsed and submitted together (up to
/// [`SUBMIT_BATCH`]): the batch goes to the pool when the next line is not there
/// yet, or when it is full.
///
/// Returns how the reading ended: [`Reading::Stopped`] when a signal stopped it
/// before the end of the input.
pub(crate) async fn feed(
    mut phase: watch::Receiver<Phase>,
    to: Stages<'_>,
    tasks: Box<dyn AsyncRead + Unpin + Send>,
    max_line_bytes: usize,
    submitted: Arc<AtomicU64>,
) -> Reading {
    let lines = to.lines;
    let mut reader = LineReader::new(BufReader::with_capacity(READ_BUFFER, tasks), max_line_bytes);
    let mut ids = input::Ids::default();
    let mut line_no = 0u64;
    let mut batch = Vec::with_capacity(SUBMIT_BATCH);
    let reading = loop {
        let next = {
            let read = reader.next_line();
            tokio::pin!(read);
            match poll_once(read.as_mut()).await {
                Poll::Ready(Ok(None)) => break Reading::Whole,
                Poll::Ready(_) if *phase.borrow() >= Phase::Draining => break Reading::Stopped,
                Poll::Ready(next) => next,
                Poll::Pending => {
                    submit(&to, &mut batch).await;
                    // A line (or the end) that is there comes first: the loop
                    // stops at its next line when the phase moved on.
                    tokio::select! {
                        biased;
                        next = &mut read => next,
                        () = interrupt::reached(&mut phase, Phase::Draining) => break Reading::Stopped,
                    }
                }
            }
        };
        let raw = match next {
            Ok(Some(raw)) => raw,
            Ok(None) => break Reading::Whole,
            Err(e) => {
                line_no += 1;
                submitted.fetch_add(1, Relaxed);
                let message = format!("line {line_no} is unreadable: {e}");
                let _ = lines.send(vec![output::invalid(line_no, &message)]).await;
                break Reading::Unreadable;
            }
        };
        line_no += 1;
        let bytes = match raw {
            RawLine::Bytes(bytes) => bytes,
            RawLine::TooLong(len) => {
                submitted.fetch_add(1, Relaxed);
                ids.use_for_invalid(None, line_no);
                let message = format!(
                    "line {line_no} is {len} bytes, longer than --max-line-bytes ({max_line_bytes})"
                );
                let _ = lines.send(vec![output::invalid(line_no, &message)]).await;
                continue;
            }
        };
        let bytes = if line_no == 1 {
            input::without_bom(&bytes)
        } else {
            &bytes
        };
        if bytes.trim_ascii().is_empty() {
            continue;
        }
        submitted.fetch_add(1, Relaxed);
        match input::parse_line(bytes, line_no, &mut ids) {
            Ok(parsed) => batch.push(parsed),
            Err(invalid) => {
                let line =
                    output::invalid_with_id(invalid.id.as_deref(), line_no, &invalid.message);
                let _ = lines.send(vec![line]).await;
                continue;
            }
        }
        if batch.len() >= SUBMIT_BATCH {
            submit(&to, &mut batch).await;
        }
    };
    submit(&to, &mut batch).await;
    reading
}

/// How the reading of the task lines ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// At the end of the input.
    Whole,
    /// At a line that could not be read (it has its `invalid` line).
    Unreadable,
    /// A signal stopped it before the end of the input.
    Stopped,
}

/// Polls `future` once: its output if it is ready now.
async fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        Poll::Ready(match future.take() {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        })
    })
    .await
}

/// Submits the parsed lines of `batch` in one call (emptying it): the accepted
/// ones go to the collector (their outcomes reach it through `done`), a line for
/// each refused one to the writer.
async fn submit(to: &Stages<'_>, batch: &mut Vec<input::TaskLine>) {
    if batch.is_empty() {
        return;
    }
    let since = Instant::now();
    let mut ids = Vec::with_capacity(batch.len());
    let mut tasks = Vec::with_capacity(batch.len());
    for line in batch.drain(..) {
        ids.push(line.id);
        tasks.push(line.task);
    }
    let results = to.pool.submit_each_to(tasks, to.done).await;
    let mut taken = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(task) => taken.push(Accepted { task, id, since }),
            Err(error) => refused.push(output::refused(&id, &error)),
        }
    }
    if !refused.is_empty() {
        let _ = to.lines.send(refused).await;
    }
    if !taken.is_empty() {
        let _ = to.accepted.send(taken).await;
    }
}
