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

use std::collections::VecDeque;

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
    reply: oneshot::Sender<Result<usize, ConfigError>>,
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
        if let Some(command) = command {
            self.command = command;
        }
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
            due: due.into(),
            step: RollStep::Between,
            rolled: 0,
            reply,
        });
        self.advance_roll();
    }

    /// Moves a rolling restart along; cheap when none is running.
    pub(crate) fn advance_roll(&mut self) {
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
