//! Writing a task to a worker: the one way an attempt starts, whether the actor
//! hands the task to an idle worker or a lane refills its own worker from the
//! queue. The frame is encoded into the book's batch and the attempt added to
//! the book under the same lock, and a batch is sent under that lock too, so
//! the worker reads its tasks in the order the book lists them.

use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;

use super::super::actor::{CancelAsked, Pending, RanOn, Running, Shared};
use super::super::clock::Now;
use super::super::dispatch::settle_failed;
use super::super::events::PoolEvent;
use super::super::failure::Failure;
use super::super::handle::FinalStatus;
use super::{deadline_after, Book, Input};
use crate::protocol::{self, TaskFrame};

/// Payloads this large are written from the caller's own buffer instead of
/// being copied into the worker's frame batch (a copy of a large payload costs
/// more than a separate write).
pub(crate) const APART_MIN: usize = 64 * 1024;

/// The size of a buffer the batch's frames are encoded into (a larger frame
/// gets a buffer of its size).
const BATCH_BUFFER: usize = 64 * 1024;

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

impl Unwritable {
    /// Fails the task, its frame unwritable, with the reason (a task that
    /// still holds its queue slot gives it back).
    pub(crate) fn settle(self, shared: &Shared) {
        let failure = Failure::Protocol {
            message: self.reason,
        };
        settle_failed(shared, self.pending, FinalStatus::Failed, failure);
    }
}

/// An attempt written into the book's batch.
pub(crate) struct Written {
    /// When it times out, if it runs at once (the worker's deadline timer must
    /// fire by then); `None` while it waits in the worker's prefetch window.
    pub(crate) deadline: Option<Instant>,
    /// It gave back the queue slot it held since its submission.
    pub(crate) freed_slot: bool,
}

/// An attempt whose frame [`Book::write_attempt`] put in the batch, for
/// [`Book::count_attempt`] to count and [`Book::add_attempt`] to add with its
/// task.
pub(crate) struct Framed {
    /// The attempt's number among the task's attempts in this pool.
    attempt: u32,
    timeout: Duration,
    /// Where its frame starts in the stream written to the worker.
    frame_start: u64,
    /// The worker had been written attempts before this one.
    reused: bool,
}

/// Where the batch ended before a frame was written into it: what
/// [`Book::unwrite`] cuts it back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchEnd {
    /// How many parts the batch had; they stay as they were.
    parts: usize,
    /// How many bytes the last buffer held.
    outbuf: usize,
    /// The stream position (`batched`) then.
    batched: u64,
}

impl Book {
    /// Writes `pending`'s next attempt into the batch and adds it to the book.
    /// A task whose frame cannot be encoded comes back with the reason; the
    /// book is then unchanged.
    #[inline]
    pub(crate) fn start_attempt(
        &mut self,
        target: &Target<'_>,
        pending: Pending,
        now: Now,
    ) -> Result<Written, Box<Unwritable>> {
        match self.write_attempt(target, &pending) {
            Ok(framed) => {
                self.count_attempt(target, &framed, &pending, now);
                Ok(self.add_attempt(target, framed, pending, now))
            }
            Err(reason) => Err(Box::new(Unwritable { pending, reason })),
        }
    }

    /// The first step of [`start_attempt`](Self::start_attempt): encodes the
    /// frame of `pending`'s next attempt into the batch, while the task stays
    /// where it is (a refill's taken tasks, or the desk's hand, from where it
    /// goes back to the queue if the pool's code panics before it is in the
    /// book). [`count_attempt`](Self::count_attempt) and
    /// [`add_attempt`](Self::add_attempt) must follow under the same lock: a
    /// frame whose task is not in the book would reach the worker unknown to
    /// the pool. On error, the reason, and nothing was added to the batch.
    #[inline(always)]
    pub(crate) fn write_attempt(
        &mut self,
        target: &Target<'_>,
        pending: &Pending,
    ) -> Result<Framed, String> {
        let timeout = pending.task.timeout().unwrap_or(target.default_timeout);
        let attempt = pending.attempts + 1;
        let number = pending.task.attempts_before.saturating_add(attempt);
        // Never 0, which a worker reads as no limit: a timeout under a
        // millisecond (or of none at all) is sent as 1 ms.
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let frame_start = self.batched;
        let reused = self.dispatched() > 0;
        self.encode(pending, number, timeout_ms, target.max_frame)?;
        Ok(Framed {
            attempt,
            timeout,
            frame_start,
            reused,
        })
    }

