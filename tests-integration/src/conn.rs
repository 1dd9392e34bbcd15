//! [`Subject`] (what the suite tests) and [`Conn`] (one launched worker, framed).

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use pool_core::process::WorkerProcess;
use pool_core::protocol::{
    decode_from_worker, encode_frame, FrameCodec, FrameError, FromWorker, TaskFrame, ToWorker,
    PROTOCOL_VERSION,
};
use pool_core::transport::{LinkReader, LinkWriter, Transport, WorkerSpec};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use crate::conformance::{TestResult, SUITE_MAX_FRAME};

/// A transport under test, the fixture worker it launches, and (optionally) a
/// directory whose entries must come back to their count after the workers go.
#[derive(Debug)]
pub struct Subject<T> {
    transport: T,
    worker: PathBuf,
    leftovers: Option<PathBuf>,
}

impl<T: Transport> Subject<T> {
    /// Tests `transport` with the fixture worker at `worker`.
    pub fn new(transport: T, worker: impl Into<PathBuf>) -> Self {
        Self {
            transport,
            worker: worker.into(),
            leftovers: None,
        }
    }

    /// Also checks that `dir` holds as many entries after the workers as before.
    pub fn with_leftovers(mut self, dir: impl Into<PathBuf>) -> Self {
        self.leftovers = Some(dir.into());
        self
    }

    /// The transport under test.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The directory watched for leftovers, if any.
    pub fn leftovers(&self) -> Option<&Path> {
        self.leftovers.as_deref()
    }

    /// A spec for the fixture worker, with the suite's frame limit.
    pub fn spec(&self, worker_id: &str) -> WorkerSpec {
        let mut spec = WorkerSpec::new(worker_id, &self.worker);
        spec.max_frame = SUITE_MAX_FRAME;
        spec
    }

    /// Launches the fixture worker and frames its link.
    ///
    /// # Errors
    /// When the transport cannot launch it.
    pub async fn launch(&self, worker_id: &str) -> TestResult<Conn> {
        Ok(Conn::new(
            self.transport.launch(&self.spec(worker_id)).await?,
        ))
    }
}

/// One launched worker: frames from it, bytes to it, and its process.
pub struct Conn {
    /// Frame bodies from the worker.
    pub frames: FramedRead<LinkReader, FrameCodec>,
    /// Bytes to the worker.
    pub writer: LinkWriter,
    /// The worker process.
    pub process: WorkerProcess,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Frames a link with the suite's limit.
    pub fn new(link: pool_core::Link) -> Self {
        Self {
            frames: FramedRead::new(link.reader, FrameCodec::new(SUITE_MAX_FRAME)),
            writer: link.writer,
            process: link.process,
        }
    }

    /// Sends one message.
    ///
    /// # Errors
    /// When it cannot be encoded or written.
    pub async fn send(&mut self, message: &ToWorker<'_>) -> TestResult {
        let mut frame = BytesMut::new();
        encode_frame(message, &mut frame, SUITE_MAX_FRAME)?;
        self.writer.write_all(&frame).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Sends a task of `task_type` with `payload`.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn task(&mut self, id: u64, task_type: &str, payload: &[u8]) -> TestResult {
        self.send(&task(id, task_type, payload)).await
    }

    /// The next frame body, `Ok(None)` at a clean EOF.
    ///
    /// # Errors
    /// The framing error, typed.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.frames.next().await.transpose()
    }

    /// Says hello and checks the `ready` answer; returns the pid the worker reports.
    ///
    /// # Errors
    /// When the answer is missing, malformed or of another version.
    pub async fn handshake(&mut self, worker_id: &str) -> TestResult<u32> {
        self.send(&ToWorker::Hello {
            version: PROTOCOL_VERSION,
            worker_id,
            heartbeat_ms: 1000,
            max_frame: SUITE_MAX_FRAME as u32,
        })
        .await?;
        let body = self.recv().await?.ok_or("EOF instead of ready")?;
        match decode_from_worker(&body)? {
            FromWorker::Ready { version, pid, .. } if version == PROTOCOL_VERSION => Ok(pid),
            other => Err(format!("expected ready, got {other:?}").into()),
        }
    }

    /// Waits for the result of task `id` and returns its payload.
    ///
    /// # Errors
    /// On EOF, a framing error, or another message.
    pub async fn result(&mut self, id: u64) -> TestResult<Bytes> {
        let body = self.recv().await?.ok_or("EOF instead of a result")?;
        match decode_from_worker(&body)? {
            FromWorker::Result { id: got, payload } if got == id => Ok(body.slice_ref(payload)),
            other => Err(format!("expected the result of task {id}, got {other:?}").into()),
        }
    }

    /// Asks the worker to exit and checks that it did so cleanly.
    ///
    /// # Errors
    /// When the worker fails to exit with success.
    pub async fn shutdown(mut self) -> TestResult {
        self.send(&ToWorker::Shutdown { graceful: true }).await?;
        let status = self.process.wait().await?;
        if !status.success() {
            return Err(format!("worker exited with {status}").into());
        }
        Ok(())
    }
}

/// A task message (attempt 1, generous timeout).
pub(crate) fn task<'a>(id: u64, task_type: &'a str, payload: &'a [u8]) -> ToWorker<'a> {
    ToWorker::Task(TaskFrame {
        id,
        task_type,
        payload,
        attempt: 1,
        timeout_ms: 60_000,
    })
}
