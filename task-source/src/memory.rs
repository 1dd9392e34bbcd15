//! [`MemorySource`]: every task in this process's memory (`durability = "memory"`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use foldhash::HashMap;

use async_trait::async_trait;

use crate::now_ms;
use crate::page::{ListFrom, ListOrder, ListPage};
use crate::record::{
    Admission, Claimed, Filter, HistoryEntry, NewTask, Outcome, Settlement, SourceError,
    SourceHealth, SourceStats, TaskRecord, TaskState, TaskStatus,
};
use crate::source::{Requeue, TaskSource};

/// A task source in memory: fast, and gone when the process ends.
#[derive(Debug, Default)]
pub struct MemorySource {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every record, by sequence number: task `seq`'s is at
    /// `slots[seq - first_seq]`, `None` once removed (removed slots at the
    /// front are dropped). The queues below name tasks by sequence number, so
    /// taking the next one reads its slot without hashing its id; a record is
    /// boxed, so the slots that grow move pointers, not records.
    slots: VecDeque<Option<Box<TaskRecord>>>,
    /// The sequence number of `slots[0]`.
    first_seq: u64,
    /// Sequence numbers by id (foldhash: SipHash took a twentieth of a memory
    /// daemon's instructions per task).
    seqs: HashMap<String, u64>,
    /// Tasks not settled yet (queued, running or retrying), kept as records
    /// change state: the admission check reads it on every submit.
    unsettled: u64,
    /// Queued tasks: (priority, seq).
    ready: BTreeSet<(u8, u64)>,
    /// Retrying tasks: (due, seq).
    delayed: BTreeSet<(u64, u64)>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn entry(event: &str, attempt: u32, at_ms: u64) -> HistoryEntry {
    HistoryEntry {
        at_ms,
        event: event.to_owned(),
        attempt,
    }
}

/// How a change of state from `from` to `to` changes the count of unsettled tasks.
fn unsettled_delta(from: TaskState, to: TaskState) -> i64 {
    i64::from(from.is_settled()) - i64::from(to.is_settled())
}

/// Puts running `rec` back in the queue with its attempt given back,
/// recording `event` at the attempt it ends.
fn give_back(rec: &mut TaskRecord, event: &str, now: u64) {
    rec.state = TaskState::Queued;
    rec.history.push(entry(event, rec.attempts, now));
    rec.attempts = rec.attempts.saturating_sub(1);
}

/// Where task `seq`'s slot is in `slots`, whose first is `first_seq`'s.
fn at(first_seq: u64, seq: u64) -> Option<usize> {
    usize::try_from(seq.checked_sub(first_seq)?).ok()
}

/// Task `seq`'s record, to change (borrowing only the slots, so the caller
/// may change the other fields meanwhile).
fn slot_mut(
    slots: &mut VecDeque<Option<Box<TaskRecord>>>,
    first_seq: u64,
    seq: u64,
) -> Option<&mut TaskRecord> {
    slots.get_mut(at(first_seq, seq)?)?.as_deref_mut()
}

impl Inner {
    /// The sequence number the next accepted task gets.
    fn next_seq(&self) -> u64 {
        self.first_seq + self.slots.len() as u64
    }

    fn slot(&self, seq: u64) -> Option<&TaskRecord> {
        self.slots.get(at(self.first_seq, seq)?)?.as_deref()
    }

    /// Task `id`'s sequence number and record.
    fn get(&self, id: &str) -> Option<(u64, &TaskRecord)> {
        let seq = *self.seqs.get(id)?;
        Some((seq, self.slot(seq)?))
    }

    /// Task `id`'s sequence number and record, to change.
    fn get_mut(&mut self, id: &str) -> Option<(u64, &mut TaskRecord)> {
        let seq = *self.seqs.get(id)?;
        Some((seq, slot_mut(&mut self.slots, self.first_seq, seq)?))
    }

    /// Every record with its sequence number, oldest first.
    fn records(&self) -> impl DoubleEndedIterator<Item = (u64, &TaskRecord)> {
        self.records_in(0..self.slots.len())
    }

