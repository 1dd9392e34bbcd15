//! [`Completions`]: one channel that receives the outcomes of many tasks, for
//! callers that submit in bulk and want no handle (and no wake-up) per task.

use tokio::sync::mpsc;

use super::handle::{TaskError, TaskOutput};

/// A task's outcome as [`Completions`] delivers it: the task's id is in both
/// [`TaskOutput::id`] and [`TaskError::id`].
pub type Completion = Result<TaskOutput, TaskError>;

/// Where the outcomes of tasks submitted with
/// [`Pool::submit_each_to`](super::Pool::submit_each_to) arrive, in the order
/// the pool settles them: each accepted task's outcome exactly once.
///
/// Cheaper per task than a [`TaskHandle`](super::TaskHandle) each: no answer
/// channel of its own, and a caller woken once for every outcome that arrived
/// together. Cancel a task with [`Pool::cancel`](super::Pool::cancel); it then
/// arrives here as a [`FinalStatus::Cancelled`](super::FinalStatus) error (unless
/// it finished first).
///
/// ```
/// # #[allow(dead_code)]
/// # async fn demo(pool: pool_core::Pool) {
/// use pool_core::{Completions, Task};
///
/// let mut done = Completions::new();
/// let tasks = (0..3u32).map(|n| Task::msgpack("echo", &n).expect("a u32 encodes"));
/// let ids: Vec<u64> = pool
///     .submit_each_to(tasks, &done.sink())
///     .await
///     .into_iter()
///     .filter_map(Result::ok)
///     .collect();
/// let mut outcomes = Vec::new();
/// while outcomes.len() < ids.len() {
///     done.recv_many(&mut outcomes, 64).await;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Completions {
    tx: mpsc::UnboundedSender<Completion>,
    rx: mpsc::UnboundedReceiver<Completion>,
}

impl Default for Completions {
    fn default() -> Self {
        Self::new()
    }
}

impl Completions {
    /// An empty channel of outcomes.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { tx, rx }
    }

    /// Waits for at least one outcome, then appends every one that is there
    /// (at most `limit`) to `buf`; returns how many it appended. Waits forever
    /// when no submitted task is left to settle.
    ///
    /// # Cancel safety
    /// Cancel safe: no outcome is lost when the future is dropped.
    pub async fn recv_many(&mut self, buf: &mut Vec<Completion>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit.max(1)).await
    }

    /// An outcome that has arrived, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<Completion> {
        self.rx.try_recv().ok()
    }

    /// Where tasks are submitted to be answered here: give it to
    /// [`Pool::submit_each_to`](super::Pool::submit_each_to), from any task.
    pub fn sink(&self) -> CompletionSink {
        CompletionSink(self.tx.clone())
    }
}

/// The sending side of a [`Completions`] channel (cheap to clone).
#[derive(Debug, Clone)]
pub struct CompletionSink(mpsc::UnboundedSender<Completion>);

impl CompletionSink {
    /// The sender one task is answered through.
    pub(crate) fn sender(&self) -> mpsc::UnboundedSender<Completion> {
        self.0.clone()
    }
}
