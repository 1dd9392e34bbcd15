//! [`WorkerLife`]: where a worker stands in its life, as one value, with the
//! questions the actor asks of it and the moves it makes.

use std::time::Duration;

use tokio_util::time::delay_queue;

/// How far the pool has got in stopping a worker that is on its way out; each step
/// follows the last by `kill_grace`, and a worker that exits is never signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopStep {
    /// The drain deadline passed while it had tasks: it was sent `cancel` for each.
    /// `shutdown` follows, at once when it has answered them all.
    Cancelled,
    /// It was sent `shutdown` and its input was closed; SIGTERM follows.
    ShutdownSent,
    /// Its group was sent SIGTERM; SIGKILL follows.
    Terminated,
}

/// The stop step a worker reached, and the timer armed for the next one.
pub(crate) type Stop = (StopStep, delay_queue::Key);

/// Why the pool is ending a worker (its exit is then expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KillCause {
    TimedOut {
        task: u64,
        after: Duration,
    },
    CancelIgnored {
        task: u64,
    },
    Unhealthy(String),
    /// Released: replaced, scaled down, rolled, or the pool is stopping.
    Retired,
    /// Its tasks were abandoned at the drain deadline.
    Shutdown,
}

/// Whether a serving worker is trusted with new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    /// A probe found it suspect: no new tasks until it recovers.
    Suspect,
}

/// A worker's life, from ready to reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerLife {
    /// On duty. It takes new tasks while healthy. `recycling`: a probe asked for
    /// it to be replaced; it keeps serving until its replacement is ready, then
    /// retires, and no longer counts towards the pool's size.
    Serving { health: Health, recycling: bool },
    /// Takes no new tasks; sent `shutdown` once its tasks are answered, then
    /// stopped step by step. `cause` is [`KillCause::Retired`] or
    /// [`KillCause::Shutdown`].
    Retiring {
        cause: KillCause,
        stop: Option<Stop>,
    },
    /// Sent SIGKILL, or its link closed under the pool; its tasks settle when it is
    /// reaped. `cause` is `None` when the pool did not choose this (its link
    /// closed): its exit is then a crash.
    Killing {
        cause: Option<KillCause>,
        stop: Option<Stop>,
    },
}

impl WorkerLife {
    /// A worker that has just become ready.
    pub(crate) const fn new() -> Self {
        Self::Serving {
            health: Health::Healthy,
            recycling: false,
        }
    }

    /// Still serving (ready, busy, suspect or recycling), not on its way out.
    pub(crate) fn is_serving(&self) -> bool {
        matches!(self, Self::Serving { .. })
    }

    /// Takes new tasks: serving and healthy (recycling or not).
    pub(crate) fn takes_tasks(&self) -> bool {
        matches!(
            self,
            Self::Serving {
                health: Health::Healthy,
                ..
            }
        )
    }

    /// Counts towards the pool's target size: serving and not recycling.
    pub(crate) fn is_staying(&self) -> bool {
        matches!(
            self,
            Self::Serving {
                recycling: false,
                ..
            }
        )
    }

    /// Serving until its replacement is ready.
    pub(crate) fn is_recycling(&self) -> bool {
        matches!(
            self,
            Self::Serving {
                recycling: true,
                ..
            }
        )
    }

    /// Serving, but suspect.
    pub(crate) fn is_suspect(&self) -> bool {
        matches!(
            self,
            Self::Serving {
                health: Health::Suspect,
                ..
            }
        )
    }

    pub(crate) fn is_retiring(&self) -> bool {
        matches!(self, Self::Retiring { .. })
    }

    /// Retiring with tasks still to answer: its stop has not begun (once it
    /// has, the worker may stop its heartbeats as it exits).
    pub(crate) fn is_retiring_with_tasks(&self) -> bool {
        matches!(self, Self::Retiring { stop: None, .. })
    }

    pub(crate) fn is_killing(&self) -> bool {
        matches!(self, Self::Killing { .. })
    }

    /// Why the pool is ending it: `None` while it serves, or when its link closed
    /// under the pool (its exit is then unexpected).
    pub(crate) fn cause(&self) -> Option<&KillCause> {
        match self {
            Self::Serving { .. } => None,
            Self::Retiring { cause, .. } => Some(cause),
            Self::Killing { cause, .. } => cause.as_ref(),
        }
    }

