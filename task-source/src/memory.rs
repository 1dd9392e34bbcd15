//! [`MemorySource`]: every task in this process's memory (`durability = "memory"`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use foldhash::HashMap;

use async_trait::async_trait;

use crate::now_ms;
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
    next_seq: u64,
    /// By id (foldhash: SipHash took a twentieth of a memory daemon's
    /// instructions per task). Each record is boxed, so a table that grows
    /// moves ids and pointers, not records.
    tasks: HashMap<String, Box<(u64, TaskRecord)>>,
    /// Tasks not settled yet (queued, running or retrying), kept as records
    /// change state: the admission check reads it on every submit.
    unsettled: u64,
    /// Queued tasks: (priority, seq) → id.
    ready: BTreeMap<(u8, u64), String>,
    /// Retrying tasks: (due, seq) → id.
    delayed: BTreeSet<(u64, u64, String)>,
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

impl Inner {
    fn get(&self, id: &str) -> Option<&(u64, TaskRecord)> {
        self.tasks.get(id).map(|stored| &**stored)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut (u64, TaskRecord)> {
        self.tasks.get_mut(id).map(|stored| &mut **stored)
    }

    /// Every record, with its sequence number.
    fn records(&self) -> impl Iterator<Item = (&String, &(u64, TaskRecord))> {
        self.tasks.iter().map(|(id, stored)| (id, &**stored))
    }

    /// Queues the known task `id` (found by its id; see [`ready`](Self::ready)).
    fn enqueue(&mut self, id: &str) {
        if let Some((seq, rec)) = self.get(id) {
            let key = (rec.task.priority, *seq);
            self.ready.insert(key, id.to_owned());
        }
    }

    /// Queues task `id`, whose priority and sequence number the caller has.
    fn ready(&mut self, priority: u8, seq: u64, id: String) {
        self.ready.insert((priority, seq), id);
    }

    fn remove(&mut self, id: &str) {
        if let Some(stored) = self.tasks.remove(id) {
            let (seq, rec) = *stored;
            if !rec.state.is_settled() {
                self.unsettled = self.unsettled.saturating_sub(1);
            }
            self.ready.remove(&(rec.task.priority, seq));
            self.delayed.remove(&(rec.due_ms, seq, id.to_owned()));
        }
    }
}

#[async_trait]
impl TaskSource for MemorySource {
    async fn accept(&self, tasks: Vec<NewTask>) -> Result<Vec<Admission>, SourceError> {
        let mut inner = self.lock();
        let now = now_ms();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let seq = inner.next_seq;
            let slot = match inner.tasks.entry(task.id.clone()) {
                Entry::Occupied(known) => {
                    out.push(Admission::Known(known.get().1.state));
                    continue;
                }
                Entry::Vacant(slot) => slot,
            };
            let (priority, id) = (task.priority, task.id.clone());
            let record = TaskRecord {
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
            };
            slot.insert(Box::new((seq, record)));
            inner.next_seq += 1;
            inner.unsettled += 1;
            inner.ready(priority, seq, id);
            out.push(Admission::Accepted);
        }
        Ok(out)
    }

