//! The [`TaskSource`](task_source::TaskSource) operations on the overlay: each
//! journals its changes and applies them, or reads a record from its entry or
//! its row.

use std::borrow::Cow;

use rusqlite::Connection;
use task_source::{
    Admission, Claimed, Filter, ListFrom, ListOrder, NewTask, Outcome, Requeue, Settlement,
    TaskRecord, TaskState, TaskStatus,
};

use super::Overlay;
use crate::journal::Entry;
use crate::known_ids::KnownIds;
use crate::live::{self, Live};

impl Overlay {
    /// Tasks waiting or running, with `stored` of them counted in the rows.
    pub(crate) fn unsettled(&self, stored: u64) -> u64 {
        let unsettled: i64 = [TaskState::Queued, TaskState::Running, TaskState::Retrying]
            .iter()
            .map(|s| self.tally.counts[*s as usize])
            .sum();
        stored.saturating_add_signed(unsettled)
    }

    /// Tasks by state, with `stored` the rows' counts.
    pub(crate) fn rows(&self, stored: Vec<(String, u64)>) -> Vec<(String, u64)> {
        let mut by_state: std::collections::HashMap<String, u64> = stored.into_iter().collect();
        for state in TaskState::ALL {
            let n = by_state.entry(state.as_str().to_owned()).or_default();
            *n = n.saturating_add_signed(self.tally.counts[state as usize]);
        }
        by_state.into_iter().collect()
    }

    /// Stores `tasks` in order, idempotently by id, while fewer than
    /// `max_unsettled` (with `stored_unsettled` of the rows') wait or run.
    pub(crate) fn accept(
        &mut self,
        conn: &Connection,
        tasks: Vec<NewTask>,
        at_ms: u64,
        limit: Option<(u64, u64)>,
    ) -> rusqlite::Result<Vec<Admission>> {
        let mut unsettled_now = limit.map_or(0, |(stored, _)| self.unsettled(stored));
        let mut out = Vec::with_capacity(tasks.len());
        let mut rows = live::Lookup::new(conn)?;
        for task in tasks {
            // The usual id, never seen, is told by the filter alone; its
            // hash serves again to put it in.
            let hash = self.known.as_ref().map(|known| known.hash(&task.id));
            let surely_new = self
                .known
                .as_ref()
                .zip(hash)
                .is_some_and(|(known, hash)| !known.may_hold_hash(hash));
            if !surely_new {
                if let Some((_, state)) = self.find(&mut rows, &task.id)? {
                    out.push(Admission::Known(state));
                    continue;
                }
            }
            if let Some((_, max)) = limit.filter(|(_, max)| unsettled_now >= *max) {
                out.push(Admission::queue_full(unsettled_now, max));
                continue;
            }
            self.record_accepted(task, at_ms, hash)?;
            unsettled_now += 1;
            out.push(Admission::Accepted);
        }
        if self.known.as_ref().is_some_and(KnownIds::full) {
            // Built again at twice its size (and without the ids deleted since).
            self.known = Some(KnownIds::load(conn, self.held_ids().into_iter())?);
        }
        Ok(out)
    }

    /// Starts an attempt of each of up to `max` ready tasks: highest priority
    /// first, then in order of acceptance, retrying ones once `now_ms` passed
    /// their due time.
    pub(crate) fn claim(
        &mut self,
        conn: &Connection,
        max: usize,
        now_ms: u64,
    ) -> rusqlite::Result<Vec<Claimed>> {
        let entries = &self.entries;
        self.order.promote_due(now_ms, |seq| entries.contains(seq));
        let mut out = Vec::with_capacity(max.min(self.order.ready_len()));
        while out.len() < max {
            let Some((priority, seq)) = self.order.first() else {
                break;
            };
            if !self.entries.contains(seq) {
                self.read_ahead(conn, max - out.len())?;
            }
            let mut attempt = 0;
            let claimed = self.record(conn, seq, |live, version| {
                attempt = live.attempts + 1;
                Entry::Claimed {
                    seq,
                    version,
                    at_ms: now_ms,
                    attempt,
                }
            })?;
            match claimed {
                Some(true) => {}
                // Not waiting after all (only a bug puts such a task in
                // the order): out of it, so that the loop moves on.
                Some(false) => {
                    self.order.remove(priority, seq);
                    continue;
                }
                None => {
                    // A row retention removed: nothing to run.
                    self.order.remove(priority, seq);
                    continue;
                }
            }
            if let Some(live) = self.entries.get(seq) {
                out.push(Claimed {
                    task: live.task.clone(),
                    attempt,
                    submitted_ms: live.created_ms,
                });
            }
        }
        Ok(out)
    }