    /// The records in the slots `range`, with their sequence numbers, oldest
    /// first.
    fn records_in(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl DoubleEndedIterator<Item = (u64, &TaskRecord)> {
        let first = self.first_seq + range.start as u64;
        self.slots
            .range(range)
            .enumerate()
            .filter_map(move |(i, slot)| Some((first + i as u64, slot.as_deref()?)))
    }

    /// The sequence numbers of the records `keep` picks, oldest first.
    fn picked(&self, keep: impl Fn(&TaskRecord) -> bool) -> Vec<u64> {
        self.records()
            .filter(|(_, r)| keep(r))
            .map(|(seq, _)| seq)
            .collect()
    }

    /// Queues task `seq`.
    fn enqueue(&mut self, seq: u64) {
        if let Some(priority) = self.slot(seq).map(|r| r.task.priority) {
            self.ready.insert((priority, seq));
        }
    }

    /// Removes task `seq`, and gives its id.
    fn remove(&mut self, seq: u64) -> Option<String> {
        let rec = self.slots.get_mut(at(self.first_seq, seq)?)?.take()?;
        self.seqs.remove(&rec.task.id);
        if !rec.state.is_settled() {
            self.unsettled = self.unsettled.saturating_sub(1);
        }
        self.ready.remove(&(rec.task.priority, seq));
        self.delayed.remove(&(rec.due_ms, seq));
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first_seq += 1;
        }
        Some(rec.task.id)
    }
}

#[async_trait]
impl TaskSource for MemorySource {
    async fn accept(&self, tasks: Vec<NewTask>) -> Result<Vec<Admission>, SourceError> {
        self.accept_within(tasks, u64::MAX).await
    }

    /// Counts and stores under one lock: never past `max_unsettled`.
    async fn accept_within(
        &self,
        tasks: Vec<NewTask>,
        max_unsettled: u64,
    ) -> Result<Vec<Admission>, SourceError> {
        let mut inner = self.lock();
        let now = now_ms();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Some((_, known)) = inner.get(&task.id) {
                out.push(Admission::Known(known.state));
                continue;
            }
            if inner.unsettled >= max_unsettled {
                out.push(Admission::queue_full(inner.unsettled, max_unsettled));
                continue;
            }
            let seq = inner.next_seq();
            let priority = task.priority;
            inner.seqs.insert(task.id.clone(), seq);
            inner.slots.push_back(Some(Box::new(TaskRecord {
                task,
                state: TaskState::Queued,
                attempts: 0,
                error: None,
                line: None,
                created_ms: now,
                updated_ms: now,
                due_ms: 0,
                // An attempt and its end, the history of most tasks.
                history: Vec::with_capacity(2),
            })));
            inner.unsettled += 1;
            inner.ready.insert((priority, seq));
            out.push(Admission::Accepted);
        }
        Ok(out)
    }

