//! [`MemorySource`]: every task in this process's memory (`durability = "memory"`).

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;
use std::sync::{Mutex, MutexGuard};

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
    /// instructions per task).
    tasks: HashMap<String, (u64, TaskRecord)>,
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

fn entry(event: &str, attempt: u32) -> HistoryEntry {
    HistoryEntry {
        at_ms: now_ms(),
        event: event.to_owned(),
        attempt,
    }
}

impl Inner {
    fn enqueue(&mut self, id: &str) {
        if let Some((seq, rec)) = self.tasks.get(id) {
            self.ready.insert((rec.task.priority, *seq), id.to_owned());
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some((seq, rec)) = self.tasks.remove(id) {
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
            if let Some((_, rec)) = inner.tasks.get(&task.id) {
                out.push(Admission::Known(rec.state));
                continue;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let id = task.id.clone();
            let record = TaskRecord {
                task,
                state: TaskState::Queued,
                attempts: 0,
                error: None,
                line: None,
                created_ms: now,
                updated_ms: now,
                due_ms: 0,
                history: Vec::new(),
            };
            inner.tasks.insert(id.clone(), (seq, record));
            inner.enqueue(&id);
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
        let mut out = Vec::new();
        while out.len() < max {
            let Some((_, id)) = inner.ready.pop_first() else {
                break;
            };
            if let Some((_, rec)) = inner.tasks.get_mut(&id) {
                rec.state = TaskState::Running;
                rec.attempts += 1;
                rec.due_ms = 0;
                rec.updated_ms = now_ms;
                rec.history.push(entry("attempt", rec.attempts));
                out.push(Claimed {
                    task: rec.task.clone(),
                    attempt: rec.attempts,
                });
            }
        }
        Ok(out)
    }

    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), SourceError> {
        let mut inner = self.lock();
        let now = now_ms();
        for s in settlements {
            let Some((seq, rec)) = inner.tasks.get_mut(&s.id) else {
                continue;
            };
            if rec.state != TaskState::Running || rec.attempts != s.attempt {
                continue;
            }
            rec.updated_ms = now;
            let seq = *seq;
            match s.outcome {
                Outcome::Settled { state, line, error } => {
                    rec.state = state;
                    rec.line = Some(line);
                    if error.is_some() {
                        rec.error = error;
                    }
                    rec.history.push(entry(state.as_str(), s.attempt));
                }
                Outcome::Retry { due_ms, error } => {
                    rec.state = TaskState::Retrying;
                    rec.due_ms = due_ms;
                    rec.error = Some(error);
                    rec.history.push(entry("retry", s.attempt));
                    inner.delayed.insert((due_ms, seq, s.id));
                }
                Outcome::Interrupted => {
                    rec.state = TaskState::Queued;
                    rec.history.push(entry("interrupted", s.attempt));
                    inner.enqueue(&s.id);
                }
            }
        }
        Ok(())
    }

    async fn recover(&self) -> Result<u64, SourceError> {
        let mut inner = self.lock();
        let running: Vec<String> = inner
            .tasks
            .iter()
            .filter(|(_, (_, r))| r.state == TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &running {
            if let Some((_, rec)) = inner.tasks.get_mut(id) {
                rec.state = TaskState::Queued;
                rec.history.push(entry("interrupted", rec.attempts));
            }
            inner.enqueue(id);
        }
        Ok(running.len() as u64)
    }

    async fn get(&self, ids: Vec<String>) -> Result<Vec<Option<TaskRecord>>, SourceError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| inner.tasks.get(id).map(|(_, r)| r.clone()))
            .collect())
    }

    async fn status(&self, ids: Vec<String>) -> Result<Vec<Option<TaskStatus>>, SourceError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| {
                inner.tasks.get(id).map(|(_, r)| TaskStatus {
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
            .tasks
            .values()
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
                .tasks
                .iter()
                .filter(|(_, (_, r))| r.state == TaskState::DeadLetter)
                .map(|(id, (seq, _))| (*seq, id.clone()))
                .collect();
            dead.sort();
            dead.into_iter().map(|(_, id)| id).collect()
        });
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let verdict = match inner.tasks.get_mut(&id) {
                None => Requeue::Unknown,
                Some((_, rec)) if rec.state != TaskState::DeadLetter => {
                    Requeue::NotDeadLettered(rec.state)
                }
                Some((_, rec)) => {
                    rec.state = TaskState::Queued;
                    rec.attempts = 0;
                    rec.line = None;
                    rec.updated_ms = now_ms();
                    rec.history.push(entry("requeued", 0));
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
            .tasks
            .iter()
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
            .tasks
            .iter()
            .filter(|(_, (_, r))| r.state.is_settled() && r.updated_ms < settled_before_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            inner.remove(id);
        }
        Ok(old.len() as u64)
    }

    async fn unsettled(&self) -> Result<u64, SourceError> {
        let inner = self.lock();
        Ok(inner
            .tasks
            .values()
            .filter(|(_, r)| !r.state.is_settled())
            .count() as u64)
    }

    async fn stats(&self) -> Result<SourceStats, SourceError> {
        let inner = self.lock();
        let mut rows: BTreeMap<String, u64> = TaskState::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        for (_, r) in inner.tasks.values() {
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
}