    /// Reads the rows of the next ready tasks on disk, up to `most` (and
    /// [`live::ROWS_READ_AT_ONCE`]) of those a claim takes before any task
    /// in memory, in one statement, into their entries: a claim changes
    /// each one next (and lets go of one it does not change).
    fn read_ahead(&mut self, conn: &Connection, most: usize) -> rusqlite::Result<()> {
        let seqs = self.order.next_on_disk(most.min(live::ROWS_READ_AT_ONCE));
        for (seq, live) in live::load_seqs(conn, &seqs)? {
            if !self.entries.contains(seq) {
                super::hold(&mut self.ids, &mut self.entries, seq, live);
            }
        }
        Ok(())
    }

    /// Records how attempts ended; a settlement of an attempt that is not
    /// running (recovered, requeued, settled already) changes nothing.
    pub(crate) fn settle(
        &mut self,
        conn: &Connection,
        settlements: Vec<Settlement>,
        at_ms: u64,
    ) -> rusqlite::Result<()> {
        let mut rows = live::Lookup::new(conn)?;
        for s in settlements {
            let Some((seq, TaskState::Running)) = self.find(&mut rows, &s.id)? else {
                continue;
            };
            let attempt = s.attempt;
            self.record(conn, seq, move |_, version| match s.outcome {
                Outcome::Settled { state, line, error } => Entry::Settled {
                    seq,
                    version,
                    at_ms,
                    attempt,
                    state,
                    line: Cow::Owned(line),
                    error: error.map(Cow::Owned),
                },
                Outcome::Retry { due_ms, error } => Entry::Retrying {
                    seq,
                    version,
                    at_ms,
                    attempt,
                    due_ms,
                    error: Cow::Owned(error),
                },
                Outcome::Interrupted => Entry::Interrupted {
                    seq,
                    version,
                    at_ms,
                    attempt,
                },
                Outcome::NotStarted => Entry::Withdrawn {
                    seq,
                    version,
                    at_ms,
                    attempt,
                },
            })?;
        }
        Ok(())
    }

    /// Puts every running task back in the queue as interrupted, its attempt
    /// given back (after a crash: nothing runs yet); returns how many.
    pub(crate) fn recover(&mut self, conn: &Connection, at_ms: u64) -> rusqlite::Result<u64> {
        let running = self.in_state(
            conn,
            "SELECT seq, attempts FROM tasks WHERE state = 'running'",
            TaskState::Running,
            |live| live.attempts,
        )?;
        let mut n = 0;
        for (seq, attempt) in running {
            let entry = |_: &Live, version| Entry::Interrupted {
                seq,
                version,
                at_ms,
                attempt,
            };
            n += u64::from(self.record(conn, seq, entry)? == Some(true));
        }
        Ok(n)
    }

