//! [`Task`]: what a caller submits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// The highest priority (served first).
pub const PRIORITY_HIGHEST: u8 = 0;
/// The lowest priority (served last).
pub const PRIORITY_LOWEST: u8 = 100;
/// The priority of a task that does not set one.
pub const PRIORITY_DEFAULT: u8 = 10;

/// A unit of work: a type that names the worker's handler and an opaque payload.
///
/// The payload is bytes the pool never decodes; by convention (and in `worker-sdk`)
/// it is MessagePack, which [`Task::msgpack`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Task {
    /// Which handler runs it. Shared (`Arc<str>`): the pool keeps one copy per
    /// distinct type however many tasks wait.
    pub task_type: Arc<str>,
    /// The input, opaque to the pool.
    pub payload: Bytes,
    /// 0 (highest) … 100 (lowest); default 10.
    pub priority: u8,
    /// Per-attempt timeout; the pool's default when `None`.
    pub timeout: Option<Duration>,
    /// Retries after the first attempt; the pool's default when `None`.
    pub max_retries: Option<u32>,
}

impl Task {
    /// A task of `task_type` with raw payload bytes and default settings.
    pub fn new(task_type: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        Self {
            task_type: task_type.into(),
            payload: payload.into(),
            priority: PRIORITY_DEFAULT,
            timeout: None,
            max_retries: None,
        }
    }

    /// A task whose payload is `value` encoded as MessagePack (named fields).
    ///
    /// # Errors
    /// When `value` cannot be encoded.
    pub fn msgpack<T: Serialize + ?Sized>(
        task_type: impl Into<Arc<str>>,
        value: &T,
    ) -> Result<Self, rmp_serde::encode::Error> {
        Ok(Self::new(task_type, rmp_serde::to_vec_named(value)?))
    }

    /// Sets the priority (0 highest … 100 lowest; values above 100 are rejected at
    /// submission).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets how many retries follow a failed first attempt (0 = none).
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }
}
