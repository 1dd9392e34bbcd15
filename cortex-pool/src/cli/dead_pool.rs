//! Ends a `run` whose pool can no longer run anything: its restart breaker
//! opened (workers in a row failed to start, or died with no task running)
//! and no worker is left. The pool itself keeps trying one start every 30 s,
//! as a daemon should; a batch command waited for ever with its tasks queued.

use std::time::Duration;

use pool_core::Pool;
use tokio::sync::watch;

use super::interrupt::{Phase, Stopper};

/// How often the pool's health is looked at.
const EVERY: Duration = Duration::from_millis(200);

/// Watches `pool` until the run leaves [`Phase::Running`] or
/// [`Phase::Draining`]; when the breaker is open with no worker left, stops
/// the run through `stopper` and returns why.
pub(crate) async fn watch(
    pool: Pool,
    stopper: Stopper,
    mut phase: watch::Receiver<Phase>,
) -> Option<String> {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() >= Phase::Stopping {
                    return None;
                }
                continue;
            }
        }
        // One atomic load most of the time; the health summary (a metrics
        // snapshot) only once no worker is left.
        if pool.worker_count() == 0 && pool.health().restart_breaker_open {
            stopper.stop();
            return Some(
                "no worker is left and none could be started: the restart breaker opened \
                 (workers in a row failed to start or died with no task running; see the \
                 warnings above); the tasks not finished were cancelled"
                    .to_owned(),
            );
        }
    }
}
