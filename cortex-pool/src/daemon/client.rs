//! The client side of the control socket.

use std::io;
use std::path::Path;

use futures_util::StreamExt;
use interprocess::local_socket::tokio::prelude::*;
use tokio::io::{ReadHalf, WriteHalf};

type RecvHalf = ReadHalf<LocalSocketStream>;
type SendHalf = WriteHalf<LocalSocketStream>;
use interprocess::local_socket::GenericFilePath;
use pool_core::protocol::FrameCodec;
use tokio_util::codec::FramedRead;

use super::protocol::{self, Reply, Request, MAX_REPLY};

/// A connection to a daemon.
#[derive(Debug)]
pub(crate) struct Client {
    recv: FramedRead<RecvHalf, FrameCodec>,
    send: SendHalf,
}

impl Client {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// When nothing listens there or we may not connect.
    pub(crate) async fn connect(path: &Path) -> io::Result<Self> {
        let name = path.to_fs_name::<GenericFilePath>()?;
        let stream = LocalSocketStream::connect(name).await?;
        let (recv, send) = tokio::io::split(stream);
        Ok(Self {
            recv: FramedRead::new(recv, FrameCodec::new(MAX_REPLY)),
            send,
        })
    }

    /// Sends one request.
    ///
    /// # Errors
    /// The socket's I/O error.
    pub(crate) async fn send(&mut self, request: &Request) -> io::Result<()> {
        protocol::write(&mut self.send, request, MAX_REPLY).await
    }

    /// Waits for the next reply.
    ///
    /// # Errors
    /// When the daemon closed the connection or sent something unreadable.
    pub(crate) async fn next(&mut self) -> io::Result<Reply> {
        match self.recv.next().await {
            Some(Ok(body)) => {
                protocol::decode(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Some(Err(e)) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )),
        }
    }

    /// Sends a request and waits for its (single) reply.
    ///
    /// # Errors
    /// As [`send`](Self::send) and [`next`](Self::next).
    pub(crate) async fn call(&mut self, request: &Request) -> io::Result<Reply> {
        // A daemon that refuses us replies and closes at once, perhaps before our
        // request is fully written: read its reply even when the write failed.
        let sent = self.send(request).await;
        match self.next().await {
            Ok(reply) => Ok(reply),
            Err(e) => Err(sent.err().unwrap_or(e)),
        }
    }
}
