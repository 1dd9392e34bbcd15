//! Health inside the actor: probes, verdicts, alerts.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

use super::actor::{Actor, Phase};
use super::alert_kind::AlertKind;
use super::events::{AlertSeverity, PoolEvent};
use super::metrics::Stats;
use super::probe_set::Occasion;
use super::worker_life::KillCause;
use crate::health::{process_rss, ProbeKind, Verdict, Vitals};

/// The recent latency window is the last one to two of these.
const LATENCY_HALF_WINDOW: Duration = Duration::from_secs(60);

impl Actor {
    /// Records an alert (unless it duplicates a recent one) and emits it.
    pub(crate) fn raise_alert(
        &mut self,
        severity: AlertSeverity,
        kind: AlertKind,
        worker: Option<&str>,
        message: String,
    ) {
        let now = Instant::now();
        let raised = self.alerts.raise(now, severity, kind, worker, message);
        self.shared
            .stats
            .alerts_suppressed
            .store(self.alerts.suppressed(), Relaxed);
        let Some(alert) = raised else {
            return;
        };
        let stats = &self.shared.stats;
        stats.alerts_total.store(self.alerts.raised(), Relaxed);
        stats
            .critical_alerts_recent
            .store(self.alerts.recent_critical(now) as u64, Relaxed);
        self.shared.emit(|| PoolEvent::Alert {
            severity,
            kind: alert.kind,
            worker: alert.worker_id,
            message: alert.message,
        });
    }

    /// Refreshes each worker's RSS from `/proc` (the pool does not have to trust
    /// the worker's own report), runs the health probes, and acts on the worst
    /// verdict for each worker.
    pub(crate) fn check_health(&mut self) {
        let now = Instant::now();
        let critical = self.alerts.recent_critical(now) as u64;
        self.shared
            .stats
            .critical_alerts_recent
            .store(critical, Relaxed);
        if now.duration_since(self.window_started) >= LATENCY_HALF_WINDOW {
            self.window_started = now;
            self.shared.stats.tallies.rotate();
        }
        if !matches!(self.phase, Phase::Running | Phase::Draining) {
            return;
        }
        self.autoscale(now);
        let nums: Vec<u64> = self.workers.keys().copied().collect();
        for num in nums {
            self.judge_worker(num, Occasion::Tick);
        }
    }

    /// Consults the probes due on `occasion` about one worker and acts on the
    /// worst verdict. Its RSS is first refreshed from `/proc` when one of them
    /// needs it (always on the health tick).
    pub(crate) fn judge_worker(&mut self, num: u64, occasion: Occasion) {
        if !self.probes.consulted_on(occasion) {
            return;
        }
        let now = Instant::now();
        let Some(w) = self.workers.get_mut(&num) else {
            return;
        };
        // A retiring worker still answers for its tasks: one that freezes or
        // passes the hard memory limit is killed (its tasks were held until
        // their timeout), though it is no longer made suspect or recycled.
        // Once its stop began (its tasks answered) it is left to the stop's
        // steps: an SDK stops its heartbeats as it exits.
        let retiring = w.life.is_retiring_with_tasks();
        if !w.life.is_serving() && !retiring {
            return;
        }
        let recycling = w.life.is_recycling();
        if self.probes.reads_rss(occasion) {
            if let Some(rss) = process_rss(w.pid) {
                w.rss_bytes = rss;
            }
        }
        let vitals = Vitals {
            worker_id: num,
            since_heard: now.duration_since(w.lane.last_heard()),
            age: now.duration_since(w.ready_at),
            rss_bytes: w.rss_bytes,
            tasks_done: w.answered(),
            in_flight: w.lane.book().len() as u32,
            oldest_task_age: None,
        };
        let Some(finding) = self.probes.judge(occasion, &vitals, recycling) else {
            // Only the tick consults every probe: a healthy worker there is no
            // longer suspect.
            if occasion == Occasion::Tick && !retiring {
                w.life.recover();
                w.sync_feed();
            }
            return;
        };
        if retiring && !matches!(finding.verdict, Verdict::Kill(_)) {
            return;
        }
        if finding.kind == ProbeKind::Memory {
            let (worker, rss_bytes) = (w.name().to_owned(), w.rss_bytes);
            let message = format!("{worker}: {}", finding.verdict.reason());
            self.raise_alert(
                AlertSeverity::Warning,
                AlertKind::HighMemory,
                Some(&worker),
                message,
            );
            self.shared
                .emit(|| PoolEvent::HighMemory { worker, rss_bytes });
        }
        self.apply_verdict(num, finding.verdict, finding.kind, finding.probe);
    }

    /// Acts on `verdict`, given by a probe of `kind` named `probe`: raises the
    /// alert its kind calls for ([`AlertKind::for_verdict`]) and moves the worker.
    pub(crate) fn apply_verdict(
        &mut self,
        num: u64,
        verdict: Verdict,
        kind: ProbeKind,
        probe: &str,
    ) {
        let alert = AlertKind::for_verdict(kind, &verdict);
        let Some(worker) = self.workers.get_mut(&num) else {
            return;
        };
        match verdict {
            Verdict::Healthy => {
                worker.life.recover();
                worker.sync_feed();
            }
            Verdict::Suspect(reason) => {
                if worker.life.suspect() {
                    worker.sync_feed();
                    tracing::warn!(worker.id = %worker.name(), %reason, probe, "worker is suspect");
                    let name = worker.name().to_owned();
                    if let Some((severity, alert)) = alert {
                        let message = format!("{name}: {reason}");
                        self.raise_alert(severity, alert, Some(&name), message);
                    }
                }
            }
            Verdict::Recycle(reason) => {
                if worker.life.recycle() {
                    let slot = worker.slot.take();
                    let name = worker.name().to_owned();
                    if let Some(slot) = slot {
                        self.vacate(slot, true);
                    }
                    Stats::bump(&self.shared.stats.workers_recycled);
                    self.shared.emit(|| PoolEvent::WorkerRecycled {
                        worker: name,
                        reason,
                    });
                    self.replenish();
                }
            }
            Verdict::Kill(reason) => {
                let name = worker.name().to_owned();
                tracing::warn!(worker.id = %name, %reason, probe, "killing unhealthy worker");
                if let Some((severity, alert)) = alert {
                    let message = format!("{name}: {reason}");
                    self.raise_alert(severity, alert, Some(&name), message);
                }
                if kind == ProbeKind::Heartbeat {
                    Stats::bump(&self.shared.stats.zombies_killed);
                    let r = reason.clone();
                    self.shared.emit(|| PoolEvent::ZombieDetected {
                        worker: name,
                        reason: r,
                    });
                }
                self.kill_worker(num, KillCause::Unhealthy(reason));
            }
        }
    }
}
