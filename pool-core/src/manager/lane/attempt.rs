//! Writing a task to a worker: the one way an attempt starts, whether the actor
//! hands the task to an idle worker or a lane refills its own worker from the
//! queue. The frame is encoded into the book's batch and the attempt added to
//! the book under the same lock, and a batch is sent under that lock too, so
//! the worker reads its tasks in the order the book lists them.

use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;

use super::super::actor::{Pending, Running, Shared};
use super::super::events::PoolEvent;
use super::{deadline_after, Book, Input};
use crate::protocol::{self, TaskFrame};

/// Payloads this large are written from the caller's own buffer instead of
/// being copied into the worker's frame batch (a copy of a large payload costs
/// more than a separate write).
pub(crate) const APART_MIN: usize = 64 * 1024;

/// The worker an attempt is written to, and the pool's settings it needs.
pub(crate) struct Target<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) num: u64,
    pub(crate) name: &'a str,
    pub(crate) concurrency: usize,
    pub(crate) default_timeout: Duration,
    pub(crate) max_frame: usize,
}

/// A task whose frame could not be encoded (too large for `max_frame`), with
/// the reason: to be failed.
pub(crate) struct Unwritable {
    pub(crate) pending: Pending,
    pub(crate) reason: String,
}

/// An attempt written into the book's batch.
pub(crate) struct Written {
    /// When it times out, if it runs at once (the worker's deadline timer must
    /// fire by then); `None` while it waits in the worker's prefetch window.
    pub(crate) deadline: Option<Instant>,
    /// It gave back the queue slot it held since its submission.
    pub(crate) freed_slot: bool,
}

impl Book {
    /// Writes `pending`'s next attempt into the batch and adds it to the book.
    /// A task whose frame cannot be encoded comes back with the reason; the
    /// book is then unchanged.
    pub(crate) fn start_attempt(
        &mut self,
        target: &Target<'_>,
        mut pending: Pending,
        now: Instant,
    ) -> Result<Written, Box<Unwritable>> {
        let timeout = pending.task.timeout.unwrap_or(target.default_timeout);
        let attempt = pending.attempts + 1;
        let number = pending.task.attempts_before.saturating_add(attempt);
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if let Err(reason) = self.encode(&pending, number, timeout_ms, target.max_frame) {
            return Err(Box::new(Unwritable { pending, reason }));
        }
        let reused = self.dispatched() > 0;
        let waited = now.duration_since(pending.queued_at);
        self.tally.dispatched(reused, waited.as_micros() as u64);
        pending.attempts = attempt;
        let freed_slot = std::mem::take(&mut pending.holds_queue_slot);
        pending.last_worker = u32::try_from(target.num).ok();
        let id = pending.id;
        let runs_now = self.len() < target.concurrency;
        let deadline = runs_now.then(|| deadline_after(now, timeout));
        target.shared.emit_routine(|| PoolEvent::TaskAssigned {
            task: id,
            worker: target.name.to_owned(),
            attempt,
            queued_ms: waited.as_millis() as u64,
        });
        self.push(Running {
            pending,
            sent: now,
            run_start: runs_now.then_some(now),
            deadline,
            cancel_requested: false,
            reused,
            withdrawn: false,
        });
        Ok(Written {
            deadline,
            freed_slot,
        })
    }

    /// Hands the batch, piece by piece, to `send` (nothing when it is empty):
    /// a payload written apart goes between the bytes before and after it.
    pub(crate) fn flush(&mut self, mut send: impl FnMut(Bytes)) {
        if self.outbuf.is_empty() {
            return;
        }
        let mut batch = self.outbuf.split().freeze();
        let mut sent = 0;
        for (at, payload) in self.apart.drain(..) {
            send(batch.split_to(at - sent));
            send(payload);
            sent = at;
        }
        send(batch);
    }

    /// Appends a frame the actor made (a `cancel`, a `shutdown`) to the batch,
    /// after the tasks already in it; dropped once the input is not open.
    pub(crate) fn push_frame(&mut self, frame: &[u8]) {
        if self.input == Input::Open {
            self.outbuf.extend_from_slice(frame);
        }
    }

    /// The actor closes the worker's input: the writer ends it after the
    /// batch. `false` when the actor had closed it before.
    pub(crate) fn close_input(&mut self) -> bool {
        let (next, now) = match self.input {
            Input::Open => (Input::Closing, true),
            Input::Gone => (Input::Closed, true),
            closed @ (Input::Closing | Input::Closed) => (closed, false),
        };
        self.input = next;
        now
    }

    /// The writer stopped: nothing more reaches the worker.
    pub(crate) fn input_gone(&mut self) {
        self.input = match self.input {
            Input::Open | Input::Gone => Input::Gone,
            Input::Closing | Input::Closed => Input::Closed,
        };
        // What waits in the batch has nowhere to go.
        self.outbuf.clear();
        self.apart.clear();
    }

    /// Whether frames wait in the batch.
    pub(crate) fn has_batch(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// Whether the batch is small enough for a caller to write it on its own
    /// thread ([`LinkOutput::write_now`](crate::manager::link_output::LinkOutput::write_now)):
    /// at most [`APART_MIN`] bytes, with no payload written apart.
    pub(crate) fn batch_is_small(&self) -> bool {
        self.apart.is_empty() && self.outbuf.len() <= APART_MIN
    }

    /// Encodes the task frame of `pending`'s attempt `number` into the batch:
    /// whole, or around a payload of [`APART_MIN`] bytes or more, which is then
    /// written from its own buffer. The batch is left as it was on error.
    fn encode(
        &mut self,
        pending: &Pending,
        number: u32,
        timeout_ms: u64,
        max_frame: usize,
    ) -> Result<(), String> {
        let task = &pending.task;
        let frame = TaskFrame {
            id: pending.id,
            task_type: &task.task_type,
            payload: &task.payload,
            attempt: number,
            timeout_ms,
        };
        if task.payload.len() < APART_MIN {
            return protocol::encode_task(&frame, &mut self.outbuf, max_frame)
                .map_err(|e| e.to_string());
        }
        let tail = protocol::encode_task_around(&frame, &mut self.outbuf, max_frame)
            .map_err(|e| e.to_string())?;
        self.apart.push((self.outbuf.len(), task.payload.clone()));
        self.outbuf.extend_from_slice(tail.bytes());
        Ok(())
    }
}
