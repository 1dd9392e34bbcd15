//! Rolling restarts: every worker is replaced one at a time, its replacement
//! started and ready *before* it is retired, so capacity never dips and no task
//! is dropped (a retiring worker finishes what it runs).
//!
//! The roll is a small state machine the actor advances after every change
//! ([`Actor::advance_roll`]): surge the target by one, wait until the pool has a
//! ready worker more than before, retire the oldest worker still due, repeat.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::actor::{Actor, Phase};
use super::events::PoolEvent;
use super::pool::WorkerCommand;
use crate::error::ConfigError;

/// A rolling restart in progress.
pub(crate) struct Roll {
    /// Workers still to replace, oldest first.
    due: VecDeque<u64>,
    /// The surged target while a replacement starts (`None` between steps).
    surged: Option<usize>,
    /// Workers retired so far.
    rolled: usize,
    reply: oneshot::Sender<Result<usize, ConfigError>>,
}

impl Actor {
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
        let due = self
            .workers
            .iter()
            .filter(|(_, w)| w.life.is_serving())
            .map(|(num, _)| *num)
            .collect();
        self.roll = Some(Roll {
            due,
            surged: None,
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
            if roll.surged.take().is_some() {
                self.target = self.target.saturating_sub(1);
            }
            let _ = roll.reply.send(Err(ConfigError::new(
                "pool",
                "the pool began shutting down during the rolling restart",
            )));
            return;
        }
        loop {
            if let Some(surged) = roll.surged {
                if self.target != surged {
                    // Someone scaled the pool meanwhile: their target wins.
                    roll.surged = None;
                    continue;
                }
                let ready = self
                    .workers
                    .values()
                    .filter(|w| w.life.is_serving())
                    .count();
                if ready < self.target {
                    break; // the replacement is not ready yet
                }
                // The next due worker still serving (one that died meanwhile
                // was replaced already).
                while let Some(num) = roll.due.pop_front() {
                    let Some(w) = self.workers.get(&num).filter(|w| w.life.is_serving()) else {
                        continue;
                    };
                    let worker = w.name().to_owned();
                    self.shared.emit(|| PoolEvent::WorkerRecycled {
                        worker,
                        reason: "rolling restart".to_owned(),
                    });
                    self.release_worker(num);
                    roll.rolled += 1;
                    break;
                }
                self.target -= 1;
                roll.surged = None;
                // A due worker that died during the surge was replaced as well:
                // one too many now serve.
                if self.live_count() > self.target {
                    self.shrink_to_target();
                }
                continue;
            }
            while let Some(&num) = roll.due.front() {
                if self.workers.get(&num).is_some_and(|w| w.life.is_serving()) {
                    break;
                }
                roll.due.pop_front(); // died or retired meanwhile; already replaced
            }
            if roll.due.is_empty() {
                let _ = roll.reply.send(Ok(roll.rolled));
                return;
            }
            self.target += 1;
            roll.surged = Some(self.target);
            self.replenish();
            break;
        }
        self.roll = Some(roll);
    }
}
