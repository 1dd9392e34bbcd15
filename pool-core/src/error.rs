//! Errors that cross modules: configuration, start-up and submission.

use crate::task::Task;

/// A configuration value that does not make sense; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The configuration key (as spelled in config files and flags).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// Why a pool could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A worker could not be launched or did not complete its handshake. The pool
    /// stopped every other worker and spawns no more.
    #[error("worker failed to start: {reason}{}{}", exit_text(.exit), tail_text(.stderr_tail))]
    Worker {
        /// What went wrong.
        reason: String,
        /// How the process ended, when it ran at all (`exit code 3`, `signal 9`).
        exit: Option<String>,
        /// The last lines it wrote on stderr.
        stderr_tail: String,
    },
}

fn exit_text(exit: &Option<String>) -> String {
    exit.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
}

fn tail_text(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr:\n{tail}")
    }
}

/// Why a task was not accepted. The task is given back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The queue holds `max_queue_len` tasks already.
    #[error("queue is full")]
    QueueFull(Task),
    /// The pool is shutting down or gone.
    #[error("pool is shutting down")]
    ShuttingDown(Task),
    /// The pool stopped working: its actor ended without a shutdown (a panic).
    #[error("the pool stopped working: {reason}")]
    Failed {
        /// The refused task.
        task: Task,
        /// Why it stopped (as [`Pool::failure`](crate::Pool::failure) says).
        reason: String,
    },
    /// The priority is above 100.
    #[error("priority {} is out of range 0..=100", .0.priority)]
    InvalidPriority(Task),
    /// The task's frame would exceed `max_frame`: its payload and type, plus
    /// [`TASK_FRAME_OVERHEAD`] bytes for the frame's other keys.
    #[error(
        "payload too large: {} bytes of payload and type leave no room in a frame of at most {max_frame} bytes",
        task.payload.len() + task.task_type.len()
    )]
    PayloadTooLarge {
        /// The refused task.
        task: Task,
        /// The pool's `max_frame`.
        max_frame: usize,
    },
}

/// Bytes a task frame needs beyond its payload and type (its prefix, keys, id,
/// attempt and timeout), as [`Pool::submit`](crate::Pool::submit) counts them.
pub const TASK_FRAME_OVERHEAD: usize = 96;

impl SubmitError {
    /// The task that was refused.
    pub fn into_task(self) -> Task {
        match self {
            Self::QueueFull(t) | Self::ShuttingDown(t) | Self::InvalidPriority(t) => t,
            Self::PayloadTooLarge { task, .. } | Self::Failed { task, .. } => task,
        }
    }

    /// A short machine-readable class: `queue_full`, `shutting_down`,
    /// `invalid_priority`, `payload_too_large` or `pool_failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::QueueFull(_) => "queue_full",
            Self::ShuttingDown(_) => "shutting_down",
            Self::InvalidPriority(_) => "invalid_priority",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Failed { .. } => "pool_failed",
        }
    }
}

impl std::fmt::Debug for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::QueueFull(_) => "QueueFull",
            Self::ShuttingDown(_) => "ShuttingDown",
            Self::InvalidPriority(_) => "InvalidPriority",
            Self::PayloadTooLarge { .. } => "PayloadTooLarge",
            Self::Failed { .. } => "Failed",
        };
        f.debug_tuple(name).finish_non_exhaustive()
    }
}
