//! [`Failure`]: why one attempt of a task did not produce a result.

use std::fmt;
use std::time::Duration;

/// Why an attempt (or a task) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The worker's handler reported an error.
    Handler {
        /// The worker's class for it (`handler`, `panic`, `unknown_type`, …).
        kind: String,
        /// Its message.
        message: String,
    },
    /// The attempt ran past its timeout; the worker was killed.
    TimedOut {
        /// The timeout that expired.
        after: Duration,
    },
    /// The worker process ended while the attempt ran.
    WorkerDied {
        /// How it ended (`exit code 3`, `signal 9`).
        exit: String,
        /// The last lines it wrote on stderr.
        stderr_tail: String,
    },
    /// The worker broke the protocol (malformed or oversized frame); it was killed.
    Protocol {
        /// The protocol error.
        message: String,
    },
    /// A health probe condemned the worker; it was killed.
    Unhealthy {
        /// The probe's reason.
        reason: String,
    },
    /// No worker takes the task's type: every live worker listed its task types
    /// and none lists this one, with no other worker on its way (or none came
    /// within the task's timeout). The task never ran.
    Unroutable {
        /// The task's type.
        task_type: String,
        /// The types the live workers take (sorted).
        offered: Vec<String>,
        /// Set when the task waited its timeout for a worker that might take it.
        waited: Option<Duration>,
    },
    /// The caller cancelled the task.
    Cancelled,
    /// The pool shut down before the task could finish.
    ShuttingDown,
}

impl Failure {
    /// A short machine-readable class: the handler's own kind, or `timeout`,
    /// `worker_crashed`, `protocol`, `unhealthy`, `unroutable`, `cancelled`,
    /// `shutting_down`.
    pub fn kind(&self) -> &str {
        match self {
            Self::Handler { kind, .. } => kind,
            Self::TimedOut { .. } => "timeout",
            Self::WorkerDied { .. } => "worker_crashed",
            Self::Protocol { .. } => "protocol",
            Self::Unhealthy { .. } => "unhealthy",
            Self::Unroutable { .. } => "unroutable",
            Self::Cancelled => "cancelled",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler { message, .. } => f.write_str(message),
            Self::TimedOut { after } => {
                write!(f, "attempt timed out after {} ms", after.as_millis())
            }
            Self::WorkerDied { exit, stderr_tail } if stderr_tail.is_empty() => {
                write!(f, "worker died ({exit})")
            }
            Self::WorkerDied { exit, stderr_tail } => {
                write!(f, "worker died ({exit}); stderr: {stderr_tail}")
            }
            Self::Protocol { message } => write!(f, "worker broke the protocol: {message}"),
            Self::Unhealthy { reason } => write!(f, "worker killed as unhealthy: {reason}"),
            Self::Unroutable {
                task_type,
                offered,
                waited,
            } => {
                match waited {
                    None => write!(f, "no worker takes task type `{task_type}`")?,
                    Some(t) => write!(
                        f,
                        "no worker took task type `{task_type}` within the task's timeout ({} ms)",
                        t.as_millis()
                    )?,
                }
                if offered.is_empty() {
                    f.write_str(" (no worker that lists its task types is running)")
                } else {
                    write!(f, " (the workers take: {})", offered.join(", "))
                }
            }
            Self::Cancelled => f.write_str("cancelled"),
            Self::ShuttingDown => f.write_str("pool is shutting down"),
        }
    }
}
