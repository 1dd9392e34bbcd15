//! The writer task of a worker's link: the frames the actor queued, written in
//! vectored writes.
//!
//! A batch arrives as several `Bytes`: whole frames, and around a payload of
//! 64 KiB or more the frame's bytes before it, the payload's own buffer and the
//! bytes after it (see `dispatch.rs`). They go to the link as they are, without
//! being copied together, and a pipe takes them in one call: the worker is not
//! woken for the few bytes before a large payload on their own.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::transport::LinkWriter;

/// Frames written per batch before a flush.
const WRITE_BATCH: usize = 64;

/// Writes queued frames, a batch per vectored write; closing the channel closes
/// the worker's input (it sees EOF).
pub(crate) async fn write_frames(
    mut writer: LinkWriter,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while frames.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let written = write_all_vectored(&mut writer, &mut batch).await;
        if written.is_err() || writer.flush().await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = writer.shutdown().await;
}

/// Writes every byte of `pieces` (at most [`WRITE_BATCH`] of them), in order, in
/// vectored writes; a short write resumes where it stopped. The pieces are
/// consumed: on return each one is empty.
async fn write_all_vectored<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    pieces: &mut [Bytes],
) -> io::Result<()> {
    let mut first = 0;
    loop {
        while pieces.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        let rest = &pieces[first..];
        if rest.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
        let count = rest.len().min(WRITE_BATCH);
        for (slice, piece) in slices.iter_mut().zip(rest) {
            *slice = IoSlice::new(piece);
        }
        let mut written = writer.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let piece = &mut pieces[first];
            let taken = written.min(piece.len());
            piece.advance(taken);
            written -= taken;
            if piece.is_empty() {
                first += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

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

    fn pieces(parts: &[&'static [u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from_static(p)).collect()
    }

    #[tokio::test]
    async fn pieces_arrive_whole_and_in_order_through_short_vectored_writes() {
        let mut out = Short::default();
        let mut batch = pieces(&[b"", b"head", b"", b"payload-bytes", b"t", b"", b"ail"]);
        write_all_vectored(&mut out, &mut batch)
            .await
            .expect("write");
        assert_eq!(out.0, b"headpayload-bytestail");
        assert!(batch.iter().all(Bytes::is_empty));
    }

    #[tokio::test]
    async fn a_writer_without_vectored_writes_gets_every_byte_too() {
        let (mut near, mut far) = tokio::io::duplex(4);
        let mut batch = pieces(&[b"abc", b"defghij", b"k"]);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut got)
                .await
                .map(|_| got)
        });
        write_all_vectored(&mut near, &mut batch)
            .await
            .expect("write");
        drop(near);
        assert_eq!(reader.await.expect("join").expect("read"), b"abcdefghijk");
    }

    #[tokio::test]
    async fn write_frames_writes_every_queued_frame_and_closes_on_a_closed_channel() {
        let (near, mut far) = tokio::io::duplex(8);
        let (frames, queued) = mpsc::unbounded_channel();
        for part in [&b"one"[..], b"", b"two-three", b"four"] {
            frames.send(Bytes::from_static(part)).expect("send");
        }
        drop(frames);
        let writer = tokio::spawn(write_frames(Box::pin(near), queued));
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut far, &mut got)
            .await
            .expect("read");
        writer.await.expect("join");
        assert_eq!(got, b"onetwo-threefour");
    }
}
