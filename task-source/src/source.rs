//! [`TaskSource`]: the one seam between the daemon's dispatch and where its tasks live.

use async_trait::async_trait;

use crate::record::{
    queue_full_reason, Admission, Claimed, Filter, NewTask, Settlement, SourceError, SourceStats,
    TaskRecord, TaskStatus,
};

/// What [`TaskSource::requeue_dead`] did with one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Back in the queue under the same id, attempts reset.
    Requeued,
    /// The source knows no task with this id.
    Unknown,
    /// The task is not in the dead-letter queue; its state.
    NotDeadLettered(crate::TaskState),
    /// A dead letter whose message was no task (`invalid_input`): kept as it
    /// is, since a retry could only fail again, and republishing it as a task
    /// would lose the bytes that were sent.
    NotATask,
}

/// Where the daemon's tasks live and how their lives are recorded.
///
/// The daemon accepts tasks into the source, claims ready ones (which starts an
/// attempt), runs each claimed attempt once on the pool, and settles it: ok,
/// failed, dead-lettered or cancelled for good, or retried after a delay. The
/// retry and dead-letter decisions are the daemon's (from its retry policy); a
/// source only records them, so a broker that redelivers with a delay or
/// terminates a message expresses the same outcomes.
///
/// Every method may be called from many tasks at once.
#[async_trait]
pub trait TaskSource: Send + Sync + std::fmt::Debug {
    /// Stores new tasks, in order, idempotently by id: a known id is left as it
    /// is and answered with its state. Answered only once the tasks are as
    /// durable as the source promises.
    ///
    /// # Errors
    /// When nothing could be stored (the whole batch is refused).
    async fn accept(&self, tasks: Vec<NewTask>) -> Result<Vec<Admission>, SourceError>;

    /// Stores new tasks as [`accept`](Self::accept) does while fewer than
    /// `max_unsettled` tasks wait or run: a new task past that is refused
    /// ([`Admission::queue_full`]); a known id is answered with its state
    /// either way.
    ///
    /// This default counts ([`unsettled`](Self::unsettled)) and then stores,
    /// two steps, so calls made at the same time may together pass the limit
    /// by up to their own sizes. A source that counts and stores in one step
    /// (one transaction, one lock) overrides it and never passes it.
    ///
    /// # Errors
    /// When the source cannot be counted, or nothing could be stored.
    async fn accept_within(
        &self,
        mut tasks: Vec<NewTask>,
        max_unsettled: u64,
    ) -> Result<Vec<Admission>, SourceError> {
        let unsettled = self.unsettled().await?;
        let room = usize::try_from(max_unsettled.saturating_sub(unsettled)).unwrap_or(usize::MAX);
        let over: Vec<String> = tasks
            .split_off(room.min(tasks.len()))
            .into_iter()
            .map(|t| t.id)
            .collect();
        let mut admissions = if tasks.is_empty() {
            Vec::new()
        } else {
            self.accept(tasks).await?
        };
        if over.is_empty() {
            return Ok(admissions);
        }
        // Known ids are still answered with their state; new ones are refused.
        let (known, unknown_why) = match self.status(over.clone()).await {
            Ok(known) => (known, String::new()),
            // Refused all the same, saying that an id may be held already.
            Err(e) => (
                Vec::new(),
                format!("; the store could not say whether it holds this id already ({e})"),
            ),
        };
        for i in 0..over.len() {
            admissions.push(match known.get(i).and_then(Option::as_ref) {
                Some(r) => Admission::Known(r.state),
                None => Admission::Refused(format!(
                    "{}{unknown_why}",
                    queue_full_reason(unsettled, max_unsettled)
                )),
            });
        }
        Ok(admissions)
    }

    /// Hands out up to `max` ready tasks (queued, or retrying and due by
    /// `now_ms`), highest priority then oldest first, and records each one's
    /// attempt as started.
    ///
    /// # Errors
    /// When the source cannot record the attempts.
    async fn claim(&self, max: usize, now_ms: u64) -> Result<Vec<Claimed>, SourceError>;

    /// Records how attempts ended.
    ///
    /// # Errors
    /// When the source cannot record them.
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), SourceError>;

    /// Puts every task whose attempt was running back in the queue (after a
    /// crash), recording `interrupted`; returns how many.
    ///
    /// # Errors
    /// When the source cannot record it.
    async fn recover(&self) -> Result<u64, SourceError>;

    /// The records of `ids`, in order (`None` for an unknown id).
    ///
    /// # Errors
    /// When the source cannot be read.
    async fn get(&self, ids: Vec<String>) -> Result<Vec<Option<TaskRecord>>, SourceError>;

    /// Where each of `ids` stands (state, attempts, the line once settled), in
    /// order (`None` for an unknown id): what `result` and `wait` show. The
    /// default reads whole records with [`get`](Self::get); a source that can
    /// read less per task should.
    ///
    /// # Errors
    /// When the source cannot be read.
    async fn status(&self, ids: Vec<String>) -> Result<Vec<Option<TaskStatus>>, SourceError> {
        Ok(self
            .get(ids)
            .await?
            .into_iter()
            .map(|r| r.map(TaskStatus::from))
            .collect())
    }

    /// Recent tasks matching `filter`, newest first.
    ///
    /// # Errors
    /// When the source cannot be read.
    async fn list(&self, filter: Filter) -> Result<Vec<TaskRecord>, SourceError>;

    /// Puts dead letters back in the queue under their ids with their attempts
    /// reset (every dead letter when `ids` is `None`).
    ///
    /// # Errors
    /// When the source cannot record it.
    async fn requeue_dead(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(String, Requeue)>, SourceError>;

    /// Removes every dead letter; returns their ids.
    ///
    /// # Errors
    /// When the source cannot record it.
    async fn purge_dead(&self) -> Result<Vec<String>, SourceError>;

    /// Forgets settled tasks last changed before `settled_before_ms`, and the
    /// oldest settled ones while the store is above `max_bytes`; returns how
    /// many were removed. Dead letters are kept ([`TaskState::PRUNABLE`](crate::TaskState::PRUNABLE)).
    ///
    /// # Errors
    /// When the source cannot record it.
    async fn prune(
        &self,
        settled_before_ms: u64,
        max_bytes: Option<u64>,
    ) -> Result<u64, SourceError>;

    /// The number of tasks not yet settled.
    ///
    /// # Errors
    /// When the source cannot be read.
    async fn unsettled(&self) -> Result<u64, SourceError>;

    /// Size, rows by state, commit latency, health.
    ///
    /// # Errors
    /// When the source cannot be read.
    async fn stats(&self) -> Result<SourceStats, SourceError>;

    /// The longest result line, in bytes, the source can store; `None` when
    /// it stores any. A task whose line is longer is settled as failed with
    /// the error kind `result_too_large` by whoever settles it.
    fn max_line_bytes(&self) -> Option<usize> {
        None
    }
}
