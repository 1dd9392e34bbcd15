//! A worker's output side: its link's writer and the frames waiting for it,
//! behind one lock in the worker's lane.
//!
//! The lane's task writes whatever waits whenever the link takes it. A caller
//! that just handed a task to an idle worker writes it itself
//! ([`LinkOutput::write_now`]) when nothing waits before it: the frame reaches
//! the worker without a wake-up of the lane's task in between, which on an
//! idle pool is a task switch out of every round trip. What such a write
//! leaves (the link was full, it failed) is the lane's to write: the caller
//! rings it.
//!
//! Lock order: a lane's output, then its book, then the queue.

use std::io;
use std::ops::DerefMut;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::lane::link_ahead::LinkAhead;
use super::lane::{Book, Input};
use super::outbox::Outbox;
use crate::transport::LinkWriter;

/// The link's writer (`None` once the input is closed or the link broke) and
/// the frames waiting for it.
#[derive(Default)]
pub(crate) struct LinkOutput {
    writer: Option<LinkWriter>,
    out: Outbox,
    /// Where it publishes how far the link took the frames, for the book.
    link: Arc<LinkAhead>,
}

impl LinkOutput {
    /// An output that publishes how far its link took the frames to `link`
    /// (its book's).
    pub(crate) fn publishing_to(link: Arc<LinkAhead>) -> Self {
        Self {
            link,
            ..Self::default()
        }
    }

    /// Whether a filler of the book stopped because frames waited for the
    /// link, since this was last asked: the lane refills the worker now
    /// that nothing waits ([`poll_write`](Self::poll_write) was ready).
    pub(crate) fn link_caught_up(&self) -> bool {
        self.link.take_waited()
    }

    /// The worker is ready: frames go to `writer` from now on.
    pub(crate) fn connect(&mut self, writer: LinkWriter) {
        self.writer = Some(writer);
    }

    /// The frames waiting for the link.
    pub(crate) fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// Whether the link still takes frames (it is connected, not closed, not
    /// broken).
    pub(crate) fn writes(&self) -> bool {
        self.writer.is_some()
    }

    /// Whether bytes wait to be written (to a link that still takes them).
    pub(crate) fn has_bytes(&self) -> bool {
        self.writer.is_some() && self.out.has_bytes()
    }

    /// Moves the frames waiting in `book`'s batch behind those waiting here,
    /// and ends the worker's input after them once the actor closed it (at
    /// once when nothing waits).
    pub(crate) fn take_batch(&mut self, book: &mut Book) {
        if !self.out.closing() {
            book.flush(|piece| self.out.push(piece));
            if book.input == Input::Closing {
                self.out.close();
            }
        }
        self.close_when_written();
    }

    /// Writes what waits, as long as the link takes it: ready once nothing
    /// waits, pending while the link is full (`cx` is woken when it has room).
    /// Never ready once the writer is gone.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Pending;
        };
        while self.out.has_bytes() {
            match self.out.poll_write_some(writer.as_mut(), cx) {
                Poll::Ready(Ok(written)) => advance(&mut self.out, &self.link, written),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.close_when_written();
        Poll::Ready(Ok(()))
    }

    /// How far into the stream of the batches' frames the link took: a frame
    /// ending past this never reached the worker whole.
    pub(crate) fn written(&self) -> u64 {
        self.out.written()
    }

    /// The link broke: what waits is dropped, as the pipe would drop it.
    pub(crate) fn broke(&mut self) {
        self.out.clear();
        self.writer = None;
    }

    /// Once the input is to be closed and all is written, drops the writer:
    /// the worker reads EOF.
    fn close_when_written(&mut self) {
        if self.out.closing() && !self.out.has_bytes() {
            self.writer = None;
        }
    }

    /// A caller's write of `book`'s batch, when nothing waits before it, the
    /// input is open and the batch is small (no large payload: the caller
    /// holds this lock while it writes, and the lane's task waits for it):
    /// `true` when all of it went, `false` when the lane's task is to write
    /// (what is left, or the whole batch).
    ///
    /// `true` too when the batch was already taken (by the lane's task, which
    /// writes it).
    ///
    /// One write, polled with a waker that does nothing: a link that is full,
    /// or broke, is left to the lane's task, whose own poll then registers its
    /// waker (it was not waiting on the link: nothing waited to be written).
    ///
    /// The book is locked (`lock_book`) only while its batch is taken: the
    /// write itself holds this lock alone.
    pub(crate) fn write_now<B: DerefMut<Target = Book>>(
        &mut self,
        lock_book: impl FnOnce() -> B,
    ) -> bool {
        let Some(writer) = self.writer.as_mut() else {
            return false;
        };
        {
            let mut book = lock_book();
            if self.out.has_bytes() || book.input != Input::Open || !book.batch_is_small() {
                return false;
            }
            book.flush(|piece| self.out.push(piece));
        }
        if !self.out.has_bytes() {
            // The lane's task took the batch first: it writes it.
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(written)) = self.out.poll_write_some(writer.as_mut(), &mut cx) {
            advance(&mut self.out, &self.link, written);
        }
        !self.out.has_bytes()
    }
}

