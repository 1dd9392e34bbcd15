//! [`HandlerError`], what a handler returns when a task attempt fails, and
//! [`ServeError`], why a worker session ended abnormally.

use std::borrow::Cow;
use std::fmt;
use std::io;

use pool_core::protocol::FrameError;

/// Why a handler could not finish a task attempt.
///
/// The manager sees it as an error reply of kind `handler` (or the kind given with
/// [`with_kind`](Self::with_kind)), with this message and retry hint.
///
/// `HandlerError` deliberately does not implement [`std::error::Error`], so that any
/// error type converts into it with `?`: the conversion keeps the error's message
/// (and its sources) and marks it retryable.
///
/// # Examples
/// ```
/// use worker_sdk::HandlerError;
///
/// fn parse(text: &str) -> Result<u32, HandlerError> {
///     let n: u32 = text.parse()?; // any std error converts, retryable
///     if n == 0 {
///         return Err(HandlerError::fatal("zero is not allowed").with_kind("invalid_input"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").unwrap_err().is_retryable());
/// assert_eq!(parse("0").unwrap_err().kind(), "invalid_input");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: Cow<'static, str>,
    message: String,
    retryable: bool,
}

impl HandlerError {
    /// The kind reported when none is given: `handler`.
    pub const DEFAULT_KIND: &'static str = "handler";

    /// A failure another attempt may fix (a busy backend, a timeout, …).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: Cow::Borrowed(Self::DEFAULT_KIND),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix (invalid input, a missing resource, …): the manager
    /// skips the remaining attempts.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(message)
        }
    }

    /// Replaces the machine-readable kind sent to the manager (default `handler`).
    pub fn with_kind(mut self, kind: impl Into<Cow<'static, str>>) -> Self {
        self.kind = kind.into();
        self
    }

    /// The machine-readable kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    /// Keeps the error's message and its chain of sources; the result is retryable.
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retryable(message)
    }
}

/// Why [`Worker::serve`](crate::Worker::serve) or [`Worker::run`](crate::Worker::run)
/// stopped without being told to.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The manager speaks another protocol version (exit code 2).
    VersionMismatch {
        /// The version the manager announced.
        manager: u32,
        /// Ours, [`PROTOCOL_VERSION`](pool_core::protocol::PROTOCOL_VERSION).
        worker: u32,
    },
    /// The manager broke the protocol: a bad frame, or no hello first (exit code 2).
    Protocol(FrameError),
    /// The link could not be set up or read (exit code 1).
    Io(io::Error),
}

impl ServeError {
    /// The process exit code [`Worker::run`](crate::Worker::run) uses for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::VersionMismatch { .. } | Self::Protocol(_) => 2,
            Self::Io(_) => 1,
        }
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VersionMismatch { manager, worker } => write!(
                f,
                "protocol version mismatch: the manager speaks version {manager}, \
                 this worker speaks version {worker}"
            ),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Io(e) => write!(f, "link error: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::VersionMismatch { .. } => None,
            Self::Protocol(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<FrameError> for ServeError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Io(e) => Self::Io(e),
            other => Self::Protocol(other),
        }
    }
}