    /// The tasks in `state`, oldest first, each with what `pick` takes from
    /// its record: from the rows `sql` selects (`seq` and that value), those
    /// the overlay holds taken from their entries instead.
    fn in_state<T: rusqlite::types::FromSql>(
        &self,
        conn: &Connection,
        sql: &str,
        state: TaskState,
        pick: impl Fn(&Live) -> T,
    ) -> rusqlite::Result<Vec<(i64, T)>> {
        let mut found: Vec<(i64, T)> = Vec::new();
        let mut stored = conn.prepare_cached(sql)?;
        let rows = stored.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, T>(1)?)))?;
        for row in rows {
            let (seq, value) = row?;
            if !self.entries.contains(seq) {
                found.push((seq, value));
            }
        }
        found.extend(
            self.entries
                .iter()
                .filter(|(_, live)| live.state == state)
                .map(|(seq, live)| (seq, pick(live))),
        );
        found.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(found)
    }

    /// Where each id stands, from its entry or its row.
    pub(crate) fn status(
        &self,
        conn: &Connection,
        ids: &[String],
    ) -> rusqlite::Result<Vec<Option<TaskStatus>>> {
        let mut stored =
            conn.prepare_cached("SELECT state, attempts, line FROM tasks WHERE id = ?1")?;
        ids.iter()
            .map(|id| match self.entry(id) {
                Some(live) => Ok(Some(live.status())),
                None => {
                    let mut rows = stored.query([id])?;
                    let Some(row) = rows.next()? else {
                        return Ok(None);
                    };
                    let state: String = row.get(0)?;
                    Ok(Some(TaskStatus {
                        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
                        attempts: row.get(1)?,
                        line: row.get(2)?,
                    }))
                }
            })
            .collect()
    }

    /// Each id's whole record, from its entry or its row.
    pub(crate) fn get(
        &self,
        conn: &Connection,
        ids: &[String],
    ) -> rusqlite::Result<Vec<Option<TaskRecord>>> {
        ids.iter()
            .map(|id| match self.entry(id) {
                Some(live) => Ok(Some(live.record())),
                None => Ok(live::load_id(conn, id)?.map(|(_, live)| live.record())),
            })
            .collect()
    }

    /// A page of the listing `filter` picks (at most `filter.limit` tasks, 0:
    /// all) in `order` after `from`: the rows, each replaced by its task's
    /// record when the overlay holds one, with the tasks only the overlay
    /// holds; each with its sequence number.
    pub(crate) fn list(
        &self,
        conn: &Connection,
        filter: &Filter,
        order: ListOrder,
        from: Option<ListFrom>,
    ) -> rusqlite::Result<Vec<(i64, TaskRecord)>> {
        let wanted = |seq: i64, live: &Live| {
            u64::try_from(seq).is_ok_and(|place| order.after(place, from))
                && filter.matches(live.state, &live.task.task_type)
        };
        // Where a task comes in the listing: the smaller, the sooner.
        let key = |seq: i64| match order {
            ListOrder::NewestFirst => -seq,
            ListOrder::OldestFirst => seq,
        };
        let limit = filter.limit;
        // The overlay's tasks the page may hold: its first `limit`, picked
        // by number before any record is copied.
        let mut held: Vec<(i64, &Live)> = self
            .entries
            .iter()
            .filter(|(seq, live)| wanted(*seq, live))
            .collect();
        if limit > 0 && held.len() > limit {
            held.select_nth_unstable_by_key(limit - 1, |&(seq, _)| key(seq));
            held.truncate(limit);
        }
        // The rows the overlay does not replace: read until `limit` of them
        // came or the rows ran out.
        let mut found: Vec<(i64, TaskRecord)> = Vec::new();
        let mut after = from;
        loop {
            let want = (limit > 0).then(|| limit - found.len());
            let rows = crate::ops::list(conn, filter, order, after, want)?;
            let full = want.is_some_and(|want| rows.len() == want);
            let last = rows.last().map(|(seq, _)| *seq);
            found.extend(
                rows.into_iter()
                    .filter(|(seq, _)| !self.entries.contains(*seq)),
            );
            match last {
                Some(last) if full && found.len() < limit => {
                    after = Some(ListFrom(u64::try_from(last).unwrap_or(0)));
                }
                _ => break,
            }
        }
        found.extend(held.into_iter().map(|(seq, live)| (seq, live.record())));
        found.sort_unstable_by_key(|(seq, _)| key(*seq));
        if limit > 0 {
            found.truncate(limit);
        }
        Ok(found)
    }

    fn entry(&self, id: &str) -> Option<&Live> {
        self.ids.get(id, &self.entries).map(|(_, live)| live)
    }

    /// Puts dead letters back in the queue under their ids with their
    /// attempts reset: `ids`, or every dead letter, oldest first.
    pub(crate) fn requeue_dead(
        &mut self,
        conn: &Connection,
        ids: Option<Vec<String>>,
        at_ms: u64,
    ) -> rusqlite::Result<Vec<(String, Requeue)>> {
        let ids = match ids {
            Some(ids) => ids,
            None => self.dead_letters(conn)?,
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut rows = live::Lookup::new(conn)?;
        for id in ids {
            let verdict = match self.find(&mut rows, &id)? {
                None => Requeue::Unknown,
                Some((seq, TaskState::DeadLetter)) => {
                    self.record(conn, seq, |_, version| Entry::Requeued {
                        seq,
                        version,
                        at_ms,
                    })?;
                    Requeue::Requeued
                }
                Some((_, state)) => Requeue::NotDeadLettered(state),
            };
            out.push((id, verdict));
        }
        Ok(out)
    }

    /// The ids of the dead letters, oldest first.
    fn dead_letters(&self, conn: &Connection) -> rusqlite::Result<Vec<String>> {
        let found = self.in_state(
            conn,
            crate::ops::DEAD_LETTER_SEQS,
            TaskState::DeadLetter,
            |live| live.task.id.clone(),
        )?;
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{empty_overlay, new_task};
    use task_source::TaskState;

    #[test]
    fn a_claim_passes_over_a_key_in_the_ready_order_whose_task_does_not_wait() {
        let (conn, mut overlay) = empty_overlay();
        overlay
            .accept(&conn, vec![new_task("a"), new_task("b")], 1, None)
            .unwrap();
        let first = overlay.claim(&conn, 1, 2).unwrap();
        assert_eq!(first[0].task.id, "a");
        // What only a bug would leave: the running task's key back in the order.
        overlay.order.wait(1, TaskState::Queued, 10, 0);
        let next: Vec<String> = overlay
            .claim(&conn, 10, 3)
            .unwrap()
            .into_iter()
            .map(|c| c.task.id)
            .collect();
        assert_eq!(next, ["b"]);
        assert_eq!(overlay.order.ready_len(), 0, "{:?}", overlay.order);
    }
}
