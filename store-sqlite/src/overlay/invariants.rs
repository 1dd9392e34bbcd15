//! A model test of the overlay's invariants.
//!
//! Random sequences of operations run against a store in memory: accepts
//! (some of ids already taken, at random priorities), claims, every kind of
//! settlement (ok, failed, dead letter, cancelled, retry, interrupted, not
//! started, and a stale attempt's), requeues of dead letters, slice, spill
//! and full checkpoints, retention rounds, reloads (with the filter of ids
//! kept and without) and transactions rolled back. After every step the
//! overlay must agree with the rows under it:
//!
//! - a claim takes the first ready tasks by `(priority, seq)`;
//! - the tally equals a recount over the entries;
//! - the ready order holds exactly the waiting tasks: queued ones by
//!   `(priority, seq)`, retrying ones by `(due, priority, seq)` until a claim
//!   at or after their due time moves them to the ready ones;
//! - no entry is clean and idle (every entry has unwritten changes or runs);
//! - `ids` and `entries` match one to one;
//! - the rows' `state_counts` plus the tally equal the tasks' actual states;
//! - `settled_since` is set whenever settled tasks wait for their rows;
//! - the filter of ids holds every id;
//! - no id is stored twice, and no task has a number the next accept gets.
//!
//! After every step with nothing left to commit, a fresh load of the store
//! (its rows with the journal replayed over them) must give the next task
//! the number the live overlay would; at the end of each run it must hold
//! the same records as the live overlay.
//!
//! The seeds are fixed, so that every run of the test is the same; a failed
//! assertion names the seed and the step.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use foldhash::HashSet;
use rusqlite::Connection;
use task_source::{ErrorInfo, NewTask, Outcome, Settlement, TaskRecord, TaskState};

use super::tally::Tally;
use super::unwritten::UnwrittenRows;
use super::{Checkpoint, MemoryBound, Overlay};
use crate::journal::{self, Entry};
use crate::live::{self, Live};
use crate::test_support::{empty_overlay, new_task};

/// The seeds of the random runs.
const SEEDS: RangeInclusive<u64> = 1..=24;
/// The operations in each run.
const STEPS: u64 = 250;

/// The id of the `n`th task a run makes up.
fn id(n: u64) -> String {
    format!("t{n}")
}

/// Writes the journal entries the overlay holds for the current transaction,
/// as the writer does before it commits.
fn commit_pending(overlay: &mut Overlay, conn: &Connection) {
    if let Some((row, entries)) = overlay.take_pending() {
        journal::append(conn, row, &entries).unwrap();
    }
}

/// One seeded run: a store in memory, its overlay, and what the run knows of
/// the tasks.
struct Run {
    rng: fastrand::Rng,
    conn: Connection,
    overlay: Overlay,
    /// The ids made up so far are `t0` up to `t{next_id - 1}` (some of them
    /// rolled back).
    next_id: u64,
    /// The attempts the run has claimed and not settled: `(id, attempt)`.
    running: Vec<(String, u32)>,
    /// The time of the latest claim: retrying tasks due by then may have
    /// moved to the ready ones.
    claimed_at: u64,
}

