//! [`StdioTransport`]: the worker's stdin/stdout as the link.

use std::process::Stdio;

use async_trait::async_trait;
use pool_core::process::WorkerProcess;
use pool_core::transport::{LaunchError, Link, Transport, WorkerSpec};

/// The pipe size asked for by default: 1 MiB.
pub const DEFAULT_PIPE_SIZE: usize = 1024 * 1024;

/// Launches workers with their stdin/stdout as the protocol link.
#[derive(Debug, Clone, Copy)]
pub struct StdioTransport {
    pipe_size: usize,
}

impl StdioTransport {
    /// A transport that asks for [`DEFAULT_PIPE_SIZE`] pipes.
    pub fn new() -> Self {
        Self {
            pipe_size: DEFAULT_PIPE_SIZE,
        }
    }

    /// Asks for pipes of `bytes` (0 keeps the OS default). The kernel caps the size at
    /// `/proc/sys/fs/pipe-max-size`; a refused size is logged and the default kept.
    pub fn with_pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }
}

impl Default for StdioTransport {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Transport for StdioTransport {
    fn name(&self) -> &'static str {
        "stdio"
    }

    async fn launch(&self, spec: &WorkerSpec) -> Result<Link, LaunchError> {
        let mut cmd = spec.command(self.name());
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(LaunchError::Setup(std::io::Error::other(
                "child has no stdin/stdout pipe",
            )));
        };
        if self.pipe_size > 0 {
            pool_core::transport::grow_pipe(&stdin, self.pipe_size);
            pool_core::transport::grow_pipe(&stdout, self.pipe_size);
        }
        Ok(Link {
            reader: Box::pin(stdout),
            writer: Box::pin(stdin),
            process: WorkerProcess::new(child, &spec.worker_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pool_core::transport::LaunchError;

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let spec = WorkerSpec::new("worker-0", "/nonexistent/cortex-worker");
        let err = StdioTransport::new().launch(&spec).await.unwrap_err();
        assert!(matches!(err, LaunchError::Spawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn bytes_round_trip_through_a_real_child() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let spec = WorkerSpec::new("worker-0", "cat");
        let mut link = StdioTransport::new().launch(&spec).await.unwrap();
        link.writer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        link.reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        drop(link.writer);
        let status = link.process.wait().await.unwrap();
        assert!(status.success());
    }
}
