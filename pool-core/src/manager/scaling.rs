//! Scaling inside the actor: setting the target size and retiring the surplus.

use std::sync::atomic::Ordering::Relaxed;

use super::actor::{Actor, Phase};
use super::events::PoolEvent;
use crate::error::ConfigError;

impl Actor {
    /// Retires the newest idle workers first until the live count meets what
    /// the pool wants (its target, and a rolling restart's surge). Only workers serving now are retired: one still starting counts
    /// towards the target, but is left to its readiness (`on_ready` shrinks
    /// again), so that a scale down never retires ready workers and keeps
    /// ones that may never start.
    pub(crate) fn shrink_to_target(&mut self) {
        let wanted = self.wanted();
        while self.live_count() > wanted && self.respawns_pending > 0 {
            self.respawns_pending -= 1;
        }
        let staying = self
            .workers
            .values()
            .filter(|w| w.life.is_staying())
            .count();
        let mut excess = staying.saturating_sub(wanted);
        let mut order: Vec<(bool, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.life.is_staying())
            .map(|(num, w)| (!w.lane.book().is_empty(), *num))
            .collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        for (_, num) in order {
            if excess == 0 {
                break;
            }
            if let Some(w) = self.workers.get(&num) {
                let name = w.name().to_owned();
                self.shared.emit(|| PoolEvent::WorkerRecycled {
                    worker: name,
                    reason: "scaled down".to_owned(),
                });
            }
            self.release_worker(num);
            excess -= 1;
        }
    }

    /// Sets the target size within `min_workers..=max_workers`.
    pub(crate) fn scale_to(&mut self, target: usize) -> Result<usize, ConfigError> {
        self.config.check_size(target)?;
        if self.phase != Phase::Running {
            return Err(ConfigError::new("pool_size", "the pool is not running"));
        }
        let old = self.target;
        self.target = target;
        self.shared.stats.target_size.store(target as u64, Relaxed);
        if target > old {
            // After failed starts or idle crashes, new workers wait out the
            // restart backoff as replacements do (the breaker's cap once it
            // is open): growing is no way around it.
            let delay = self.restart_delay();
            for _ in 0..(self.wanted().saturating_sub(self.live_count())) {
                if !self.start_one_after(delay) {
                    break;
                }
            }
            self.shared.emit(|| PoolEvent::PoolScaledUp {
                count: target - old,
                new_size: target,
            });
        } else if target < old {
            self.shrink_to_target();
            self.shared.emit(|| PoolEvent::PoolScaledDown {
                count: old - target,
                new_size: target,
            });
        }
        Ok(target)
    }
}