impl Run {
    /// A run of `seed` over an empty store.
    fn new(seed: u64) -> Self {
        let (conn, overlay) = empty_overlay();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            conn,
            overlay,
            next_id: 0,
            running: Vec::new(),
            claimed_at: 0,
        }
    }

    /// One operation, picked at random, at time `now`.
    fn step(&mut self, now: u64) {
        match self.rng.u64(..10) {
            0 | 1 => self.accept(now),
            2 | 3 => self.claim(now),
            4..=6 => self.settle(now),
            7 => self.requeue_dead(now),
            8 => self.checkpoint(),
            _ => match self.rng.u64(..4) {
                0 => self.reload(),
                1 => self.roll_back_a_transaction(now),
                2 => self.prune(now),
                _ => self.commit_pending(),
            },
        }
    }

    /// An id for a new task: now and then one made up before.
    fn pick_id(&mut self) -> String {
        if self.next_id > 0 && self.rng.u64(..4) == 0 {
            return id(self.rng.u64(..self.next_id));
        }
        self.next_id += 1;
        id(self.next_id - 1)
    }

    /// Accepts a batch of one to five tasks at random priorities.
    fn accept(&mut self, now: u64) {
        let n = self.rng.u64(..5) + 1;
        let tasks: Vec<NewTask> = (0..n)
            .map(|_| NewTask {
                priority: self.rng.u64(..3) as u8,
                ..new_task(&self.pick_id())
            })
            .collect();
        self.overlay.accept(&self.conn, tasks, now, None).unwrap();
    }

    /// Claims up to four ready tasks.
    fn claim(&mut self, now: u64) {
        let max = self.rng.u64(..4) as usize + 1;
        self.claim_up_to(max, now);
    }

    /// Claims up to `max` ready tasks, and notes their attempts as running.
    fn claim_up_to(&mut self, max: usize, now: u64) {
        // What a claim must take: the first `max` waiting tasks ready by
        // `now`, by priority, then by number.
        let mut ready: Vec<(u8, i64, String)> = records(&self.overlay, &self.conn)
            .into_iter()
            .filter(|(_, r)| match r.state {
                TaskState::Queued => true,
                TaskState::Retrying => r.due_ms <= now,
                _ => false,
            })
            .map(|(seq, r)| (r.priority, seq, r.id))
            .collect();
        ready.sort_unstable();
        let claimed = self.overlay.claim(&self.conn, max, now).unwrap();
        let got: Vec<&str> = claimed.iter().map(|c| c.task.id.as_str()).collect();
        let want: Vec<&str> = ready
            .iter()
            .take(max)
            .map(|(_, _, id)| id.as_str())
            .collect();
        assert_eq!(got, want, "a claim takes the first by (priority, seq)");
        self.running
            .extend(claimed.into_iter().map(|c| (c.task.id, c.attempt)));
        self.claimed_at = now;
    }

    /// Settles a running attempt in one of the ways an attempt ends; now and
    /// then settles a stale attempt instead (one past the task's, or of a
    /// task that does not run), which must change nothing.
    fn settle(&mut self, now: u64) {
        let (id, attempt) = if self.running.is_empty() {
            (id(self.rng.u64(..self.next_id.max(1))), 1)
        } else if self.rng.u64(..10) == 0 {
            let (id, attempt) = &self.running[self.rng.usize(..self.running.len())];
            (id.clone(), attempt + 1)
        } else {
            let i = self.rng.usize(..self.running.len());
            self.running.swap_remove(i)
        };
        let outcome = self.outcome(now);
        let settlement = Settlement {
            id,
            attempt,
            outcome,
        };
        self.overlay
            .settle(&self.conn, vec![settlement], now)
            .unwrap();
    }

    /// How an attempt ends, at random: settled in each of the states, to be
    /// retried, interrupted or never started.
    fn outcome(&mut self, now: u64) -> Outcome {
        let error = ErrorInfo {
            kind: "k".into(),
            message: "m".repeat(self.rng.u64(..50) as usize),
        };
        let settled = |state, error| Outcome::Settled {
            state,
            line: "{}".into(),
            error,
        };
        match self.rng.u64(..7) {
            0 => settled(TaskState::Ok, None),
            1 => settled(TaskState::Failed, Some(error)),
            2 => settled(TaskState::DeadLetter, Some(error)),
            3 => settled(TaskState::Cancelled, Some(error)),
            4 => Outcome::Retry {
                due_ms: now + self.rng.u64(..100),
                error,
            },
            5 => Outcome::Interrupted,
            _ => Outcome::NotStarted,
        }
    }

    /// Requeues every dead letter, or a few ids at random (dead letters or
    /// not, known or not).
    fn requeue_dead(&mut self, now: u64) {
        let ids = if self.rng.bool() {
            None
        } else {
            let n = self.rng.u64(..3) + 1;
            Some(
                (0..n)
                    .map(|_| id(self.rng.u64(..self.next_id.max(1))))
                    .collect(),
            )
        };
        self.overlay.requeue_dead(&self.conn, ids, now).unwrap();
    }

    /// Commits, then writes a slice of the settled tasks' rows, or spills
    /// waiting tasks under a memory bound made up for it (falling back to
    /// every changed task when none waits in memory), or, now and then,
    /// writes every changed task's row.
    fn checkpoint(&mut self) {
        self.commit_pending();
        let bound = match self.rng.u64(..4) {
            0 => {
                self.overlay
                    .checkpoint(&self.conn, Checkpoint::Full)
                    .unwrap();
                return;
            }
            1 => self.rng.usize(..=self.overlay.tally.dirty_weight),
            _ => {
                self.overlay
                    .checkpoint(&self.conn, Checkpoint::Settled)
                    .unwrap();
                return;
            }
        };
        // The checkpoint due under a bound made up for it: past the bound, a
        // spill brings the records back within it (the excess here is far
        // below what one spill writes), leaving only running ones, or a few
        // settled ones, past it.
        self.overlay.bound_memory(MemoryBound(bound));
        let Some(which) = self.overlay.checkpoint_due() else {
            return;
        };
        self.overlay.checkpoint(&self.conn, which).unwrap();
        if which == Checkpoint::Spill {
            let tally = &self.overlay.tally;
            assert!(
                !self.overlay.spill_due(),
                "a spill leaves {} bytes past a bound of {bound}, {} of them waiting tasks'",
                tally.dirty_weight,
                tally.dirty_waiting
            );
        }
    }

    /// Commits, then runs a retention round in steps of a few tasks: the
    /// settled tasks last changed before a time at random (often none),
    /// now and then down to a size at random.
    fn prune(&mut self, now: u64) {
        self.commit_pending();
        let before = now.saturating_sub(self.rng.u64(..400));
        let max_bytes = self.rng.bool().then(|| self.rng.u64(..1 << 16));
        let mut from = 0;
        while let (_, Some(next)) = self
            .overlay
            .on_rows(&self.conn, |c| {
                crate::ops::prune(c, before, max_bytes, 3, from)
            })
            .unwrap()
        {
            from = next;
        }
    }

    /// Commits, then loads the overlay again, with its filter of ids or
    /// without.
    fn reload(&mut self) {
        self.commit_pending();
        let known = if self.rng.bool() {
            self.overlay.take_known()
        } else {
            None
        };
        self.overlay = Overlay::load(&self.conn, known).unwrap();
    }

    /// A transaction that fails: accepts of new tasks (enough, at times, to
    /// fill the filter of ids and build it again), a claim, its journal row
    /// and maybe a full checkpoint, all rolled back; then the overlay is
    /// loaded again with the stale filter, as the writer does.
    fn roll_back_a_transaction(&mut self, now: u64) {
        self.commit_pending();
        self.conn.execute_batch("BEGIN").unwrap();
        for _ in 0..self.rng.u64(..80) {
            self.next_id += 1;
            let task = new_task(&id(self.next_id - 1));
            self.overlay
                .accept(&self.conn, vec![task], now, None)
                .unwrap();
        }
        self.claim_up_to(3, now);
        self.commit_pending();
        if self.rng.bool() {
            self.overlay
                .checkpoint(&self.conn, Checkpoint::Full)
                .unwrap();
        }
        self.conn.execute_batch("ROLLBACK").unwrap();
        let known = self.overlay.take_known();
        self.overlay = Overlay::load(&self.conn, known).unwrap();
        self.running = records(&self.overlay, &self.conn)
            .into_values()
            .filter(|record| record.state == TaskState::Running)
            .map(|record| (record.id, record.attempts))
            .collect();
    }

    /// Writes the current transaction's journal entries.
    fn commit_pending(&mut self) {
        commit_pending(&mut self.overlay, &self.conn);
    }
}

