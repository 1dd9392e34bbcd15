//! A worker's output: the frames waiting for its link, written by the worker's
//! lane task in vectored writes as the link takes them.
//!
//! Frames arrive as several `Bytes`: the buffers of frames a batch filled,
//! and around a payload of 64 KiB or more the frame's bytes before it, the
//! payload's own buffer and the bytes after it (see `lane/attempt.rs`). They
//! go to the link as they are, without being copied together, and a pipe
//! takes them in one call: the worker is not woken for the few bytes before a
//! large payload on their own.
//! A write is one `write_vectored` call, so a write that is waiting can be
//! dropped without losing a byte.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Pieces handed to one vectored write at most.
const WRITE_BATCH: usize = 64;

/// The frames waiting to be written to a worker's link, in order.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pieces: VecDeque<Bytes>,
    /// The worker's input is to be closed (it sees EOF) once these are written.
    closing: bool,
    /// Bytes written to the link since the outbox was made: where in the
    /// stream of frames the link took up to.
    written: u64,
}

impl Outbox {
    /// Queues `piece` after everything queued before.
    pub(crate) fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.pieces.push_back(piece);
        }
    }

    /// Whether bytes wait to be written.
    pub(crate) fn has_bytes(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// Closes the worker's input once what is queued is written.
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// Whether the input is to be closed.
    pub(crate) fn closing(&self) -> bool {
        self.closing
    }

    /// Bytes written to the link so far, all frames together.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Drops what waits (the link broke).
    pub(crate) fn clear(&mut self) {
        self.pieces.clear();
    }

    /// Marks the first `written` bytes as written.
    pub(crate) fn advance(&mut self, mut written: usize) {
        self.written += written as u64;
        while written > 0 {
            let Some(piece) = self.pieces.front_mut() else {
                return;
            };
            let taken = written.min(piece.len());
            piece.advance(taken);
            written -= taken;
            if piece.is_empty() {
                self.pieces.pop_front();
            }
        }
    }

    /// One vectored write of the first [`WRITE_BATCH`] pieces; the bytes it
    /// took (never 0: a writer that takes nothing is an error). Nothing is
    /// written when it is pending.
    pub(crate) fn poll_write_some<W: AsyncWrite + ?Sized>(
        &self,
        writer: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if let [piece] = self.pieces.as_slices().0 {
            if self.pieces.len() == 1 {
                // One piece (a round trip's one frame): no slices to set up.
                return match writer.poll_write(cx, piece) {
                    Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    other => other,
                };
            }
        }
        let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
        let count = self.pieces.len().min(WRITE_BATCH);
        for (slice, piece) in slices.iter_mut().zip(&self.pieces) {
            *slice = IoSlice::new(piece);
        }
        match writer.poll_write_vectored(cx, &slices[..count]) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            other => other,
        }
    }

    /// [`poll_write_some`](Self::poll_write_some) as a future: nothing is
    /// written if it is dropped before it completes.
    pub(crate) async fn write_some<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        writer: &mut W,
    ) -> io::Result<usize> {
        poll_fn(|cx| self.poll_write_some(Pin::new(&mut *writer), cx)).await
    }

    /// Writes everything queued (the handshake's `hello`, before the lane's
    /// loop starts).
    pub(crate) async fn write_all<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        writer: &mut W,
    ) -> io::Result<()> {
        while self.has_bytes() {
            let written = self.write_some(writer).await?;
            self.advance(written);
        }
        writer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 5 bytes per call, across the slices it is given.
    #[derive(Default)]
    struct Short(Vec<u8>);

    impl AsyncWrite for Short {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(5 - taken);
                self.0.extend_from_slice(&buf[..n]);
                taken += n;
                if taken == 5 {
                    break;
                }
            }
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn outbox(parts: &[&'static [u8]]) -> Outbox {
        let mut out = Outbox::default();
        for part in parts {
            out.push(Bytes::from_static(part));
        }
        out
    }

    #[tokio::test]
    async fn pieces_arrive_whole_and_in_order_through_short_vectored_writes() {
        let mut writer = Short::default();
        let mut out = outbox(&[b"", b"head", b"", b"payload-bytes", b"t", b"", b"ail"]);
        out.write_all(&mut writer).await.expect("write");
        assert_eq!(writer.0, b"headpayload-bytestail");
        assert!(!out.has_bytes());
    }

    #[tokio::test]
    async fn a_writer_without_vectored_writes_gets_every_byte_too() {
        let (mut near, mut far) = tokio::io::duplex(4);
        let mut out = outbox(&[b"abc", b"defghij", b"k"]);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut got)
                .await
                .map(|_| got)
        });
        out.write_all(&mut near).await.expect("write");
        drop(near);
        assert_eq!(reader.await.expect("join").expect("read"), b"abcdefghijk");
    }

    #[tokio::test]
    async fn a_write_dropped_while_it_waits_loses_nothing() {
        let (mut near, mut far) = tokio::io::duplex(4);
        let mut out = outbox(&[b"abcd", b"efgh"]);
        let written = out.write_some(&mut near).await.expect("room for 4");
        out.advance(written);
        // The pipe is full: this write waits, and is given up.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            out.write_some(&mut near),
        );
        assert!(waiting.await.is_err(), "the pipe had no room");
        let mut got = vec![0; 4];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .expect("read");
        out.write_all(&mut near).await.expect("write");
        drop(near);
        tokio::io::AsyncReadExt::read_to_end(&mut far, &mut got)
            .await
            .expect("read");
        assert_eq!(got, b"abcdefgh");
    }
}
