//! The output stream, shared: every frame the worker sends — handshake, replies,
//! heartbeats — is written whole under one lock by the thread that produced it, and
//! flushed before [`Outbox::send`] returns.
//!
//! So a finished task's reply is on the wire before the dispatcher starts any later
//! task (`docs/PROTOCOL.md`, "a worker writes a task's reply before it starts a later
//! task"): when a later task kills the process, the manager still gets every reply
//! of the tasks before it and charges the crash to the task that was running. Frames
//! never interleave: each one (or a batch of whole frames) is one locked write.
//!
//! Heartbeats come from their own thread, which writes them itself, so a beat gets
//! out even while every runtime thread is stuck in a CPU-bound handler. A write
//! blocks only while the pipe is full, that is while the manager is not reading.

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use pool_core::protocol::{encode_frame, FrameError, FromWorker};

use crate::broken::Broken;

/// The stream and what its failure tells the session.
struct Shared {
    /// `None` once closed or broken: later frames go nowhere.
    stream: Mutex<Option<Box<dyn Write + Send>>>,
    /// Set when a write failed: the manager is no longer listening.
    broken: Arc<Broken>,
}

/// A handle to the output stream; cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    max_frame: usize,
}

/// Owned by the session: closes the stream and tells when the link broke.
#[derive(Debug)]
pub(crate) struct WriterHandle {
    outbox: Outbox,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("max_frame", &self.max_frame)
            .field("broken", &self.shared.broken.is_set())
            .finish_non_exhaustive()
    }
}

/// Shares `writer`; frames are limited to `max_frame` bytes.
pub(crate) fn open<W: Write + Send + 'static>(writer: W, max_frame: usize) -> WriterHandle {
    WriterHandle {
        outbox: Outbox {
            shared: Arc::new(Shared {
                stream: Mutex::new(Some(Box::new(writer))),
                broken: Arc::default(),
            }),
            max_frame,
        },
    }
}

impl Outbox {
    /// Encodes `message` and writes it.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the frame exceeds the link's maximum (nothing is
    /// sent then). A closed or broken stream is not an error: the session is ending
    /// anyway.
    pub(crate) fn send(&self, message: &FromWorker<'_>) -> Result<(), FrameError> {
        let mut buf = BytesMut::new();
        encode_frame(message, &mut buf, self.max_frame)?;
        self.send_encoded(&buf);
        Ok(())
    }

    /// Encodes `message` and appends it to `buf`, to be written later with
    /// [`send_encoded`](Self::send_encoded).
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the frame exceeds the link's maximum (`buf` is
    /// left as it was).
    pub(crate) fn encode(
        &self,
        message: &FromWorker<'_>,
        buf: &mut BytesMut,
    ) -> Result<(), FrameError> {
        encode_frame(message, buf, self.max_frame)
    }

    /// Writes and flushes whole frames (encoded by [`encode`](Self::encode)) in one
    /// locked write; on return they are in the stream (a pipe, for a real link).
    pub(crate) fn send_encoded(&self, frames: &[u8]) {
        self.locked_write(|writer| {
            writer.write_all(frames)?;
            writer.flush()
        });
    }

    /// Writes and flushes bytes given in pieces (a frame's bytes before a large
    /// payload, then the payload) in one locked write, without copying them
    /// together first; on return they are in the stream.
    ///
    /// The pieces go in vectored writes: a pipe takes them in one call, so the
    /// manager is not woken for the few bytes before the payload on their own.
    pub(crate) fn send_pieces(&self, pieces: &[&[u8]]) {
        self.locked_write(|writer| {
            write_all_vectored(writer, pieces)?;
            writer.flush()
        });
    }

    /// Runs `write` on the stream under its lock. A failed write means the
    /// manager is gone (EPIPE) or the stream failed: nothing more can be said to
    /// anyone; the session ends as disconnected.
    #[inline]
    fn locked_write(&self, write: impl FnOnce(&mut Box<dyn Write + Send>) -> io::Result<()>) {
        let mut stream = self
            .shared
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(writer) = stream.as_mut() else {
            return;
        };
        if write(writer).is_err() {
            *stream = None;
            self.shared.broken.set();
        }
    }

