//! Rolling restarts: every worker is replaced one at a time, its replacement
//! started and ready *before* it is retired, so capacity never dips and no task
//! is dropped (a retiring worker finishes what it runs).
//!
//! The roll is a small state machine the actor advances after every change
//! ([`Actor::advance_roll`]): surge by one worker over the target, wait until
//! the pool has a ready worker more than its target, retire the oldest worker
//! still due, repeat. The surge is the roll's own, apart from the target: a
//! scale (by a caller or the autoscaler) during a surge sets the target and
//! the roll still ends one worker above it before each retirement.
//!
//! A roll whose command cannot start workers is aborted: once
//! `max_start_failures` workers in a row launched since the roll began (they
//! all run its command: replacements, and any worker launched meanwhile)
//! failed to start, the roll ends with an error, the pool goes back to the
//! command it ran before for every later worker, the workers not yet rolled
//! keep serving, and another roll may begin. The same count opens the restart
//! breaker (a critical alert) unless it was open already.

use std::collections::{BTreeSet, VecDeque};

use tokio::sync::oneshot;

use super::actor::{Actor, Phase};
use super::events::PoolEvent;
use super::pool::WorkerCommand;
use crate::error::ConfigError;

/// A rolling restart in progress.
pub(crate) struct Roll {
    /// Workers still to replace, oldest first: those serving when it began and
    /// those still starting then (with the old command).
    due: VecDeque<u64>,
    /// Where it stands between retirements.
    step: RollStep,
    /// Workers retired so far.
    rolled: usize,
    /// Workers due when it began.
    total: usize,
    /// The command the pool ran before the roll, put back if the roll is
    /// aborted; `None` when the roll kept the pool's command.
    previous: Option<WorkerCommand>,
    /// The starts of workers running the roll's command.
    starts: RollStarts,
    /// The caller's answer: workers replaced, or why the roll did not finish.
    reply: oneshot::Sender<Result<usize, ConfigError>>,
}

/// The starts of the workers launched since a roll began, all running its
/// command: the roll's own count of them, apart from the actor's count of
/// every failed start (which the restart breaker follows).
#[derive(Debug)]
struct RollStarts {
    /// The first worker number launched with the roll's command.
    first: u64,
    /// Those seen starting, not yet ready or gone.
    starting: BTreeSet<u64>,
    /// Those that failed to start since the last one became ready.
    failed_in_a_row: u32,
}

impl RollStarts {
    /// Watches the workers numbered `first` and up.
    fn since(first: u64) -> Self {
        Self {
            first,
            starting: BTreeSet::new(),
            failed_in_a_row: 0,
        }
    }

    /// Settles the watched starts that ended: one that became a worker
    /// (`is_worker`) started, and one gone without it failed, as did one that
    /// became ready and was gone before the roll saw it. Then watches the
    /// roll's launches still starting (`launching`).
    fn observe(
        &mut self,
        launching: impl Iterator<Item = u64>,
        still_starting: impl Fn(u64) -> bool,
        is_worker: impl Fn(u64) -> bool,
    ) {
        let failed = &mut self.failed_in_a_row;
        self.starting.retain(|&num| {
            if still_starting(num) {
                return true;
            }
            if is_worker(num) {
                *failed = 0;
            } else {
                *failed = failed.saturating_add(1);
            }
            false
        });
        let first = self.first;
        self.starting.extend(launching.filter(|&num| num >= first));
    }
}

/// Where a roll stands between two retirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollStep {
    /// No replacement asked for yet.
    Between,
    /// One worker over the target is wanted: the next due worker's
    /// replacement, which must be ready before that worker retires.
    Surging,
}

/// What became of a roll's next due worker.
enum Due {
    /// It was retired.
    Retired,
    /// Every worker still due is starting: none can be retired before it is
    /// ready.
    Starting,
    /// None is left.
    None,
}

impl Roll {
    /// The workers the roll wants over the pool's target: one while a
    /// replacement starts.
    pub(crate) fn surge(&self) -> usize {
        usize::from(self.step == RollStep::Surging)
    }
}

impl Actor {
    /// Workers the pool wants now: its target, and one more while a rolling
    /// restart's replacement starts.
    pub(crate) fn wanted(&self) -> usize {
        self.target + self.roll.as_ref().map_or(0, Roll::surge)
    }