    /// The second step of [`start_attempt`](Self::start_attempt): counts the
    /// attempt [`write_attempt`](Self::write_attempt) framed for `pending` as
    /// dispatched at `now` and announces it (`TaskAssigned`), while the task
    /// is still where it was: whatever of the start may panic (a bug) happens
    /// before the task leaves its holder's hands.
    #[inline(always)]
    pub(crate) fn count_attempt(
        &mut self,
        target: &Target<'_>,
        framed: &Framed,
        pending: &Pending,
        now: Now,
    ) {
        let waited_ns = now.moment.nanos_since(pending.queued_at);
        self.tally.dispatched(framed.reused, waited_ns / 1_000);
        let (id, attempt) = (pending.id, framed.attempt);
        target.shared.emit_routine(|| PoolEvent::TaskAssigned {
            task: id,
            worker: target.name.to_owned(),
            attempt,
            queued_ms: waited_ns / 1_000_000,
        });
    }

    /// The last step of [`start_attempt`](Self::start_attempt): adds
    /// `pending`, whose attempt [`write_attempt`](Self::write_attempt) framed
    /// in the batch and [`count_attempt`](Self::count_attempt) counted, to the
    /// book, started at `now`. Nothing here panics (stores, and a push whose
    /// only failure, running out of memory, aborts), so a task handed in is
    /// in the book once it returns.
    #[inline(always)]
    pub(crate) fn add_attempt(
        &mut self,
        target: &Target<'_>,
        framed: Framed,
        mut pending: Pending,
        now: Now,
    ) -> Written {
        let Framed {
            attempt,
            timeout,
            frame_start,
            reused,
        } = framed;
        pending.attempts = attempt;
        let freed_slot = std::mem::take(&mut pending.holds_queue_slot);
        pending.worker_before = pending.last_worker;
        pending.last_worker = RanOn::new(target.num);
        let runs_now = self.len() < target.concurrency;
        let deadline = runs_now.then(|| deadline_after(now.instant, timeout));
        self.push(Running {
            pending,
            sent: now.moment,
            frame_start,
            run_start: runs_now.then_some(now.moment),
            deadline,
            cancel: CancelAsked::No,
            reused,
            timed_out: None,
        });
        Written {
            deadline,
            freed_slot,
        }
    }

    /// Where the batch ends now, for [`unwrite`](Self::unwrite) to cut it
    /// back to.
    #[inline(always)]
    pub(crate) fn batch_end(&self) -> BatchEnd {
        BatchEnd {
            parts: self.parts.len(),
            outbuf: self.outbuf.len(),
            batched: self.batched,
        }
    }

    /// Cuts the batch back to where it ended at `end`, taken under the same
    /// lock: the frame (whole or in part) of a task that will not be in the
    /// book, left by a panic while the desk started it, never reaches the
    /// worker, and the frames before it do. Since `end` the batch only grew
    /// at its end: its first `end.parts` parts are as they were, and the
    /// bytes the last buffer held then are now either still there or at the
    /// start of the part that buffer was closed as.
    pub(crate) fn unwrite(&mut self, end: BatchEnd) {
        let kept: usize = self.parts[..end.parts.min(self.parts.len())]
            .iter()
            .map(Bytes::len)
            .sum::<usize>()
            + end.outbuf;
        let now: usize = self.parts.iter().map(Bytes::len).sum::<usize>() + self.outbuf.len();
        let mut cut = now.saturating_sub(kept);
        let from_outbuf = cut.min(self.outbuf.len());
        self.outbuf.truncate(self.outbuf.len() - from_outbuf);
        cut -= from_outbuf;
        while cut > 0 {
            let Some(mut last) = self.parts.pop() else {
                break;
            };
            if last.len() > cut {
                last.truncate(last.len() - cut);
                self.parts.push(last);
                break;
            }
            cut -= last.len();
        }
        self.batched = end.batched;
    }

