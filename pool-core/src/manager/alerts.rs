//! Alerts: raised by the actor, de-duplicated per (kind, worker) within a window,
//! and kept in a bounded history.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use super::alert_kind::AlertKind;
use super::events::AlertSeverity;

/// Alerts kept in the history; the oldest are dropped past it.
pub(crate) const ALERT_HISTORY: usize = 1000;
/// A second alert of the same kind for the same worker within this window is
/// suppressed (and counted).
const DEDUP_WINDOW: Duration = Duration::from_secs(60);
/// How long a critical alert keeps the pool `critical`: also the window in
/// which an alert counts as active where health is explained (`daemon
/// status`, `top`).
pub const CRITICAL_WINDOW: Duration = Duration::from_secs(300);

/// Something that needs an operator's attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Alert {
    /// `alert-<n>`, unique within the pool.
    pub id: String,
    /// How serious.
    pub severity: AlertSeverity,
    /// A short class (`zombie-detected`, `high-memory`, …): the string of an
    /// [`AlertKind`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The worker concerned, if any.
    pub worker_id: Option<String>,
    /// Details for people.
    pub message: String,
    /// When it was raised, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// The actor's alert book-keeping.
#[derive(Debug, Default)]
pub(crate) struct AlertLog {
    history: VecDeque<Alert>,
    last_raised: HashMap<(AlertKind, Option<String>), Instant>,
    critical: VecDeque<Instant>,
    raised: u64,
    suppressed: u64,
}

impl AlertLog {
    /// Records an alert unless the same one was raised within the window.
    pub(crate) fn raise(
        &mut self,
        now: Instant,
        severity: AlertSeverity,
        kind: AlertKind,
        worker: Option<&str>,
        message: String,
    ) -> Option<Alert> {
        let key = (kind, worker.map(str::to_owned));
        if let Some(at) = self.last_raised.get(&key) {
            if now.duration_since(*at) < DEDUP_WINDOW {
                self.suppressed += 1;
                return None;
            }
        }
        self.last_raised.insert(key, now);
        if self.last_raised.len() > 4 * ALERT_HISTORY {
            self.last_raised
                .retain(|_, at| now.duration_since(*at) < DEDUP_WINDOW);
        }
        self.raised += 1;
        let alert = Alert {
            id: format!("alert-{}", self.raised),
            severity,
            kind: kind.as_str().to_owned(),
            worker_id: worker.map(str::to_owned),
            message,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        if self.history.len() == ALERT_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(alert.clone());
        if severity == AlertSeverity::Critical {
            if self.critical.len() == ALERT_HISTORY {
                self.critical.pop_front();
            }
            self.critical.push_back(now);
        }
        Some(alert)
    }

    /// Critical alerts raised within [`CRITICAL_WINDOW`] of `now`.
    pub(crate) fn recent_critical(&mut self, now: Instant) -> usize {
        while self
            .critical
            .front()
            .is_some_and(|at| now.duration_since(*at) >= CRITICAL_WINDOW)
        {
            self.critical.pop_front();
        }
        self.critical.len()
    }

    /// The history, oldest first.
    pub(crate) fn history(&self) -> impl Iterator<Item = &Alert> {
        self.history.iter()
    }

    /// Alerts raised (not suppressed) over the pool's lifetime.
    pub(crate) fn raised(&self) -> u64 {
        self.raised
    }

    /// Alerts suppressed as duplicates.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_are_suppressed() {
        let mut log = AlertLog::default();
        let t0 = Instant::now();
        let raise = |log: &mut AlertLog, at, worker| {
            log.raise(
                at,
                AlertSeverity::Warning,
                AlertKind::HighMemory,
                worker,
                "m".into(),
            )
        };
        assert!(raise(&mut log, t0, Some("worker-1")).is_some());
        assert!(raise(&mut log, t0 + Duration::from_secs(5), Some("worker-1")).is_none());
        assert!(raise(&mut log, t0 + Duration::from_secs(5), Some("worker-2")).is_some());
        assert!(raise(&mut log, t0 + Duration::from_secs(61), Some("worker-1")).is_some());
        assert_eq!((log.raised(), log.suppressed()), (3, 1));
    }

    #[test]
    fn the_history_is_bounded() {
        let mut log = AlertLog::default();
        let t0 = Instant::now();
        for n in 0..(ALERT_HISTORY + 500) {
            let worker = format!("worker-{n}");
            log.raise(
                t0,
                AlertSeverity::Critical,
                AlertKind::ZombieDetected,
                Some(&worker),
                String::new(),
            );
        }
        assert_eq!(log.history().count(), ALERT_HISTORY);
        assert_eq!(log.recent_critical(t0), ALERT_HISTORY);
        assert_eq!(log.recent_critical(t0 + CRITICAL_WINDOW), 0);
    }
}