/// What the invariants read of a task's record.
#[derive(Debug)]
struct Record {
    id: String,
    state: TaskState,
    priority: u8,
    due_ms: u64,
    attempts: u32,
}

impl Record {
    /// What `live` says.
    fn of(live: &Live) -> Self {
        Self {
            id: live.task.id.clone(),
            state: live.state,
            priority: live.task.priority,
            due_ms: live.due_ms,
            attempts: live.attempts,
        }
    }
}

/// Every task's record, by sequence number: its entry, else its row.
fn records(overlay: &Overlay, conn: &Connection) -> BTreeMap<i64, Record> {
    let mut select = conn
        .prepare_cached("SELECT seq, id, state, priority, due_ms, attempts FROM tasks")
        .unwrap();
    let mut records: BTreeMap<i64, Record> = select
        .query_map([], |r| {
            let state: String = r.get(2)?;
            let record = Record {
                id: r.get(1)?,
                state: TaskState::parse(&state).unwrap_or_else(|| panic!("state {state}")),
                priority: r.get(3)?,
                due_ms: r.get(4)?,
                attempts: r.get(5)?,
            };
            Ok((r.get(0)?, record))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (seq, live) in overlay.entries.iter() {
        records.insert(seq, Record::of(live));
    }
    records
}

/// Every task's whole record and version, by sequence number: its entry,
/// else its row.
fn whole_records(overlay: &Overlay, conn: &Connection) -> BTreeMap<i64, (TaskRecord, u64)> {
    let mut select = conn
        .prepare(&format!("SELECT {} FROM tasks", live::COLS))
        .unwrap();
    let mut records: BTreeMap<i64, (TaskRecord, u64)> = select
        .query_map([], live::row)
        .unwrap()
        .map(|row| {
            let (seq, live) = row.unwrap();
            (seq, (live.record(), live.version))
        })
        .collect();
    for (seq, live) in overlay.entries.iter() {
        records.insert(seq, (live.record(), live.version));
    }
    records
}

/// Checks every invariant of `overlay` over the rows of `conn`; `claimed_at`
/// is the time of the latest claim, `at` names the seed and step for the
/// messages.
fn check_invariants(overlay: &Overlay, conn: &Connection, claimed_at: u64, at: &str) {
    let records = records(overlay, conn);
    check_entries(overlay, at);
    check_tally(overlay, at);
    check_ready_order(overlay, &records, claimed_at, at);
    check_state_counts(overlay, conn, &records, at);
    check_ids(overlay, &records, at);
}

/// Every entry has unwritten changes or runs, and `ids` and `entries` match
/// one to one.
fn check_entries(overlay: &Overlay, at: &str) {
    overlay.entries.check(at);
    for (seq, live) in overlay.entries.iter() {
        assert!(
            live.dirty() || live.state == TaskState::Running,
            "{at}: entry {seq} is clean and idle: {live:?}"
        );
        assert_eq!(
            overlay
                .ids
                .get(&live.task.id, &overlay.entries)
                .map(|(seq, _)| seq),
            Some(seq),
            "{at}: the id of entry {seq}"
        );
    }
    assert_eq!(
        overlay.ids.len(),
        overlay.entries.len(),
        "{at}: ids without an entry"
    );
}

/// The tally and the journal rows the entries need equal a recount over
/// the entries, every settled task still unwritten is in the plan or in
/// the next, and `settled_since` is set while settled tasks wait for their
/// rows.
fn check_tally(overlay: &Overlay, at: &str) {
    let mut recount = Tally::default();
    let mut rows = UnwrittenRows::default();
    for (_, live) in overlay.entries.iter() {
        recount.count(live, 1);
        if let Some(row) = live.unwritten_since {
            rows.add(row);
        }
    }
    assert_eq!(overlay.unwritten_rows, rows, "{at}: unwritten rows");
    let planned: HashSet<i64> = overlay
        .plan
        .iter()
        .flat_map(|plan| plan.seqs.iter())
        .chain(&overlay.newly_settled)
        .copied()
        .collect();
    for (seq, live) in overlay.entries.iter() {
        assert!(
            !live.settled_unwritten() || planned.contains(&seq),
            "{at}: settled task {seq} is in no plan"
        );
    }
    let sums = |tally: &Tally| {
        (
            tally.counts,
            tally.dirty,
            tally.dirty_settled,
            tally.dirty_weight,
            tally.settled_weight,
        )
    };
    assert_eq!(sums(&overlay.tally), sums(&recount), "{at}: tally");
    if overlay.tally.dirty_settled > 0 {
        assert!(
            overlay.settled_since.is_some(),
            "{at}: {} settled tasks wait for their rows, but settled_since is unset",
            overlay.tally.dirty_settled
        );
    }
}

/// The ready order holds each waiting task once, under its record's keys:
/// a queued task among the ready ones by `(priority, seq)`; a retrying one
/// among the due ones by `(due, priority, seq)`, or among the ready ones
/// once a claim at or past its due time moved it there.
fn check_ready_order(
    overlay: &Overlay,
    records: &BTreeMap<i64, Record>,
    claimed_at: u64,
    at: &str,
) {
    let mut placed = BTreeSet::new();
    let in_memory = overlay.order.in_memory_from_last().map(|key| (key, true));
    let on_disk = overlay.order.on_disk().map(|key| (key, false));
    for ((priority, seq), held) in in_memory.chain(on_disk) {
        assert!(placed.insert(seq), "{at}: task {seq} is ready twice");
        assert_eq!(
            overlay.entries.contains(seq),
            held,
            "{at}: ready task {seq} is in memory, or on disk, as the order says"
        );
        let record = records
            .get(&seq)
            .unwrap_or_else(|| panic!("{at}: ready task {seq} has no record"));
        assert_eq!(record.priority, priority, "{at}: priority of ready {seq}");
        let waits = match record.state {
            TaskState::Queued => true,
            TaskState::Retrying => record.due_ms <= claimed_at,
            _ => false,
        };
        assert!(waits, "{at}: task {seq} is ready: {record:?}");
    }
    for &(due_ms, priority, seq) in &overlay.order.due {
        assert!(placed.insert(seq), "{at}: task {seq} is in the order twice");
        let record = records
            .get(&seq)
            .unwrap_or_else(|| panic!("{at}: due task {seq} has no record"));
        assert_eq!(
            (record.state, record.due_ms, record.priority),
            (TaskState::Retrying, due_ms, priority),
            "{at}: due task {seq}"
        );
    }
    let waiting: BTreeSet<i64> = records
        .iter()
        .filter(|(_, record)| matches!(record.state, TaskState::Queued | TaskState::Retrying))
        .map(|(&seq, _)| seq)
        .collect();
    assert_eq!(placed, waiting, "{at}: the ready order's tasks");
}

/// The rows' `state_counts` plus the tally equal the tasks' states.
fn check_state_counts(
    overlay: &Overlay,
    conn: &Connection,
    records: &BTreeMap<i64, Record>,
    at: &str,
) {
    let mut select = conn
        .prepare_cached("SELECT state, n FROM state_counts")
        .unwrap();
    let stored: BTreeMap<String, i64> = select
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut actual = [0; TaskState::ALL.len()];
    for record in records.values() {
        actual[record.state as usize] += 1;
    }
    for state in TaskState::ALL {
        let counted =
            stored.get(state.as_str()).copied().unwrap_or(0) + overlay.tally.counts[state as usize];
        assert_eq!(
            counted,
            actual[state as usize],
            "{at}: tasks {}",
            state.as_str()
        );
    }
}

/// No id is stored twice, the filter of ids holds every id, and every task's
/// number is below the one the next accept gets.
fn check_ids(overlay: &Overlay, records: &BTreeMap<i64, Record>, at: &str) {
    let mut seen = HashSet::default();
    for record in records.values() {
        assert!(
            seen.insert(&record.id),
            "{at}: id {} is stored twice",
            record.id
        );
    }
    if let Some(known) = &overlay.known {
        for record in records.values() {
            assert!(
                known.may_hold(&record.id),
                "{at}: the filter of ids lacks {}",
                record.id
            );
        }
    }
    if let Some((&last, _)) = records.last_key_value() {
        assert!(
            last < overlay.next_seq,
            "{at}: task {last} exists, yet the next accept gets {}",
            overlay.next_seq
        );
    }
}

/// A fresh load of the store keeps the invariants and holds the same records
/// (at the same versions) and the same tally of states as `overlay`.
fn check_fresh_load_agrees(overlay: &Overlay, conn: &Connection, at: &str) {
    let fresh = Overlay::load(conn, None).unwrap();
    check_invariants(&fresh, conn, 0, &format!("{at}, loaded afresh"));
    let (live, loaded) = (whole_records(overlay, conn), whole_records(&fresh, conn));
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        loaded.keys().collect::<Vec<_>>(),
        "{at}: the tasks of a fresh load"
    );
    for (seq, record) in &live {
        assert_eq!(&loaded[seq], record, "{at}: task {seq} loaded afresh");
    }
    assert_eq!(
        fresh.tally.counts, overlay.tally.counts,
        "{at}: the tally of states loaded afresh"
    );
}

/// With no change waiting for its journal row, a fresh load of the store
/// gives the next task the number the live overlay would: none goes back,
/// whatever rows were deleted.
fn check_numbers(overlay: &Overlay, conn: &Connection, at: &str) {
    if overlay.pending_bytes() > 0 {
        return;
    }
    let fresh = Overlay::load(conn, None).unwrap();
    assert_eq!(
        fresh.next_seq, overlay.next_seq,
        "{at}: the number the next task gets, loaded afresh"
    );
}

#[test]
fn random_operations_keep_the_overlay_consistent_with_its_rows() {
    for seed in SEEDS {
        let mut run = Run::new(seed);
        for step in 0..STEPS {
            run.step(1_000 + 10 * step);
            let at = format!("seed {seed} step {step}");
            check_invariants(&run.overlay, &run.conn, run.claimed_at, &at);
            check_numbers(&run.overlay, &run.conn, &at);
        }
        run.commit_pending();
        check_fresh_load_agrees(&run.overlay, &run.conn, &format!("seed {seed} at the end"));
    }
}

#[test]
fn a_change_that_changes_nothing_journals_nothing_and_keeps_no_entry() {
    let (conn, mut overlay) = empty_overlay();
    overlay
        .accept(&conn, vec![new_task("a"), new_task("b")], 1, None)
        .unwrap();
    let claimed = overlay.claim(&conn, 1, 2).unwrap();
    assert_eq!(claimed[0].task.id, "a");
    let ok = Outcome::Settled {
        state: TaskState::Ok,
        line: "{}".into(),
        error: None,
    };
    let settlement = Settlement {
        id: "a".into(),
        attempt: 1,
        outcome: ok,
    };
    overlay.settle(&conn, vec![settlement], 3).unwrap();
    commit_pending(&mut overlay, &conn);
    overlay.checkpoint(&conn, Checkpoint::Full).unwrap();
    assert_eq!(overlay.entries.len(), 0, "{:?}", overlay.entries);

    // "b" waits: settling an attempt of it changes nothing.
    let interrupted = Settlement {
        id: "b".into(),
        attempt: 1,
        outcome: Outcome::Interrupted,
    };
    overlay.settle(&conn, vec![interrupted], 4).unwrap();
    // Requeuing "b", which is no dead letter, and claiming "a", which does
    // not wait, change nothing either.
    let requeued = overlay
        .record(&conn, 2, |_, version| Entry::Requeued {
            seq: 2,
            version,
            at_ms: 5,
        })
        .unwrap();
    assert_eq!(requeued, Some(false));
    let claimed = overlay
        .record(&conn, 1, |live, version| Entry::Claimed {
            seq: 1,
            version,
            at_ms: 6,
            attempt: live.attempts + 1,
        })
        .unwrap();
    assert_eq!(claimed, Some(false));

    assert!(
        overlay.pending.is_empty(),
        "journaled: {:?}",
        overlay.pending
    );
    assert_eq!(overlay.entries.len(), 0, "{:?}", overlay.entries);
    assert_eq!(overlay.ids.len(), 0, "{:?}", overlay.ids);
    check_invariants(&overlay, &conn, 2, "after the changes of nothing");
}