    async fn claim(&self, max: usize, now_ms: u64) -> Result<Vec<Claimed>, SourceError> {
        let mut inner = self.lock();
        let due: Vec<(u64, u64, String)> = inner
            .delayed
            .iter()
            .take_while(|(due, _, _)| *due <= now_ms)
            .cloned()
            .collect();
        for key in due {
            inner.delayed.remove(&key);
            inner.enqueue(&key.2);
        }
        let mut out = Vec::with_capacity(max.min(inner.ready.len()));
        while out.len() < max {
            let Some((_, id)) = inner.ready.pop_first() else {
                break;
            };
            if let Some((_, rec)) = inner.get_mut(&id) {
                rec.state = TaskState::Running;
                rec.attempts += 1;
                rec.due_ms = 0;
                rec.updated_ms = now_ms;
                rec.history.push(entry("attempt", rec.attempts, now_ms));
                out.push(Claimed {
                    task: rec.task.clone(),
                    attempt: rec.attempts,
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
            let Some((seq, rec)) = inner.tasks.get_mut(&s.id).map(|stored| &mut **stored) else {
                continue;
            };
            if rec.state != TaskState::Running || rec.attempts != s.attempt {
                continue;
            }
            rec.updated_ms = now;
            let seq = *seq;
            match s.outcome {
                Outcome::Settled { state, line, error } => {
                    inner.unsettled = inner
                        .unsettled
                        .saturating_add_signed(unsettled_delta(TaskState::Running, state));
                    rec.state = state;
                    rec.line = Some(line);
                    if error.is_some() {
                        rec.error = error;
                    }
                    rec.history.push(entry(state.as_str(), s.attempt, now));
                }
                Outcome::Retry { due_ms, error } => {
                    rec.state = TaskState::Retrying;
                    rec.due_ms = due_ms;
                    rec.error = Some(error);
                    rec.history.push(entry("retry", s.attempt, now));
                    inner.delayed.insert((due_ms, seq, s.id));
                }
                Outcome::Interrupted => {
                    rec.state = TaskState::Queued;
                    rec.history.push(entry("interrupted", s.attempt, now));
                    inner.enqueue(&s.id);
                }
            }
        }
        Ok(())
    }

    async fn recover(&self) -> Result<u64, SourceError> {
        let mut inner = self.lock();
        let running: Vec<String> = inner
            .records()
            .filter(|(_, (_, r))| r.state == TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect();
        let now = now_ms();
        for id in &running {
            if let Some((_, rec)) = inner.get_mut(id) {
                rec.state = TaskState::Queued;
                rec.history.push(entry("interrupted", rec.attempts, now));
            }
            inner.enqueue(id);
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
        let inner = self.lock();
        let mut all: Vec<&(u64, TaskRecord)> = inner
            .records()
            .map(|(_, stored)| stored)
            .filter(|(_, r)| filter.state.is_none_or(|s| r.state == s))
            .filter(|(_, r)| {
                filter
                    .task_type
                    .as_deref()
                    .is_none_or(|t| r.task.task_type == t)
            })
            .collect();
        all.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        Ok(all
            .into_iter()
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn requeue_dead(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(String, Requeue)>, SourceError> {
        let mut inner = self.lock();
        let ids = ids.unwrap_or_else(|| {
            let mut dead: Vec<(u64, String)> = inner
                .records()
                .filter(|(_, (_, r))| r.state == TaskState::DeadLetter)
                .map(|(id, (seq, _))| (*seq, id.clone()))
                .collect();
            dead.sort();
            dead.into_iter().map(|(_, id)| id).collect()
        });
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let verdict = match inner.get_mut(&id) {
                None => Requeue::Unknown,
                Some((_, rec)) if rec.state != TaskState::DeadLetter => {
                    Requeue::NotDeadLettered(rec.state)
                }
                Some((_, rec)) => {
                    rec.state = TaskState::Queued;
                    rec.attempts = 0;
                    rec.line = None;
                    rec.updated_ms = now_ms();
                    rec.history.push(entry("requeued", 0, rec.updated_ms));
                    inner.unsettled += 1;
                    inner.enqueue(&id);
                    Requeue::Requeued
                }
            };
            out.push((id, verdict));
        }
        Ok(out)
    }

    async fn purge_dead(&self) -> Result<Vec<String>, SourceError> {
        let mut inner = self.lock();
        let mut dead: Vec<(u64, String)> = inner
            .records()
            .filter(|(_, (_, r))| r.state == TaskState::DeadLetter)
            .map(|(id, (seq, _))| (*seq, id.clone()))
            .collect();
        dead.sort();
        for (_, id) in &dead {
            inner.remove(id);
        }
        Ok(dead.into_iter().map(|(_, id)| id).collect())
    }

    async fn prune(
        &self,
        settled_before_ms: u64,
        _max_bytes: Option<u64>,
    ) -> Result<u64, SourceError> {
        let mut inner = self.lock();
        let old: Vec<String> = inner
            .records()
            .filter(|(_, (_, r))| r.state.is_settled() && r.updated_ms < settled_before_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            inner.remove(id);
        }
        Ok(old.len() as u64)
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
        for (_, (_, r)) in inner.records() {
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
}