/// The link took `written` more bytes of `out`: published to `link` for the
/// book.
fn advance(out: &mut Outbox, link: &LinkAhead, written: usize) {
    out.advance(written);
    link.publish(out.written());
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, DuplexStream};

    use super::*;
    use crate::manager::metrics::Stats;

    /// An output connected to a pipe-like stream that holds `room` bytes, and
    /// the stream's far end.
    fn connected(room: usize) -> (LinkOutput, DuplexStream) {
        let (near, far) = tokio::io::duplex(room);
        let mut output = LinkOutput::default();
        output.connect(Box::pin(near));
        (output, far)
    }

    async fn read(far: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        far.read_exact(&mut got).await.expect("read");
        got
    }

    #[tokio::test]
    async fn a_caller_writes_the_batch_itself_when_nothing_waits_before_it() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, mut far) = connected(64);
        book.push_frame(b"task-1");
        assert!(output.write_now(|| &mut book), "the link took it whole");
        assert!(!output.has_bytes());
        assert_eq!(read(&mut far, 6).await, b"task-1");
    }

    #[tokio::test]
    async fn what_a_full_link_leaves_is_written_later_in_order() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, mut far) = connected(4);
        book.push_frame(b"abcdefgh");
        assert!(
            !output.write_now(|| &mut book),
            "the link took 4 of 8 bytes"
        );
        assert!(output.has_bytes());
        // Something waits: the next caller leaves its frame to the lane,
        // behind it.
        book.push_frame(b"ij");
        assert!(!output.write_now(|| &mut book));
        assert_eq!(read(&mut far, 4).await, b"abcd");
        // The lane's task: takes the batch, writes as the link takes it.
        output.take_batch(&mut book);
        let writer = async {
            poll_fn(|cx| output.poll_write(cx)).await.expect("write");
        };
        let (_, got) = tokio::join!(writer, read(&mut far, 6));
        assert_eq!(got, b"efghij");
    }

    #[tokio::test]
    async fn a_caller_leaves_a_closing_input_to_the_lane() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, _far) = connected(64);
        book.push_frame(b"shutdown");
        assert!(book.close_input());
        assert!(
            !output.write_now(|| &mut book),
            "closing: the lane writes, then ends it"
        );
        output.take_batch(&mut book);
        assert!(output.has_bytes());
    }

    #[tokio::test]
    async fn a_caller_writes_nothing_once_the_input_is_gone_or_closed() {
        let stats = Stats::new();
        for close_first in [false, true] {
            let mut book = Book::new(stats.tallies.writer(1));
            let (mut output, _far) = connected(64);
            book.push_frame(b"task");
            if close_first {
                assert!(book.close_input());
            }
            book.input_gone();
            assert!(!output.write_now(|| &mut book));
            assert!(
                !output.has_bytes() && !book.has_batch(),
                "dropped, as the pipe would"
            );
        }
    }

    #[tokio::test]
    async fn after_a_callers_write_is_left_pending_the_lanes_own_poll_is_woken() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, mut far) = connected(4);
        book.push_frame(b"abcdefgh");
        // The caller's write, with a waker that does nothing, leaves 4 bytes.
        assert!(!output.write_now(|| &mut book));
        // The lane's task, rung, polls with its own waker: the link is full.
        let (woken, waker) = crate::testing::WakeCounter::new();
        let mut cx = Context::from_waker(&waker);
        assert!(output.poll_write(&mut cx).is_pending());
        // The worker reads: the lane's waker, not the caller's, is woken.
        assert_eq!(read(&mut far, 4).await, b"abcd");
        assert_eq!(woken.count(), 1);
        assert!(matches!(output.poll_write(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(read(&mut far, 4).await, b"efgh");
    }

    #[tokio::test]
    async fn a_caller_leaves_a_large_batch_to_the_lane() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, _far) = connected(1 << 20);
        book.push_frame(&vec![7; crate::manager::lane::attempt::APART_MIN + 1]);
        assert!(!output.write_now(|| &mut book));
        assert!(!output.has_bytes(), "nothing was taken from the book");
        assert!(book.has_batch());
    }

    #[test]
    fn before_the_worker_is_ready_the_batch_stays_in_the_book() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        book.push_frame(b"task");
        assert!(!LinkOutput::default().write_now(|| &mut book));
        let mut left = Vec::new();
        book.flush(|piece| left.extend_from_slice(&piece));
        assert_eq!(left, b"task");
    }

    #[test]
    fn a_batch_the_lane_took_first_needs_no_write() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, _far) = connected(64);
        assert!(output.write_now(|| &mut book), "nothing to write: no ring");
        assert!(!output.has_bytes());
    }

    #[tokio::test]
    async fn a_broken_link_is_left_to_the_lane_and_drops_what_waits() {
        let stats = Stats::new();
        let mut book = Book::new(stats.tallies.writer(1));
        let (mut output, far) = connected(64);
        drop(far);
        book.push_frame(b"task");
        assert!(!output.write_now(|| &mut book), "the write failed");
        let failed = poll_fn(|cx| output.poll_write(cx)).await;
        assert!(failed.is_err(), "the lane sees the error too");
        output.broke();
        assert!(!output.has_bytes() && !output.writes());
    }
}
