//! The single writer: one std thread owns the output stream, fed by a channel.
//!
//! Every frame the worker sends — handshake, replies, heartbeats — goes through
//! [`Outbox::send`], so frames never interleave. The thread is independent of the
//! tokio runtime on purpose: a heartbeat must get out even while every runtime thread
//! is stuck in a CPU-bound handler.
//!
//! The channel is unbounded, but what can wait in it is bounded by the protocol: one
//! reply per task in flight (the manager bounds those) and at most one heartbeat,
//! because the heartbeat thread skips a beat while the previous one is still queued.

use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use bytes::BytesMut;
use pool_core::protocol::{encode_frame, FrameError, FromWorker};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

enum Out {
    Frame(BytesMut),
    Heartbeat(BytesMut),
    Close,
}

/// A handle to the writer thread; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Out>,
    max_frame: usize,
    heartbeat_queued: Arc<AtomicBool>,
}

/// Owned by the session: closes the writer and tells when the link broke.
#[derive(Debug)]
pub(crate) struct WriterHandle {
    outbox: Outbox,
    done: oneshot::Receiver<()>,
    broken: CancellationToken,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Frame(_) => "Frame",
            Self::Heartbeat(_) => "Heartbeat",
            Self::Close => "Close",
        })
    }
}

/// Starts the writer thread on `writer`; frames are limited to `max_frame` bytes.
pub(crate) fn spawn<W: Write + Send + 'static>(
    writer: W,
    max_frame: usize,
) -> io::Result<WriterHandle> {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done) = oneshot::channel();
    let broken = CancellationToken::new();
    let heartbeat_queued = Arc::new(AtomicBool::new(false));
    let thread_broken = broken.clone();
    let thread_queued = Arc::clone(&heartbeat_queued);
    thread::Builder::new()
        .name("cortex-writer".into())
        .spawn(move || {
            if write_loop(writer, &rx, &thread_queued).is_err() {
                // The manager is gone (EPIPE) or the stream failed: nothing more can
                // be said to anyone; the session ends as disconnected.
                thread_broken.cancel();
            }
            let _ = done_tx.send(());
        })?;
    Ok(WriterHandle {
        outbox: Outbox {
            tx,
            max_frame,
            heartbeat_queued,
        },
        done,
        broken,
    })
}

fn write_loop<W: Write>(
    mut writer: W,
    rx: &mpsc::Receiver<Out>,
    queued: &AtomicBool,
) -> io::Result<()> {
    let mut frames: Vec<BytesMut> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut closing = false;
        // Take everything already waiting, then write it in one vectored write (no
        // copy into a buffer of our own).
        while let Some(item) = next.take() {
            match item {
                Out::Frame(frame) => frames.push(frame),
                Out::Heartbeat(frame) => {
                    queued.store(false, Ordering::Release);
                    frames.push(frame);
                }
                Out::Close => {
                    closing = true;
                    break;
                }
            }
            if frames.len() == MAX_SLICES {
                break;
            }
            next = rx.try_recv().ok();
        }
        write_all(&mut writer, &frames)?;
        frames.clear();
        writer.flush()?;
        if closing {
            return Ok(());
        }
    }
    writer.flush()
}

/// The most buffers handed to one vectored write (Linux accepts 1024).
const MAX_SLICES: usize = 512;

/// Writes every byte of `frames`, in as few `write_vectored` calls as the stream
/// takes.
fn write_all<W: Write>(writer: &mut W, frames: &[BytesMut]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
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

impl Outbox {
    /// Encodes `message` and queues it.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] when the frame exceeds the link's maximum (nothing is
    /// sent then). A closed writer is not an error: the session is ending anyway.
    pub(crate) fn send(&self, message: &FromWorker<'_>) -> Result<(), FrameError> {
        let mut buf = BytesMut::new();
        encode_frame(message, &mut buf, self.max_frame)?;
        let _ = self.tx.send(Out::Frame(buf));
        Ok(())
    }

    /// Encodes `message` and appends it to `buf`, to be handed over later with
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

    /// Queues whole frames encoded by [`encode`](Self::encode).
    pub(crate) fn send_encoded(&self, frames: BytesMut) {
        let _ = self.tx.send(Out::Frame(frames));
    }

    /// Queues a heartbeat unless one is already waiting to be written.
    pub(crate) fn send_heartbeat(&self, message: &FromWorker<'_>) {
        if self.heartbeat_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut buf = BytesMut::new();
        if encode_frame(message, &mut buf, self.max_frame).is_ok() {
            let _ = self.tx.send(Out::Heartbeat(buf));
        } else {
            self.heartbeat_queued.store(false, Ordering::Release);
        }
    }

    /// The largest frame body this outbox lets through.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }
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

    /// Fires when a write failed: the manager is no longer listening.
    pub(crate) fn broken(&self) -> &CancellationToken {
        &self.broken
    }

    /// Writes what is queued, stops the thread and waits for it to finish.
    pub(crate) async fn close(self) {
        let _ = self.outbox.tx.send(Out::Close);
        let _ = self.done.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 3 bytes per call, from the first non-empty buffer only.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_still_deliver_every_frame_in_order() {
        let frames: Vec<BytesMut> = ["", "abcde", "f", "", "ghijklmno"]
            .into_iter()
            .map(|s| BytesMut::from(s.as_bytes()))
            .collect();
        let mut out = Trickle(Vec::new());
        write_all(&mut out, &frames).expect("written");
        assert_eq!(out.0, b"abcdefghijklmno");
    }
}
