//! [`TaskHandle`]: the caller's side of one submitted task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::actor::Command;
use super::failure::Failure;
use super::outcome_cell::Waiter;

/// A task's successful outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskOutput {
    /// The task's id.
    pub id: u64,
    /// The worker's result bytes (MessagePack by convention), never decoded by the pool.
    pub payload: Bytes,
    /// Attempts it took (1 when the first one succeeded).
    pub attempts: u32,
    /// The worker that produced it (`worker-N`), shared with the other
    /// outputs of that worker.
    pub worker: Arc<str>,
    /// How long the successful attempt ran.
    pub run_time: Duration,
    /// How long the task waited in the queue before its successful attempt.
    pub queue_time: Duration,
}

impl TaskOutput {
    /// Decodes the result as MessagePack into `T`.
    ///
    /// # Errors
    /// When the bytes are not a MessagePack encoding of `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, rmp_serde::decode::Error> {
        rmp_serde::from_slice(&self.payload)
    }
}

/// How a task that produced no result ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinalStatus {
    /// It failed without a retry left to try (a non-retryable error, a shutdown).
    Failed,
    /// Every attempt failed; it is in the dead-letter queue.
    DeadLettered,
    /// The caller cancelled it.
    Cancelled,
    /// Every attempt failed, the last with a retryable error, and it asked not to
    /// be dead-lettered ([`Task::dead_letter`](crate::Task::dead_letter) off): its
    /// submitter decides what comes next.
    Exhausted,
}

/// A task's unsuccessful outcome: how it ended and the real cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {id} {}: {failure}", status_text(*.status))]
#[non_exhaustive]
pub struct TaskError {
    /// The task's id.
    pub id: u64,
    /// How it ended.
    pub status: FinalStatus,
    /// Why its last attempt failed.
    pub failure: Failure,
    /// How many attempts ran.
    pub attempts: u32,
    /// The worker of the last attempt, if any ran.
    pub worker: Option<Arc<str>>,
}

fn status_text(status: FinalStatus) -> &'static str {
    match status {
        FinalStatus::Failed => "failed",
        FinalStatus::DeadLettered => "was dead-lettered",
        FinalStatus::Cancelled => "was cancelled",
        FinalStatus::Exhausted => "ran out of attempts",
    }
}

pub(crate) type Outcome = Result<TaskOutput, TaskError>;

/// The caller's handle on a submitted task: its id, a future of its outcome, and
/// cancellation.
///
/// Dropping the handle does not cancel the task; call [`cancel`](Self::cancel).
///
/// Handles made one after another on a thread share one allocation, sixteen
/// to a block (about 1.4 KiB), freed once all of them and their tasks are
/// done with (a thread keeps the block it makes its next handles from). A
/// program that keeps a few handles of many for long keeps their blocks,
/// though not the other tasks' outcomes; one that awaits each handle, or
/// submits with [`Pool::submit_each_to`](super::Pool::submit_each_to), does
/// not.
pub struct TaskHandle {
    id: u64,
    outcome: Waiter,
    /// The actor's channel, shared with the other handles its pool clone made.
    commands: Arc<mpsc::UnboundedSender<Command>>,
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TaskHandle {
    pub(crate) fn new(
        id: u64,
        outcome: Waiter,
        commands: Arc<mpsc::UnboundedSender<Command>>,
    ) -> Self {
        Self {
            id,
            outcome,
            commands,
        }
    }

    /// The task's id, unique within the pool.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Asks the pool to cancel the task. A queued task is removed at once; a running
    /// one is told to stop and its worker killed if it does not answer in time. The
    /// handle then resolves to a [`FinalStatus::Cancelled`] error — unless the task
    /// had already finished.
    pub fn cancel(&self) {
        let _ = self.commands.send(Command::Cancel(self.id));
    }
}

impl Future for TaskHandle {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let id = self.id;
        self.outcome.poll(cx).map(|told| match told {
            Some(held) => held.into_outcome(id),
            None => Err(TaskError {
                id,
                status: FinalStatus::Failed,
                failure: Failure::ShuttingDown,
                attempts: 0,
                worker: None,
            }),
        })
    }
}