    /// Starts a rolling restart; `command`, when given, is what the replacements
    /// (and every later worker) run.
    pub(crate) fn begin_roll(
        &mut self,
        command: Option<WorkerCommand>,
        reply: oneshot::Sender<Result<usize, ConfigError>>,
    ) {
        if self.phase != Phase::Running {
            let _ = reply.send(Err(ConfigError::new("pool", "the pool is not running")));
            return;
        }
        if self.roll.is_some() {
            let _ = reply.send(Err(ConfigError::new(
                "pool",
                "a rolling restart is already in progress",
            )));
            return;
        }
        let previous = command.map(|command| std::mem::replace(&mut self.command, command));
        // Workers still starting run the command they were launched with:
        // they are due as well, retired once ready.
        let mut due: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| w.life.is_serving())
            .map(|(num, _)| *num)
            .chain(self.launching.keys().copied())
            .collect();
        due.sort_unstable();
        self.roll = Some(Roll {
            total: due.len(),
            due: due.into(),
            step: RollStep::Between,
            rolled: 0,
            previous,
            starts: RollStarts::since(self.next_worker),
            reply,
        });
        self.advance_roll();
    }

    /// Moves a rolling restart along; cheap when none is running.
    pub(crate) fn advance_roll(&mut self) {
        if self.roll.is_none() {
            return;
        }
        self.watch_roll_starts();
        self.step_roll();
        // The replacement this step launched is watched from now: its
        // failure may be the next thing the actor hears.
        self.watch_roll_starts();
    }

    /// Settles the roll's starts that ended since it last looked, and
    /// watches its launches still starting.
    fn watch_roll_starts(&mut self) {
        if let Some(roll) = self.roll.as_mut() {
            roll.starts.observe(
                self.launching.keys().copied(),
                |num| self.launching.contains_key(&num),
                |num| self.workers.contains_key(&num),
            );
        }
    }

    /// One step of a rolling restart: its end, its abort, a retirement, or a
    /// replacement asked for.
    fn step_roll(&mut self) {
        let Some(mut roll) = self.roll.take() else {
            return;
        };
        if self.phase != Phase::Running {
            let _ = roll.reply.send(Err(ConfigError::new(
                "pool",
                "the pool began shutting down during the rolling restart",
            )));
            return;
        }
        if roll.starts.failed_in_a_row >= self.config.max_start_failures {
            self.abort_roll(roll);
            return;
        }
        loop {
            if roll.step == RollStep::Surging {
                let ready = self
                    .workers
                    .values()
                    .filter(|w| w.life.is_serving())
                    .count();
                if ready <= self.target {
                    break; // the replacement is not ready yet
                }
                match self.retire_next_due(&mut roll) {
                    Due::Starting => break, // retired once one is ready
                    Due::Retired | Due::None => {}
                }
                roll.step = RollStep::Between;
                // A due worker that died during the surge was replaced as
                // well: one too many now serve.
                if self.live_count() > self.target {
                    self.shrink_to_target();
                }
                continue;
            }
            roll.due.retain(|num| {
                self.launching.contains_key(num)
                    || self.workers.get(num).is_some_and(|w| w.life.is_serving())
            });
            if roll.due.is_empty() {
                let _ = roll.reply.send(Ok(roll.rolled));
                return;
            }
            roll.step = RollStep::Surging;
            self.roll = Some(roll);
            self.replenish();
            return;
        }
        self.roll = Some(roll);
    }

    /// Ends a roll whose command could not start `max_start_failures`
    /// workers in a row: the pool's previous command is put back for every
    /// later worker, the surge is dropped (a replacement due to start is not
    /// launched; one starting now is retired if it becomes ready, as a scale
    /// down's late worker is), the workers not yet rolled keep serving, and
    /// the caller is told why.
    fn abort_roll(&mut self, roll: Roll) {
        let Roll {
            rolled,
            total,
            previous,
            starts,
            reply,
            ..
        } = roll;
        let restored = previous.is_some();
        if let Some(previous) = previous {
            self.command = previous;
        }
        if self.live_count() > self.wanted() {
            self.shrink_to_target();
        }
        let failures = starts.failed_in_a_row;
        tracing::warn!(
            failures,
            rolled,
            total,
            "rolling restart aborted: its workers failed to start"
        );
        let command = if restored {
            "new workers run the pool's previous command again"
        } else {
            "new workers run the pool's command as before"
        };
        let message = format!(
            "rolling restart aborted: {failures} workers in a row launched with its command \
             failed to start (max_start_failures is {}; see the worker-start-failed alerts); \
             {rolled} of {total} workers were replaced, the others keep running, and {command}",
            self.config.max_start_failures
        );
        let _ = reply.send(Err(ConfigError::new("worker", message)));
    }

    /// Retires the oldest due worker serving now; drops the due workers that
    /// died or left meanwhile (they were replaced already), and keeps those
    /// still starting.
    fn retire_next_due(&mut self, roll: &mut Roll) -> Due {
        let mut starting = false;
        let mut at = 0;
        while let Some(&num) = roll.due.get(at) {
            if let Some(w) = self.workers.get(&num).filter(|w| w.life.is_serving()) {
                let worker = w.name().to_owned();
                roll.due.remove(at);
                self.shared.emit(|| PoolEvent::WorkerRecycled {
                    worker,
                    reason: "rolling restart".to_owned(),
                });
                self.release_worker(num);
                roll.rolled += 1;
                return Due::Retired;
            }
            if self.launching.contains_key(&num) {
                starting = true;
                at += 1;
            } else {
                roll.due.remove(at);
            }
        }
        if starting {
            Due::Starting
        } else {
            Due::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RollStarts;

    /// Looks at `starts` with `launching` still starting and `workers` ready.
    fn look(starts: &mut RollStarts, launching: &[u64], workers: &[u64]) {
        starts.observe(
            launching.iter().copied(),
            |num| launching.contains(&num),
            |num| workers.contains(&num),
        );
    }

    #[test]
    fn failed_starts_of_the_rolls_launches_are_counted_in_a_row() {
        let mut starts = RollStarts::since(5);
        // Worker 4 was launched before the roll (the old command): not its.
        look(&mut starts, &[4, 5], &[0]);
        look(&mut starts, &[6], &[0]);
        assert_eq!(starts.failed_in_a_row, 1, "5 is gone without starting");
        look(&mut starts, &[], &[0]);
        assert_eq!(starts.failed_in_a_row, 2, "6 too; 4 is not counted");
        look(&mut starts, &[7], &[0]);
        look(&mut starts, &[], &[0, 7]);
        assert_eq!(starts.failed_in_a_row, 0, "7 started: the run is broken");
        look(&mut starts, &[8], &[0, 7]);
        look(&mut starts, &[], &[0, 7]);
        assert_eq!(starts.failed_in_a_row, 1);
    }
}