    /// Hands the batch, part by part, to `send` (nothing when it is empty).
    pub(crate) fn flush(&mut self, mut send: impl FnMut(Bytes)) {
        for part in self.parts.drain(..) {
            send(part);
        }
        if !self.outbuf.is_empty() {
            send(self.outbuf.split().freeze());
        }
    }

    /// Appends a frame the actor made (a `cancel`, a `shutdown`) to the batch,
    /// after the tasks already in it; dropped once the input is not open.
    pub(crate) fn push_frame(&mut self, frame: &[u8]) {
        if self.input == Input::Open {
            self.room_for(frame.len());
            self.outbuf.extend_from_slice(frame);
            self.batched += frame.len() as u64;
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
        self.parts.clear();
    }

    /// Whether frames wait in the batch.
    pub(crate) fn has_batch(&self) -> bool {
        !self.outbuf.is_empty() || !self.parts.is_empty()
    }

    /// Whether the batch is small enough for a caller to write it on its own
    /// thread ([`LinkOutput::write_now`](crate::manager::link_output::LinkOutput::write_now)):
    /// at most [`APART_MIN`] bytes in all (so no payload written apart),
    /// however many buffers hold them.
    pub(crate) fn batch_is_small(&self) -> bool {
        self.parts.iter().map(Bytes::len).sum::<usize>() + self.outbuf.len() <= APART_MIN
    }

    /// Makes room for `bytes` more in the batch's last buffer. A buffer too
    /// full for them is closed as a part of the batch and a new one started,
    /// so a batch that grows is never copied into a larger buffer.
    fn room_for(&mut self, bytes: usize) {
        if self.outbuf.capacity() - self.outbuf.len() >= bytes {
            return;
        }
        if !self.outbuf.is_empty() {
            self.parts.push(self.outbuf.split().freeze());
        }
        self.outbuf.reserve(bytes.max(BATCH_BUFFER));
    }

    /// Encodes the task frame of `pending`'s attempt `number` into the batch:
    /// whole, or around a payload of [`APART_MIN`] bytes or more, which is then
    /// written from its own buffer. On error nothing is added to the batch
    /// (the buffer it would have gone in may have been closed as a part).
    #[inline(always)]
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
        let fixed = protocol::TASK_FRAME_FIXED_MAX + task.task_type.len();
        if task.payload.len() < APART_MIN {
            self.room_for(fixed + task.payload.len());
            let before = self.outbuf.len();
            protocol::encode_task(&frame, &mut self.outbuf, max_frame)
                .map_err(|e| e.to_string())?;
            self.batched += (self.outbuf.len() - before) as u64;
            return Ok(());
        }
        self.room_for(fixed);
        let before = self.outbuf.len();
        let tail = protocol::encode_task_around(&frame, &mut self.outbuf, max_frame)
            .map_err(|e| e.to_string())?;
        let head = self.outbuf.len() - before;
        self.parts.push(self.outbuf.split().freeze());
        self.parts.push(task.payload.clone());
        self.outbuf.extend_from_slice(tail.bytes());
        self.batched += (head + task.payload.len() + tail.bytes().len()) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::balance::FirstAvailable;
    use crate::manager::actor::EventChannels;
    use crate::manager::clock::PoolClock;
    use crate::manager::ledger::Answer;
    use crate::manager::metrics::Stats;
    use crate::protocol::{encode_task, DEFAULT_MAX_FRAME};
    use crate::task::Task;
    use crate::PoolConfig;

    fn shared() -> Shared {
        Shared::new(
            &PoolConfig::default(),
            EventChannels::default(),
            Box::new(FirstAvailable),
            false,
        )
    }

    /// Worker 1, running one task at a time.
    fn target(shared: &Shared) -> Target<'_> {
        Target {
            shared,
            num: 1,
            name: "worker-1",
            concurrency: 1,
            default_timeout: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Starts attempts of tasks with the given payload sizes on one book and
    /// returns the parts its batch was handed over in, and the frames as one
    /// encoding after another writes them.
    fn batch_of(sizes: &[usize]) -> (Vec<Bytes>, Vec<u8>) {
        let shared = shared();
        let target = target(&shared);
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let mut expected = BytesMut::new();
        for (n, &size) in sizes.iter().enumerate() {
            let id = n as u64 + 1;
            let frame = TaskFrame {
                id,
                task_type: "echo",
                payload: &vec![id as u8; size],
                attempt: 1,
                timeout_ms: 30_000,
            };
            encode_task(&frame, &mut expected, DEFAULT_MAX_FRAME).expect("encodes");
            assert!(start(&mut book, &target, id, size));
        }
        let mut parts = Vec::new();
        book.flush(|part| parts.push(part));
        assert!(!book.has_batch(), "the flush took the whole batch");
        (parts, expected.to_vec())
    }

    #[tokio::test]
    async fn a_batch_past_one_buffer_goes_in_parts_in_order_without_a_copy_into_a_larger_one() {
        let (parts, expected) = batch_of(&[1_000; 100]);
        assert!(
            parts.len() > 1,
            "100 kB of frames fill more than one buffer"
        );
        assert!(parts.iter().all(|part| part.len() <= BATCH_BUFFER));
        assert_eq!(parts.concat(), expected);
    }

    #[tokio::test]
    async fn a_large_payload_is_handed_over_from_its_own_buffer_between_the_frames_bytes() {
        let (parts, expected) = batch_of(&[10, APART_MIN, 10, APART_MIN + 1]);
        let apart: Vec<usize> = parts
            .iter()
            .map(Bytes::len)
            .filter(|&len| len >= APART_MIN)
            .collect();
        assert_eq!(apart, [APART_MIN, APART_MIN + 1]);
        assert_eq!(parts.concat(), expected);
    }

    /// Two small frames that do not fit together in what is left of the
    /// batch's buffer go in two buffers, and the batch is still small: a
    /// caller writes it to an idle worker itself.
    #[tokio::test]
    async fn two_frames_across_the_end_of_a_buffer_are_still_a_small_batch() {
        let shared = shared();
        let target = target(&shared);
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let mut id = 0;
        let mut start_next = |book: &mut Book| {
            id += 1;
            assert!(start(book, &target, id, 10));
        };
        // One frame at a time, each flushed (an idle worker's hand-offs), until
        // the buffer has room for one more frame but not for two.
        let frame = protocol::TASK_FRAME_FIXED_MAX + "echo".len() + 10;
        loop {
            let before = book.outbuf.len();
            start_next(&mut book);
            let written = book.outbuf.len() - before;
            book.flush(drop);
            let room = book.outbuf.capacity() - book.outbuf.len();
            if room >= frame && room - written < frame {
                break;
            }
        }
        start_next(&mut book);
        start_next(&mut book);
        assert!(
            !book.parts.is_empty(),
            "the second frame began a new buffer"
        );
        assert!(book.batch_is_small());
    }

    /// Starts task `id` with a payload of `size` bytes on `book`; whether its
    /// frame could be written.
    fn start(book: &mut Book, target: &Target<'_>, id: u64, size: usize) -> bool {
        let (answer, _told) = Answer::new();
        let pending = Pending::new(id, Task::new("echo", vec![id as u8; size]), answer);
        book.start_attempt(target, pending, PoolClock::new().now())
            .is_ok()
    }

    /// A worker reads `timeout_ms` 0 as no limit: a timeout under a
    /// millisecond, or of zero, is sent as 1 ms, never as 0.
    #[tokio::test]
    async fn a_timeout_under_a_millisecond_is_sent_as_one_not_as_no_limit() {
        let shared = shared();
        let target = target(&shared);
        let mut book = Book::new(Stats::new().tallies.writer(1));
        let mut expected = BytesMut::new();
        let timeouts = [(0, 1), (500, 1), (1_500, 1), (2_000_000, 2_000)];
        for (id, (micros, ms)) in (1..).zip(timeouts) {
            let task = Task::new("echo", vec![1u8]).with_timeout(Duration::from_micros(micros));
            let (answer, _told) = Answer::new();
            let pending = Pending::new(id, task, answer);
            assert!(book
                .start_attempt(&target, pending, PoolClock::new().now())
                .is_ok());
            let frame = TaskFrame {
                id,
                task_type: "echo",
                payload: &[1],
                attempt: 1,
                timeout_ms: ms,
            };
            encode_task(&frame, &mut expected, DEFAULT_MAX_FRAME).expect("encodes");
        }
        let mut written = Vec::new();
        book.flush(|part| written.extend_from_slice(&part));
        assert_eq!(written, expected.to_vec());
    }

    /// A book whose batch holds six frames of 10 kB in a closed buffer and
    /// nothing after: the next task's frame did not fit in the buffer's room,
    /// and then was refused as over `max_frame`. Also the bytes of the six.
    fn batch_before_a_refused_task(book: &mut Book) -> Vec<u8> {
        let shared = shared();
        let target = Target {
            max_frame: 15_000,
            ..target(&shared)
        };
        for id in 1..=6 {
            assert!(start(book, &target, id, 10_000));
        }
        let mut written = Vec::new();
        let mut copy = Book::new(Stats::new().tallies.writer(1));
        for id in 1..=6 {
            assert!(start(&mut copy, &target, id, 10_000));
        }
        copy.flush(|part| written.extend_from_slice(&part));
        assert!(!start(book, &target, 7, 20_000), "over max_frame");
        assert!(!book.parts.is_empty() && book.outbuf.is_empty());
        written
    }

    #[tokio::test]
    async fn a_refused_frame_leaves_the_frames_before_it_to_be_written() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let written = batch_before_a_refused_task(&mut book);
        assert!(book.has_batch(), "the closed buffer still waits");
        let mut flushed = Vec::new();
        book.flush(|part| flushed.extend_from_slice(&part));
        assert_eq!(flushed, written);
        assert!(!book.has_batch());
    }

    #[tokio::test]
    async fn a_gone_input_drops_every_buffer_of_the_batch() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        batch_before_a_refused_task(&mut book);
        book.input_gone();
        assert!(!book.has_batch());
        let mut flushed = 0;
        book.flush(|part| flushed += part.len());
        assert_eq!(flushed, 0);
    }

