//! [`TaskSource`]: the one seam between the daemon's dispatch and where its tasks live.

use async_trait::async_trait;

use crate::page::{ListFrom, ListOrder, ListPage};
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
        tasks: Vec<NewTask>,
        max_unsettled: u64,
    ) -> Result<Vec<Admission>, SourceError> {
        let unsettled = self.unsettled().await?;
        let room = usize::try_from(max_unsettled.saturating_sub(unsettled)).unwrap_or(usize::MAX);
        if tasks.len() <= room {
            return self.accept(tasks).await;
        }
        // Only new ids take room: the known ones are found first, and
        // answered with their state.
        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let (known, unknown_why) = match self.status(ids).await {
            Ok(known) => (known, String::new()),
            // Refused all the same past the room, saying that an id may be
            // held already.
            Err(e) => (
                Vec::new(),
                format!("; the store could not say whether it holds this id already ({e})"),
            ),
        };
        let mut plan = Vec::with_capacity(tasks.len());
        let mut first_of: std::collections::HashMap<String, usize> = Default::default();
        let mut fresh = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            plan.push(match known.get(i).and_then(Option::as_ref) {
                Some(record) => Plan::Known(record.state),
                None => match first_of.get(&task.id) {
                    Some(&first) => Plan::SameAs(first),
                    None => {
                        first_of.insert(task.id.clone(), i);
                        if fresh.len() < room {
                            fresh.push(task);
                            Plan::Stored(fresh.len() - 1)
                        } else {
                            Plan::Refused
                        }
                    }
                },
            });
        }
        let stored = if fresh.is_empty() {
            Vec::new()
        } else {
            self.accept(fresh).await?
        };
        let now = unsettled
            + stored
                .iter()
                .filter(|a| matches!(a, Admission::Accepted))
                .count() as u64;
        let full = Admission::Refused(format!(
            "{}{unknown_why}",
            queue_full_reason(now, max_unsettled)
        ));
        let mut out: Vec<Admission> = Vec::with_capacity(plan.len());
        for step in plan {
            let answer = match step {
                Plan::Known(state) => Admission::Known(state),
                Plan::Stored(at) => stored.get(at).cloned().unwrap_or_else(|| full.clone()),
                Plan::Refused => full.clone(),
                // A repeat of an id earlier in the batch: known once the
                // first was stored, refused with it.
                Plan::SameAs(first) => match out.get(first) {
                    Some(Admission::Accepted) => Admission::Known(crate::TaskState::Queued),
                    Some(other) => other.clone(),
                    None => full.clone(),
                },
            };
            out.push(answer);
        }
        Ok(out)
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

    /// Records how attempts ended, as [`settle`](Self::settle) does, and
    /// says which of them it could not record, by their place in
    /// `settlements`, with why: a source whose settlements are recorded
    /// apart from each other (a broker: one message each) records the others
    /// even when one is refused. The default records them all in one call, as
    /// a store's transaction does: all of them, or none.
    ///
    /// # Errors
    /// When the source cannot tell which it recorded: all of them are to be
    /// tried again (a source records a settlement it recorded already
    /// again without harm, or, as NATS does, answers it at once).
    async fn settle_each(
        &self,
        settlements: Vec<Settlement>,
    ) -> Result<Vec<(usize, SourceError)>, SourceError> {
        self.settle(settlements).await.map(|()| Vec::new())
    }

    /// Puts every task whose attempt was running back in the queue (after a
    /// crash), recording `interrupted` and giving the attempt back (most of
    /// them never reached a worker: a claimed task counts as running); returns
    /// how many.
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

    /// One page of a listing in `order`: at most `page` tasks of those
    /// `filter` picks (`filter.limit`: of the listing still to come, 0 for
    /// no limit), after `from` (the last page's [`ListPage::next`]; `None`
    /// for the first). Each page is a read of its own, so a listing of every
    /// task holds up the source's other requests for no longer than a page
    /// takes. The default reads the rest of the listing as one page (a source
    /// whose listing is no read in order of acceptance).
    ///
    /// # Errors
    /// When the source cannot be read.
    async fn list_page(
        &self,
        filter: Filter,
        order: ListOrder,
        from: Option<ListFrom>,
        page: usize,
    ) -> Result<ListPage, SourceError> {
        // The rest is one page, however long.
        let _ = page;
        if from.is_some() {
            return Ok(ListPage::default());
        }
        let records = match order {
            ListOrder::NewestFirst => self.list(filter).await?,
            // The oldest `limit` are the end of the whole listing.
            ListOrder::OldestFirst => {
                let limit = filter.limit;
                let mut all = self.list(Filter { limit: 0, ..filter }).await?;
                all.reverse();
                if limit > 0 {
                    all.truncate(limit);
                }
                all
            }
        };
        Ok(ListPage {
            records,
            next: None,
        })
    }

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

    /// Lets go of what the source holds open (a store's file) once every
    /// request sent before has been answered; later requests fail with
    /// [`SourceError::Closed`]. A daemon closes its source before it gives up
    /// its lock, so the next daemon never shares the source with it, however
    /// many clones of the source its stragglers still hold. The default does
    /// nothing (a source with nothing another process could trip over).
    async fn close(&self) {}
}

/// What [`TaskSource::accept_within`]'s provided method does with one task
/// of a batch that does not fit whole.
enum Plan {
    /// Known already, in this state.
    Known(crate::TaskState),
    /// Stored: its answer is at this place of the stored ones'.
    Stored(usize),
    /// No room left.
    Refused,
    /// A repeat of the id at this earlier place of the batch.
    SameAs(usize),
}