    /// Writes a heartbeat (a frame too large for the link is dropped).
    pub(crate) fn send_heartbeat(&self, message: &FromWorker<'_>) {
        let _ = self.send(message);
    }

    /// Whether a write failed (the manager is no longer listening).
    pub(crate) fn is_broken(&self) -> bool {
        self.shared.broken.is_set()
    }

    /// The largest frame body this outbox lets through.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Closes the stream (end of file for the manager); later frames go nowhere.
    fn close(&self) {
        let mut stream = self
            .shared
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(mut writer) = stream.take() {
            let _ = writer.flush();
        }
    }
}

/// Writes every byte of `pieces`, in order, with vectored writes (a short write
/// resumes where it stopped).
fn write_all_vectored(writer: &mut dyn Write, pieces: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|piece| IoSlice::new(piece)).collect();
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match writer.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl WriterHandle {
    /// An outbox that limits frames to `max_frame` from now on.
    pub(crate) fn set_max_frame(&mut self, max_frame: usize) {
        self.outbox.max_frame = max_frame;
    }

    /// A handle for senders.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Set when a write failed: the manager is no longer listening.
    pub(crate) fn broken(&self) -> &Arc<Broken> {
        &self.outbox.shared.broken
    }

    /// Closes the stream once no frame is being written; a write stuck on a manager
    /// that stopped reading is not waited for longer than `grace`.
    pub(crate) async fn close(self, grace: std::time::Duration) {
        let outbox = self.outbox;
        let closing = tokio::task::spawn_blocking(move || outbox.close());
        let _ = tokio::time::timeout(grace, closing).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose bytes the test can look at while the outbox still holds it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<u8>>>);

    impl Write for Seen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Takes at most 3 bytes per call: short writes still deliver every byte.
            let n = buf.len().min(3);
            self.0.lock().expect("lock").extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Fails every write, like a pipe whose reader is gone.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_frame_is_in_the_stream_when_send_returns() {
        let seen = Seen::default();
        let handle = open(seen.clone(), 1024);
        handle.outbox().send_encoded(b"abcdefgh");
        assert_eq!(*seen.0.lock().expect("lock"), b"abcdefgh");
        handle.outbox().send_encoded(b"ij");
        assert_eq!(*seen.0.lock().expect("lock"), b"abcdefghij");
        assert!(!handle.broken().is_set());
    }

    /// Takes at most 3 bytes per call, across the slices it is given.
    #[derive(Clone, Default)]
    struct Vectored(Arc<Mutex<Vec<u8>>>);

    impl Write for Vectored {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut seen = self.0.lock().expect("lock");
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(3 - taken);
                seen.extend_from_slice(&buf[..n]);
                taken += n;
                if taken == 3 {
                    break;
                }
            }
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pieces_arrive_whole_and_in_order_through_short_vectored_writes() {
        let seen = Vectored::default();
        let handle = open(seen.clone(), 1024);
        handle
            .outbox()
            .send_pieces(&[b"ab", b"", b"cdefgh", b"i", b"jklmnop"]);
        assert_eq!(*seen.0.lock().expect("lock"), b"abcdefghijklmnop");
        let plain = Seen::default();
        let handle = open(plain.clone(), 1024);
        handle.outbox().send_pieces(&[b"head", b"payload"]);
        assert_eq!(*plain.0.lock().expect("lock"), b"headpayload");
        assert!(!handle.broken().is_set());
    }

    #[test]
    fn a_failed_write_breaks_the_link_and_later_frames_go_nowhere() {
        let handle = open(Gone, 1024);
        assert!(!handle.outbox().is_broken());
        handle.outbox().send_encoded(b"lost");
        assert!(handle.broken().is_set());
        assert!(handle.outbox().is_broken());
        handle.outbox().send_encoded(b"also lost");
        assert!(handle.broken().is_set());
        assert!(handle.outbox().is_broken());
    }
}