    async fn claim(&self, max: usize, now_ms: u64) -> Result<Vec<Claimed>, SourceError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let due: Vec<(u64, u64)> = inner
            .delayed
            .iter()
            .take_while(|(due, _)| *due <= now_ms)
            .copied()
            .collect();
        for key in due {
            inner.delayed.remove(&key);
            inner.enqueue(key.1);
        }
        let mut out = Vec::with_capacity(max.min(inner.ready.len()));
        while out.len() < max {
            let Some((_, seq)) = inner.ready.pop_first() else {
                break;
            };
            if let Some(rec) = slot_mut(&mut inner.slots, inner.first_seq, seq) {
                rec.state = TaskState::Running;
                rec.attempts += 1;
                rec.due_ms = 0;
                rec.updated_ms = now_ms;
                rec.history.push(entry("attempt", rec.attempts, now_ms));
                out.push(Claimed {
                    task: rec.task.clone(),
                    attempt: rec.attempts,
                    submitted_ms: rec.created_ms,
                });
            }
        }
        Ok(out)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), SourceError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = now_ms();
        for s in settlements {
            let Some(&seq) = inner.seqs.get(&s.id) else {
                continue;
            };
            let Some(rec) = slot_mut(&mut inner.slots, inner.first_seq, seq) else {
                continue;
            };
            if rec.state != TaskState::Running || rec.attempts != s.attempt {
                continue;
            }
            rec.updated_ms = now;
            match s.outcome {
                Outcome::Settled { state, line, error } => {
                    inner.unsettled = inner
                        .unsettled
                        .saturating_add_signed(unsettled_delta(TaskState::Running, state));
                    rec.state = state;
                    rec.line = Some(line);
                    // A success leaves no error behind (a retry's, say); a
                    // failure without one keeps the last known.
                    if error.is_some() || state == TaskState::Ok {
                        rec.error = error;
                    }
                    rec.history.push(entry(state.as_str(), s.attempt, now));
                }
                Outcome::Retry { due_ms, error } => {
                    rec.state = TaskState::Retrying;
                    rec.due_ms = due_ms;
                    rec.error = Some(error);
                    rec.history.push(entry("retry", s.attempt, now));
                    inner.delayed.insert((due_ms, seq));
                }
                Outcome::Interrupted => {
                    give_back(rec, "interrupted", now);
                    inner.ready.insert((rec.task.priority, seq));
                }
                Outcome::NotStarted => {
                    give_back(rec, "withdrawn", now);
                    inner.ready.insert((rec.task.priority, seq));
                }
            }
        }
        Ok(())
    }

    async fn recover(&self) -> Result<u64, SourceError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let running = inner.picked(|r| r.state == TaskState::Running);
        let now = now_ms();
        for &seq in &running {
            if let Some(rec) = slot_mut(&mut inner.slots, inner.first_seq, seq) {
                give_back(rec, "interrupted", now);
                inner.ready.insert((rec.task.priority, seq));
            }
        }
        Ok(running.len() as u64)
    }

    async fn get(&self, ids: Vec<String>) -> Result<Vec<Option<TaskRecord>>, SourceError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| inner.get(id).map(|(_, r)| r.clone()))
            .collect())
    }

    async fn status(&self, ids: Vec<String>) -> Result<Vec<Option<TaskStatus>>, SourceError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| {
                inner.get(id).map(|(_, r)| TaskStatus {
                    state: r.state,
                    attempts: r.attempts,
                    line: r.line.clone(),
                })
            })
            .collect())
    }

    async fn list(&self, filter: Filter) -> Result<Vec<TaskRecord>, SourceError> {
        let all = self.list_page(filter, ListOrder::NewestFirst, None, 0);
        Ok(all.await?.records)
    }

    async fn list_page(
        &self,
        filter: Filter,
        order: ListOrder,
        from: Option<ListFrom>,
        page: usize,
    ) -> Result<ListPage, SourceError> {
        let inner = self.lock();
        let page = ListPage::size(filter.limit, page);
        let wanted = |(_, r): &(u64, &TaskRecord)| filter.matches(r.state, &r.task.task_type);
        let owned = |(seq, r): (u64, &TaskRecord)| (seq, r.clone());
        // The walk starts at `from`'s slot: a page does not step over the
        // tasks of the pages before it.
        let slots = inner.slots.len();
        let first = inner.first_seq;
        // `from`'s slot; 0 when its task came before the first slot.
        let slot = |ListFrom(seq)| at(first, seq).map_or(0, |at| at.min(slots));
        let range = match (order, from) {
            (ListOrder::NewestFirst, _) => 0..from.map_or(slots, slot),
            (ListOrder::OldestFirst, None) => 0..slots,
            (ListOrder::OldestFirst, Some(ListFrom(seq))) if seq < first => 0..slots,
            (ListOrder::OldestFirst, Some(from)) => (slot(from) + 1).min(slots)..slots,
        };
        let found = inner.records_in(range).filter(wanted).map(owned);
        Ok(match order {
            ListOrder::NewestFirst => ListPage::of(found.rev(), page),
            ListOrder::OldestFirst => ListPage::of(found, page),
        })
    }

    async fn requeue_dead(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(String, Requeue)>, SourceError> {
        let mut inner = self.lock();
        let ids = ids.unwrap_or_else(|| {
            inner
                .records()
                .filter(|(_, r)| r.state == TaskState::DeadLetter)
                .map(|(_, r)| r.task.id.clone())
                .collect()
        });
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let verdict = match inner.get_mut(&id) {
                None => Requeue::Unknown,
                Some((_, rec)) if rec.state != TaskState::DeadLetter => {
                    Requeue::NotDeadLettered(rec.state)
                }
                Some((seq, rec)) => {
                    rec.state = TaskState::Queued;
                    rec.attempts = 0;
                    rec.line = None;
                    rec.updated_ms = now_ms();
                    rec.history.push(entry("requeued", 0, rec.updated_ms));
                    inner.unsettled += 1;
                    inner.enqueue(seq);
                    Requeue::Requeued
                }
            };
            out.push((id, verdict));
        }
        Ok(out)
    }

    async fn purge_dead(&self) -> Result<Vec<String>, SourceError> {
        let mut inner = self.lock();
        let dead = inner.picked(|r| r.state == TaskState::DeadLetter);
        Ok(dead
            .into_iter()
            .filter_map(|seq| inner.remove(seq))
            .collect())
    }

    async fn prune(
        &self,
        settled_before_ms: u64,
        _max_bytes: Option<u64>,
    ) -> Result<u64, SourceError> {
        let mut inner = self.lock();
        let old = inner
            .picked(|r| TaskState::PRUNABLE.contains(&r.state) && r.updated_ms < settled_before_ms);
        Ok(old.into_iter().filter_map(|seq| inner.remove(seq)).count() as u64)
    }

    async fn unsettled(&self) -> Result<u64, SourceError> {
        Ok(self.lock().unsettled)
    }

    async fn stats(&self) -> Result<SourceStats, SourceError> {
        let inner = self.lock();
        let mut rows: BTreeMap<String, u64> = TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        for (_, r) in inner.records() {
            *rows.entry(r.state.as_str().to_owned()).or_default() += 1;
        }
        Ok(SourceStats {
            backend: "memory".to_owned(),
            path: None,
            health: SourceHealth::Ok,
            size_bytes: 0,
            rows,
            commits: 0,
            commit_ms_last: 0.0,
            commit_ms_max: 0.0,
            commit_ms_sum: 0.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> NewTask {
        NewTask {
            id: id.to_owned(),
            task_type: "echo".to_owned(),
            payload: "1".to_owned(),
            priority: 10,
            timeout_ms: None,
        }
    }

    /// Past the limit a new task is refused `queue_full` and a known id is
    /// answered with its state; a settled task frees its room.
    #[tokio::test]
    async fn accept_within_stops_at_the_limit_and_still_answers_known_ids() {
        let source = MemorySource::new();
        let first = source
            .accept_within(vec![task("a"), task("b"), task("c")], 2)
            .await
            .unwrap();
        assert_eq!(
            first,
            vec![
                Admission::Accepted,
                Admission::Accepted,
                Admission::queue_full(2, 2)
            ]
        );
        let claimed = source.claim(1, 0).await.unwrap();
        source
            .settle(vec![Settlement {
                id: claimed[0].task.id.clone(),
                attempt: 1,
                outcome: Outcome::Settled {
                    state: TaskState::Ok,
                    line: "{}".to_owned(),
                    error: None,
                },
            }])
            .await
            .unwrap();
        let second = source
            .accept_within(vec![task("b"), task("c"), task("d")], 2)
            .await
            .unwrap();
        assert_eq!(
            second,
            vec![
                Admission::Known(TaskState::Queued),
                Admission::Accepted,
                Admission::queue_full(2, 2)
            ]
        );
    }

    /// An attempt that never started goes back with its attempt given back
    /// (recorded `withdrawn`), and so does an interrupted one (recorded
    /// `interrupted`) and one a crash left running: none uses up a retry.
    #[tokio::test]
    async fn attempts_that_never_started_or_were_interrupted_are_given_back() {
        let source = MemorySource::new();
        source.accept(vec![task("w"), task("i")]).await.unwrap();
        assert_eq!(source.claim(2, 0).await.unwrap().len(), 2);
        let back = |id: &str, outcome| Settlement {
            id: id.to_owned(),
            attempt: 1,
            outcome,
        };
        source
            .settle(vec![
                back("w", Outcome::NotStarted),
                back("i", Outcome::Interrupted),
            ])
            .await
            .unwrap();
        let again = source.claim(2, 0).await.unwrap();
        let attempts: Vec<(String, u32)> =
            again.into_iter().map(|c| (c.task.id, c.attempt)).collect();
        assert_eq!(attempts, [("w".to_owned(), 1), ("i".to_owned(), 1)]);
        assert_eq!(source.recover().await.unwrap(), 2);
        let again = source.claim(2, 0).await.unwrap();
        let attempts: Vec<u32> = again.iter().map(|c| c.attempt).collect();
        assert_eq!(attempts, [1, 1], "a crash used up no attempt either");
        async fn events(source: &MemorySource, id: &str) -> Vec<String> {
            let record = source.get(vec![id.to_owned()]).await.unwrap()[0].clone();
            record
                .unwrap()
                .history
                .into_iter()
                .map(|h| h.event)
                .collect()
        }
        assert_eq!(
            events(&source, "w").await,
            ["attempt", "withdrawn", "attempt", "interrupted", "attempt"]
        );
        assert_eq!(
            events(&source, "i").await,
            [
                "attempt",
                "interrupted",
                "attempt",
                "interrupted",
                "attempt"
            ]
        );
    }

    /// A listing read a page at a time, either way, gives what one read of
    /// the whole gives, in its order, within the limit, and skips what the
    /// filter leaves out.
    #[tokio::test]
    async fn a_listing_read_in_pages_is_the_whole_listing() {
        let source = MemorySource::new();
        let ids: Vec<String> = (0..10).map(|n| format!("t{n}")).collect();
        source
            .accept(ids.iter().map(|id| task(id)).collect())
            .await
            .unwrap();
        async fn pages(
            source: &MemorySource,
            filter: Filter,
            order: ListOrder,
            page: usize,
        ) -> Vec<String> {
            let mut pager = crate::Pager::new(filter, order, page);
            let mut got = Vec::new();
            while let Some(records) = pager.next(source).await.unwrap() {
                assert!(records.len() <= page);
                got.extend(records.into_iter().map(|r| r.task.id));
            }
            got
        }
        let newest: Vec<String> = ids.iter().rev().cloned().collect();
        let all = Filter::default();
        assert_eq!(
            pages(&source, all.clone(), ListOrder::NewestFirst, 3).await,
            newest
        );
        assert_eq!(
            pages(&source, all.clone(), ListOrder::OldestFirst, 4).await,
            ids
        );
        let five = Filter {
            limit: 5,
            ..Filter::default()
        };
        assert_eq!(
            pages(&source, five, ListOrder::NewestFirst, 2).await,
            newest[..5]
        );
        let claimed = source.claim(1, 0).await.unwrap();
        assert_eq!(claimed[0].task.id, "t0");
        let running = Filter {
            state: Some(TaskState::Running),
            ..Filter::default()
        };
        assert_eq!(
            pages(&source, running, ListOrder::OldestFirst, 2).await,
            ["t0"]
        );
    }

    #[tokio::test]
    async fn status_is_the_records_state_attempts_and_line() {
        let source = MemorySource::new();
        source.accept(vec![task("a"), task("b")]).await.unwrap();
        let claimed = source.claim(1, 0).await.unwrap();
        source
            .settle(vec![Settlement {
                id: claimed[0].task.id.clone(),
                attempt: 1,
                outcome: Outcome::Settled {
                    state: TaskState::Ok,
                    line: r#"{"id":"a"}"#.to_owned(),
                    error: None,
                },
            }])
            .await
            .unwrap();
        let ids = vec!["a".to_owned(), "b".to_owned(), "zz".to_owned()];
        let status = source.status(ids.clone()).await.unwrap();
        let from_records: Vec<Option<TaskStatus>> = source
            .get(ids)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.map(TaskStatus::from))
            .collect();
        assert_eq!(status, from_records);
        let a = status[0].as_ref().unwrap();
        assert_eq!((a.state, a.attempts), (TaskState::Ok, 1));
        assert_eq!(a.line.as_deref(), Some(r#"{"id":"a"}"#));
        assert_eq!(status[1].as_ref().unwrap().state, TaskState::Queued);
        assert!(status[2].is_none());
    }

    fn settled(id: &str, attempt: u32, state: TaskState) -> Settlement {
        Settlement {
            id: id.to_owned(),
            attempt,
            outcome: Outcome::Settled {
                state,
                line: "{}".to_owned(),
                error: None,
            },
        }
    }

    /// The unsettled tasks counted the slow way, from the records.
    async fn counted(source: &MemorySource) -> u64 {
        let stats = source.stats().await.unwrap();
        ["queued", "running", "retrying"]
            .iter()
            .map(|s| stats.rows.get(*s).copied().unwrap_or(0))
            .sum()
    }

    #[tokio::test]
    async fn the_unsettled_count_follows_every_change_of_state() {
        let source = MemorySource::new();
        let check = |expected: u64| {
            let source = &source;
            async move {
                assert_eq!(source.unsettled().await.unwrap(), expected);
                assert_eq!(counted(source).await, expected);
            }
        };
        let ids = ["a", "b", "c", "d", "e"];
        source
            .accept(ids.iter().map(|id| task(id)).collect())
            .await
            .unwrap();
        // Accepting a known id again changes nothing.
        assert_eq!(
            source.accept(vec![task("a")]).await.unwrap(),
            vec![Admission::Known(TaskState::Queued)]
        );
        check(5).await;
        let claimed = source.claim(5, 0).await.unwrap();
        assert_eq!(claimed.len(), 5);
        check(5).await;
        source
            .settle(vec![
                settled("a", 1, TaskState::Ok),
                settled("b", 1, TaskState::DeadLetter),
                Settlement {
                    id: "c".to_owned(),
                    attempt: 1,
                    outcome: Outcome::Retry {
                        due_ms: 0,
                        error: crate::ErrorInfo {
                            kind: "boom".to_owned(),
                            message: "boom".to_owned(),
                        },
                    },
                },
                Settlement {
                    id: "d".to_owned(),
                    attempt: 1,
                    outcome: Outcome::Interrupted,
                },
                // A stale settlement (another attempt) changes nothing.
                settled("e", 7, TaskState::Ok),
            ])
            .await
            .unwrap();
        check(3).await;
        source.requeue_dead(None).await.unwrap();
        check(4).await;
        let claimed = source.claim(5, u64::MAX).await.unwrap();
        assert_eq!(claimed.len(), 3, "b, c and d run again; e still runs");
        source.recover().await.unwrap();
        check(4).await;
        let claimed = source.claim(5, u64::MAX).await.unwrap();
        let all: Vec<Settlement> = claimed
            .iter()
            .map(|c| settled(&c.task.id, c.attempt, TaskState::DeadLetter))
            .collect();
        source.settle(all).await.unwrap();
        check(0).await;
        source.purge_dead().await.unwrap();
        source.prune(u64::MAX, None).await.unwrap();
        check(0).await;
        assert!(source.get(vec!["a".to_owned()]).await.unwrap()[0].is_none());
    }

    /// Retention keeps dead letters (they stay until retried or purged), as
    /// the SQLite store does.
    #[tokio::test]
    async fn a_prune_keeps_the_dead_letters() {
        let source = MemorySource::new();
        source.accept(vec![task("ok"), task("dead")]).await.unwrap();
        source.claim(2, 0).await.unwrap();
        source
            .settle(vec![
                settled("ok", 1, TaskState::Ok),
                settled("dead", 1, TaskState::DeadLetter),
            ])
            .await
            .unwrap();
        assert_eq!(source.prune(u64::MAX, None).await.unwrap(), 1);
        let got = source.get(vec!["ok".into(), "dead".into()]).await.unwrap();
        assert!(got[0].is_none());
        assert_eq!(
            got[1].as_ref().map(|r| r.state),
            Some(TaskState::DeadLetter)
        );
        assert_eq!(
            source.requeue_dead(None).await.unwrap(),
            [("dead".to_owned(), Requeue::Requeued)]
        );
    }

    /// The ids of the tasks a claim at `now_ms` starts, in the order claimed.
    async fn claim_ids(source: &MemorySource, now_ms: u64) -> Vec<String> {
        let claimed = source.claim(10, now_ms).await.unwrap();
        claimed.into_iter().map(|c| c.task.id).collect()
    }

    fn with_priority(id: &str, priority: u8) -> NewTask {
        NewTask {
            priority,
            ..task(id)
        }
    }

    /// Claims come best priority first, in order of acceptance within one;
    /// `list` is newest first; removing tasks (prune, purge) frees their ids
    /// and keeps the rest where they were.
    #[tokio::test]
    async fn claims_follow_priority_then_order_and_removal_keeps_the_rest() {
        let source = MemorySource::new();
        source
            .accept(vec![
                with_priority("low", 50),
                with_priority("a", 10),
                with_priority("urgent", 0),
                with_priority("b", 10),
            ])
            .await
            .unwrap();
        assert_eq!(claim_ids(&source, 0).await, ["urgent", "a", "b", "low"]);
        let listed: Vec<String> = source
            .list(Filter {
                state: None,
                task_type: None,
                limit: 3,
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.task.id)
            .collect();
        assert_eq!(listed, ["b", "urgent", "a"], "newest first, at most 3");

        // The oldest two settle and are pruned; the others keep their records.
        source
            .settle(vec![
                settled("low", 1, TaskState::Ok),
                settled("a", 1, TaskState::DeadLetter),
                settled("b", 1, TaskState::DeadLetter),
            ])
            .await
            .unwrap();
        let dead: Vec<String> = source.purge_dead().await.unwrap();
        assert_eq!(dead, ["a", "b"], "in the order they were accepted");
        assert_eq!(source.prune(u64::MAX, None).await.unwrap(), 1);
        let got = source
            .get(vec!["low".into(), "a".into(), "urgent".into()])
            .await
            .unwrap();
        assert!(got[0].is_none() && got[1].is_none());
        assert_eq!(got[2].as_ref().map(|r| r.state), Some(TaskState::Running));

        // A removed id is new again; it queues behind nothing and claims.
        assert_eq!(
            source.accept(vec![task("a")]).await.unwrap(),
            vec![Admission::Accepted]
        );
        let claimed = source.claim(10, 0).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].task.id.as_str(), claimed[0].attempt), ("a", 1));
        assert_eq!(source.unsettled().await.unwrap(), 2);
    }

    /// A retry waits for its due time, then runs before later tasks of its
    /// priority (it keeps its place).
    #[tokio::test]
    async fn a_retry_is_claimed_once_due_in_its_place() {
        let source = MemorySource::new();
        source.accept(vec![task("first")]).await.unwrap();
        source.claim(1, 0).await.unwrap();
        source
            .settle(vec![Settlement {
                id: "first".into(),
                attempt: 1,
                outcome: Outcome::Retry {
                    due_ms: 1_000,
                    error: crate::ErrorInfo {
                        kind: "boom".into(),
                        message: "boom".into(),
                    },
                },
            }])
            .await
            .unwrap();
        source.accept(vec![task("second")]).await.unwrap();
        assert_eq!(claim_ids(&source, 999).await, ["second"], "not due yet");
        source.accept(vec![task("third")]).await.unwrap();
        let due: Vec<(String, u32)> = source
            .claim(10, 1_000)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.task.id, c.attempt))
            .collect();
        assert_eq!(due, [("first".to_owned(), 2), ("third".to_owned(), 1)]);
    }

    /// A task that ends ok after a retry keeps no error, not the retry's.
    #[tokio::test]
    async fn an_ok_after_a_retry_leaves_no_error() {
        let source = MemorySource::new();
        source.accept(vec![task("r")]).await.unwrap();
        source.claim(1, 0).await.unwrap();
        let settle = |attempt, outcome| Settlement {
            id: "r".into(),
            attempt,
            outcome,
        };
        let retry = Outcome::Retry {
            due_ms: 0,
            error: crate::ErrorInfo {
                kind: "boom".into(),
                message: "boom".into(),
            },
        };
        source.settle(vec![settle(1, retry)]).await.unwrap();
        assert_eq!(source.claim(1, 0).await.unwrap()[0].attempt, 2);
        let ok = Outcome::Settled {
            state: TaskState::Ok,
            line: "{}".into(),
            error: None,
        };
        source.settle(vec![settle(2, ok)]).await.unwrap();
        let record = source
            .get(vec!["r".into()])
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        assert_eq!((record.state, record.error), (TaskState::Ok, None));
    }
}
