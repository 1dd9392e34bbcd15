//! The daemon's log of what happens to its workers: the pool's events at `info`,
//! `warn` and `error` (crashes with their stderr tail, replacements, zombie kills,
//! alerts, recycling, scaling, dead letters) and the restart breaker's openings and
//! closings. Worker stderr itself is forwarded by the pool at `info`, at most 50
//! lines a second per worker.

use std::time::Duration;

use pool_core::manager::AlertSeverity;
use pool_core::{Pool, PoolEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

/// How often the breaker's state is compared with the last one logged.
const BREAKER_CHECK: Duration = Duration::from_millis(250);

/// Logs `events` (subscribed before the pool started) until `stop`.
pub(crate) async fn run(pool: Pool, mut events: Receiver<PoolEvent>, stop: CancellationToken) {
    let mut breaker_open = false;
    let mut tick = tokio::time::interval(BREAKER_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                Ok(event) => log(&event),
                // Failing tasks can come by the thousand; the worker events they
                // may crowd out are also in the alert history. (Routine task
                // events are not subscribed to: the pool does not even build them.)
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "pool events not logged: the log fell behind");
                }
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {}
        }
        let open = pool.health().restart_breaker_open;
        if open != breaker_open {
            breaker_open = open;
            if open {
                tracing::error!("restart breaker open: workers keep dying or failing to start; replacements are slowed down");
            } else {
                tracing::info!("restart breaker closed: a worker succeeded");
            }
        }
    }
}

/// Logs one event at its level; task events other than dead letters stay at
/// `debug`.
pub(crate) fn log(event: &PoolEvent) {
    match event {
        PoolEvent::WorkerExited {
            worker,
            pid,
            exit,
            expected: false,
            stderr_tail,
        } => {
            if stderr_tail.is_empty() {
                tracing::warn!(worker.id = %worker, pid, "worker crashed ({exit})");
            } else {
                tracing::warn!(
                    worker.id = %worker,
                    pid,
                    "worker crashed ({exit}); its last stderr lines:\n{}",
                    stderr_tail.trim_end()
                );
            }
        }
        PoolEvent::WorkerExited {
            worker, pid, exit, ..
        } => tracing::info!(worker.id = %worker, pid, %exit, "worker exited"),
        PoolEvent::WorkerRestarted { worker, backoff_ms } => {
            tracing::info!(worker.id = %worker, backoff_ms, "replacing a worker");
        }
        PoolEvent::ZombieDetected { worker, reason } => {
            tracing::warn!(worker.id = %worker, %reason, "zombie worker: killing it");
        }
        PoolEvent::HighMemory { worker, rss_bytes } => {
            tracing::warn!(worker.id = %worker, rss_bytes, "worker above its memory limit");
        }
        PoolEvent::WorkerRecycled { worker, reason } => {
            tracing::info!(worker.id = %worker, %reason, "recycling a worker");
        }
        PoolEvent::PoolScaledUp { count, new_size } => {
            tracing::info!(count, new_size, "pool scaled up");
        }
        PoolEvent::PoolScaledDown { count, new_size } => {
            tracing::info!(count, new_size, "pool scaled down");
        }
        PoolEvent::Alert {
            severity,
            kind,
            worker,
            message,
        } => {
            let worker = worker.as_deref().unwrap_or("-");
            match severity {
                AlertSeverity::Critical => {
                    tracing::error!(alert = %kind, worker.id = %worker, "alert: {message}");
                }
                AlertSeverity::Warning => {
                    tracing::warn!(alert = %kind, worker.id = %worker, "alert: {message}");
                }
                _ => tracing::info!(alert = %kind, worker.id = %worker, "alert: {message}"),
            }
        }
        PoolEvent::TaskDeadLettered {
            task,
            attempts,
            kind,
        } => tracing::info!(task, attempts, %kind, "task dead-lettered"),
        PoolEvent::WorkerReady { worker, pid } => {
            tracing::debug!(worker.id = %worker, pid, "worker ready");
        }
        other => tracing::debug!(event = ?other, "pool event"),
    }
}