    /// Its state as [`WorkerStatus::state`](super::WorkerStatus) names it;
    /// `idle` when it holds no task.
    pub(crate) fn status(&self, idle: bool) -> &'static str {
        match self {
            Self::Serving {
                recycling: true, ..
            } => "recycling",
            Self::Serving {
                health: Health::Healthy,
                ..
            } if idle => "ready",
            Self::Serving {
                health: Health::Healthy,
                ..
            } => "busy",
            Self::Serving {
                health: Health::Suspect,
                ..
            } => "suspect",
            Self::Retiring { .. } => "retiring",
            Self::Killing { .. } => "killing",
        }
    }

    /// A healthy serving worker becomes suspect; `true` when it did.
    pub(crate) fn suspect(&mut self) -> bool {
        match self {
            Self::Serving { health, .. } if *health == Health::Healthy => {
                *health = Health::Suspect;
                true
            }
            _ => false,
        }
    }

    /// A suspect serving worker is healthy again.
    pub(crate) fn recover(&mut self) {
        if let Self::Serving { health, .. } = self {
            *health = Health::Healthy;
        }
    }

    /// A serving worker starts recycling; `true` when it did (not already
    /// recycling, not on its way out).
    pub(crate) fn recycle(&mut self) -> bool {
        match self {
            Self::Serving { recycling, .. } if !*recycling => {
                *recycling = true;
                true
            }
            _ => false,
        }
    }

    /// Released by the pool: a serving worker retires; a worker already on its
    /// way out keeps its cause (one whose link closed is now expected to exit).
    pub(crate) fn retire(&mut self) {
        match self {
            Self::Serving { .. } => {
                *self = Self::Retiring {
                    cause: KillCause::Retired,
                    stop: None,
                };
            }
            Self::Killing { cause, .. } if cause.is_none() => *cause = Some(KillCause::Retired),
            Self::Retiring { .. } | Self::Killing { .. } => {}
        }
    }

    /// Its tasks were abandoned at the drain deadline: it retires with
    /// [`KillCause::Shutdown`], keeping any stop step; a killed worker is left as
    /// it is.
    pub(crate) fn abandon(&mut self) {
        let stop = match self {
            Self::Serving { .. } => None,
            Self::Retiring { stop, .. } => stop.take(),
            Self::Killing { .. } => return,
        };
        *self = Self::Retiring {
            cause: KillCause::Shutdown,
            stop,
        };
    }

    /// Killed for `cause`. The first kill's cause wins, but it replaces a
    /// retirement's: a task that timed out on a recycling worker is still the one
    /// at fault (its bystanders lose nothing), and a retiring worker killed by
    /// [`Pool::shutdown_now`](crate::Pool::shutdown_now) ends as a shutdown.
    pub(crate) fn kill(&mut self, cause: KillCause) {
        self.mark_killing();
        if let Self::Killing { cause: held, .. } = self {
            if matches!(held, None | Some(KillCause::Retired)) {
                *held = Some(cause);
            }
        }
    }

    /// Being killed, for the cause it has (its link closed, or it was sent
    /// SIGKILL at its last stop step); its stop step is kept.
    pub(crate) fn mark_killing(&mut self) {
        *self = match std::mem::replace(self, Self::new()) {
            Self::Serving { .. } => Self::Killing {
                cause: None,
                stop: None,
            },
            Self::Retiring { cause, stop } => Self::Killing {
                cause: Some(cause),
                stop,
            },
            killing @ Self::Killing { .. } => killing,
        };
    }

    /// Where its stop stands (`None` while it serves: it has no stop to record).
    pub(crate) fn stop_mut(&mut self) -> Option<&mut Option<Stop>> {
        match self {
            Self::Serving { .. } => None,
            Self::Retiring { stop, .. } | Self::Killing { stop, .. } => Some(stop),
        }
    }

    /// Takes its stop step and that step's timer, if any.
    pub(crate) fn take_stop(&mut self) -> Option<Stop> {
        self.stop_mut().and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::time::DelayQueue;

    fn statuses(life: &WorkerLife) -> (&'static str, &'static str) {
        (life.status(true), life.status(false))
    }

    #[test]
    fn a_new_worker_serves_takes_tasks_and_counts() {
        let life = WorkerLife::new();
        assert!(life.is_serving() && life.takes_tasks() && life.is_staying());
        assert!(!life.is_recycling() && !life.is_suspect());
        assert_eq!(life.cause(), None);
        assert_eq!(statuses(&life), ("ready", "busy"));
    }

    #[test]
    fn suspect_workers_serve_without_new_tasks_until_they_recover() {
        let mut life = WorkerLife::new();
        assert!(life.suspect());
        assert!(!life.suspect(), "already suspect");
        assert!(life.is_serving() && life.is_staying() && !life.takes_tasks());
        assert_eq!(statuses(&life), ("suspect", "suspect"));
        life.recover();
        assert!(life.takes_tasks());
        assert_eq!(life, WorkerLife::new());
    }

    #[test]
    fn a_recycling_worker_serves_but_no_longer_counts() {
        let mut life = WorkerLife::new();
        assert!(life.recycle());
        assert!(!life.recycle(), "recycled once");
        assert!(life.is_serving() && life.takes_tasks() && life.is_recycling());
        assert!(!life.is_staying());
        assert_eq!(statuses(&life), ("recycling", "recycling"));
        assert!(life.suspect());
        assert!(life.is_recycling() && !life.takes_tasks());
        assert_eq!(life.status(true), "recycling");
    }

    #[test]
    fn retiring_is_expected_and_ends_serving() {
        let mut life = WorkerLife::new();
        life.retire();
        assert!(life.is_retiring() && !life.is_serving() && !life.takes_tasks());
        assert_eq!(life.cause(), Some(&KillCause::Retired));
        assert_eq!(statuses(&life), ("retiring", "retiring"));
        assert!(!life.suspect() && !life.recycle());
        life.abandon();
        assert_eq!(life.cause(), Some(&KillCause::Shutdown));
        life.retire();
        assert_eq!(life.cause(), Some(&KillCause::Shutdown), "first cause kept");
    }

    #[test]
    fn the_first_kill_cause_wins_over_a_later_one_and_replaces_a_retirement() {
        let mut life = WorkerLife::new();
        life.kill(KillCause::CancelIgnored { task: 1 });
        life.kill(KillCause::Unhealthy("later".into()));
        assert!(life.is_killing());
        assert_eq!(life.cause(), Some(&KillCause::CancelIgnored { task: 1 }));
        assert_eq!(statuses(&life), ("killing", "killing"));
        life.retire();
        life.abandon();
        assert_eq!(life.cause(), Some(&KillCause::CancelIgnored { task: 1 }));

        let mut retiring = WorkerLife::new();
        retiring.retire();
        let timed_out = KillCause::TimedOut {
            task: 7,
            after: std::time::Duration::from_secs(1),
        };
        retiring.kill(timed_out.clone());
        assert!(retiring.is_killing());
        assert_eq!(retiring.cause(), Some(&timed_out));
        retiring.kill(KillCause::Shutdown);
        assert_eq!(retiring.cause(), Some(&timed_out));

        let mut abandoned = WorkerLife::new();
        abandoned.retire();
        abandoned.abandon();
        abandoned.kill(KillCause::Unhealthy("zombie".into()));
        assert_eq!(abandoned.cause(), Some(&KillCause::Shutdown));
    }

    #[test]
    fn a_lost_link_is_a_crash_until_the_pool_releases_the_worker() {
        let mut life = WorkerLife::new();
        life.mark_killing();
        assert!(life.is_killing());
        assert_eq!(life.cause(), None, "its exit is unexpected");
        life.retire();
        assert_eq!(life.cause(), Some(&KillCause::Retired));

        let mut lost = WorkerLife::new();
        lost.mark_killing();
        lost.kill(KillCause::TimedOut {
            task: 3,
            after: Duration::from_secs(1),
        });
        assert!(matches!(
            lost.cause(),
            Some(KillCause::TimedOut { task: 3, .. })
        ));
    }

    #[tokio::test]
    async fn stop_steps_are_kept_through_the_moves_and_never_held_while_serving() {
        let mut timers: DelayQueue<()> = DelayQueue::new();
        let mut life = WorkerLife::new();
        assert!(life.stop_mut().is_none());
        assert_eq!(life.take_stop(), None);
        life.retire();
        let key = timers.insert((), Duration::from_secs(1));
        *life.stop_mut().expect("a retiring worker has a stop") =
            Some((StopStep::ShutdownSent, key));
        life.abandon();
        assert_eq!(life.cause(), Some(&KillCause::Shutdown));
        life.mark_killing();
        assert_eq!(life.cause(), Some(&KillCause::Shutdown));
        assert_eq!(life.take_stop(), Some((StopStep::ShutdownSent, key)));
        assert_eq!(life.take_stop(), None);
    }
}
