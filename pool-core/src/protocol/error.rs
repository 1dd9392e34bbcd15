//! Typed errors of framing and decoding.

use std::io;

/// Why a frame could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced more than the configured maximum; nothing was allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced (or attempted) body length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The body was not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended {got} bytes into a {expected}-byte frame")]
    Truncated {
        /// Bytes the frame should have had (prefix included, when known).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: worker speaks {worker}, manager speaks {manager}")]
    VersionMismatch {
        /// The worker's version.
        worker: u32,
        /// Ours.
        manager: u32,
    },
    /// A valid message arrived where another was required (e.g. no `ready` first).
    #[error("unexpected message: expected {expected}, got {got}")]
    Unexpected {
        /// What the protocol required here.
        expected: &'static str,
        /// What came instead.
        got: String,
    },
    /// The underlying byte stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// A short machine-readable class, used in error replies and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "frame_too_large",
            Self::Malformed(_) => "malformed_frame",
            Self::Truncated { .. } => "truncated_frame",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::Unexpected { .. } => "unexpected_message",
            Self::Io(_) => "io",
        }
    }
}