    /// A frame written and then taken back out ([`Book::unwrite`], for a
    /// start that unwound) leaves the batch as it was: the frames before it
    /// are handed over byte for byte, and the next frame starts where it
    /// started; whether it fitted in the buffer's room, closed the buffer, or
    /// had its payload written apart.
    #[tokio::test]
    async fn a_frame_taken_back_leaves_the_batch_as_it_was() {
        let shared = shared();
        let target = target(&shared);
        // Small frames that closed the buffer before them to start another.
        let mut closed_a_buffer = 0;
        // 0, 1 and about a buffer's worth of frames before it.
        for before in [0, 1, 61, 62, 63] {
            for size in [10, 1_000, 5_000, APART_MIN, APART_MIN + 1] {
                let stats = Stats::new();
                let mut book = Book::new(stats.tallies.writer(1));
                let mut kept = Book::new(stats.tallies.writer(1));
                for id in 1..=before {
                    assert!(start(&mut book, &target, id, 1_000));
                    assert!(start(&mut kept, &target, id, 1_000));
                }
                let end = book.batch_end();
                let (answer, _told) = Answer::new();
                let taken_back = Pending::new(99, Task::new("echo", vec![9; size]), answer);
                assert!(book.write_attempt(&target, &taken_back).is_ok());
                if size < APART_MIN && book.parts.len() > end.parts {
                    closed_a_buffer += 1;
                }
                book.unwrite(end);
                assert_eq!(book.batched, kept.batched, "{before} then {size}");
                assert!(start(&mut book, &target, 100, 10));
                assert!(start(&mut kept, &target, 100, 10));
                let (mut got, mut want) = (Vec::new(), Vec::new());
                book.flush(|part| got.extend_from_slice(&part));
                kept.flush(|part| want.extend_from_slice(&part));
                assert!(got == want, "{before} then {size}: the same bytes");
            }
        }
        assert!(closed_a_buffer > 0, "a buffer was closed and taken back");
    }

    #[tokio::test]
    async fn a_small_batch_is_one_part() {
        let (parts, expected) = batch_of(&[64; 3]);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts.concat(), expected);
    }
}
