//! The outcomes the feeder gathered and the source has not recorded yet.
//!
//! They go to the source in bounded calls ([`first_call`]). A call the
//! source could not record at all (a store that cannot write, a queue whose
//! connection dropped) is kept whole and tried again at the feeder's next
//! round. A source whose settlements are recorded apart from each other (a
//! broker: one message each) may refuse some of a call and record the
//! others ([`TaskSource::settle_each`]): the others go on to their waiters at
//! once, and the refused ones are set aside and tried again after a pause
//! that doubles with each refusal ([`RETRY_FIRST`] … [`RETRY_MOST`]). So one
//! settlement the source keeps refusing (a dead letter whose subject the
//! broker denies) holds up neither the outcomes gathered after it nor, while
//! few are set aside, the claims, and is not tried again in a tight loop.
//!
//! [`TaskSource::settle_each`]: task_source::TaskSource::settle_each

use std::time::Duration;

use task_source::{ErrorInfo, Outcome, Settlement, SourceError};
use tokio::time::Instant;

use crate::daemon::state::Daemon;

/// Settlements recorded in one call at most, by count and by the bytes of
/// their ids, lines and errors: a store writes one call's changes as one
/// journal row, and SQLite refuses a value past 1 GB, so a backlog of large
/// results must not be retried as one call that can never be written.
const SETTLE_AT_ONCE: usize = 4096;
const SETTLE_BYTES: usize = 32 << 20;

/// The pause after a call the source could not record at all.
const FAILED_CALL_PAUSE: Duration = Duration::from_millis(200);

/// The pause before refused settlements are first tried again; it doubles
/// with each refusal, up to [`RETRY_MOST`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MOST: Duration = Duration::from_secs(30);

/// The outcomes not recorded yet: those not tried or whose whole call
/// failed, in the order they came, and those the source refused on their
/// own, with when they are tried next.
#[derive(Debug, Default)]
pub(crate) struct Unsaved {
    waiting: Vec<Settlement>,
    refused: Vec<Settlement>,
    retry: Option<Retry>,
}

/// What the feeder's last try left unrecorded, for `daemon status` and the
/// metrics: written by the feeder alone, both numbers at once.
#[derive(Debug, Default)]
pub(crate) struct Unrecorded(std::sync::Mutex<Outcomes>);

/// Outcomes left unrecorded, and of them those refused one by one: the
/// `outcomes` object of `status` and `metrics --json`
/// (`{"unrecorded", "refused"}`), as the daemon writes it and its clients
/// (`daemon status`, `top`) read it (a key an older daemon lacks reads 0).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Outcomes {
    /// Outcomes not recorded yet.
    pub(crate) unrecorded: u64,
    /// Of them, those the source refused on their own (retried apart).
    pub(crate) refused: u64,
}

impl Unrecorded {
    /// The outcomes left unrecorded, and of them those the source refused
    /// on their own.
    pub(crate) fn get(&self) -> Outcomes {
        *self.lock()
    }

    /// As `status` and `metrics --json` show it.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::to_value(self.get()).unwrap_or_default()
    }

    fn publish(&self, unsaved: &Unsaved) {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        *self.lock() = Outcomes {
            unrecorded: count(unsaved.len()),
            refused: count(unsaved.refused.len()),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outcomes> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When the refused settlements are tried next, and the pause after that
/// try should they be refused again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    pause: Duration,
}

impl Retry {
    /// The next try `pause` from now, the pause after it twice as long (at
    /// most [`RETRY_MOST`]).
    fn after(pause: Duration) -> Self {
        Self {
            at: Instant::now() + pause,
            pause: (pause * 2).min(RETRY_MOST),
        }
    }
}

impl Unsaved {
    /// An outcome to record.
    pub(crate) fn push(&mut self, settlement: Settlement) {
        self.waiting.push(settlement);
    }

    /// Outcomes not recorded yet, refused ones included: claims stop while
    /// too many wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len() + self.refused.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.refused.is_empty()
    }

    /// Records everything, however many tries it takes (the daemon drains:
    /// nothing else is left to do, and the service stops the feeder after a
    /// budget). Refused settlements are tried again every
    /// [`FAILED_CALL_PAUSE`], not after their growing pause: a subject
    /// granted meanwhile is seen before the budget runs out.
    pub(crate) async fn save_all(&mut self, daemon: &Daemon) {
        while !self.is_empty() {
            self.save(daemon).await;
            if self.waiting.is_empty() && !self.refused.is_empty() {
                tokio::time::sleep(FAILED_CALL_PAUSE).await;
                self.retry_refused(daemon).await;
                daemon.unrecorded.publish(self);
            }
        }
    }

    /// Records what waits, a bounded call at a time, and hands the final
    /// outcomes of each call to their waiters; then, when their pause is
    /// over, the refused ones. Returns after the first call the source
    /// could not record at all, keeping it and what follows.
    pub(crate) async fn save(&mut self, daemon: &Daemon) {
        self.try_all(daemon).await;
        daemon.unrecorded.publish(self);
    }

    async fn try_all(&mut self, daemon: &Daemon) {
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting = self.record_in_calls(daemon, waiting).await;
        if self.waiting.is_empty() && self.retry.is_some_and(|r| Instant::now() >= r.at) {
            self.retry_refused(daemon).await;
        }
    }

    /// Tries the refused settlements again, a bounded call at a time; the
    /// next pause doubles (one pause for all of them: those refused are
    /// refused for the same reason, as a rule), and ends once none is left.
    async fn retry_refused(&mut self, daemon: &Daemon) {
        let pause = self.retry.map_or(RETRY_FIRST, |r| r.pause);
        let refused = std::mem::take(&mut self.refused);
        let left = self.record_in_calls(daemon, refused).await;
        self.refused.extend(left);
        self.retry = (!self.refused.is_empty()).then(|| Retry::after(pause));
    }

    /// Records `pile` a bounded call at a time ([`first_call`]); returns
    /// what is left, in order, once a call the source recorded none of stops
    /// it (that call first).
    async fn record_in_calls(
        &mut self,
        daemon: &Daemon,
        mut pile: Vec<Settlement>,
    ) -> Vec<Settlement> {
        while !pile.is_empty() {
            let call = first_call(&pile);
            let batch: Vec<Settlement> = if call == pile.len() {
                std::mem::take(&mut pile)
            } else {
                pile.drain(..call).collect()
            };
            if let Err((mut kept, e)) = self.record(daemon, batch).await {
                kept.append(&mut pile);
                let pending = self.len() + kept.len();
                tracing::error!(error = %e, pending, "cannot record task outcomes; will retry");
                tokio::time::sleep(FAILED_CALL_PAUSE).await;
                return kept;
            }
        }
        pile
    }

    /// Records `batch`: its final outcomes go to their waiters, and those the
    /// source refused on their own are set aside (the first refusal arms the
    /// retry). `Err` with the batch and why when the source recorded none of
    /// it.
    async fn record(
        &mut self,
        daemon: &Daemon,
        batch: Vec<Settlement>,
    ) -> Result<(), (Vec<Settlement>, SourceError)> {
        let refusals = match daemon.source.settle_each(batch.clone()).await {
            Ok(refusals) => refusals,
            Err(e) => return Err((batch, e)),
        };
        let recorded = if refusals.is_empty() {
            batch
        } else {
            self.set_aside(batch, refusals)
        };
        // The lines recorded go on to their waiters, moved, not copied.
        daemon
            .waiters
            .settled(recorded.into_iter().filter_map(|s| match s.outcome {
                Outcome::Settled { state, line, .. } => Some((s.id, state, line)),
                Outcome::Retry { .. } | Outcome::Interrupted | Outcome::NotStarted => None,
            }));
        Ok(())
    }

    /// Sets aside the settlements of `batch` the source refused on their own
    /// (`refusals`: their places, with why), the first refusal arming the
    /// retry; returns the others, recorded.
    fn set_aside(
        &mut self,
        batch: Vec<Settlement>,
        refusals: Vec<(usize, SourceError)>,
    ) -> Vec<Settlement> {
        let mut refused = vec![false; batch.len()];
        for (at, e) in refusals {
            match refused.get_mut(at) {
                Some(flag) => {
                    *flag = true;
                    tracing::error!(error = %e, "cannot record a task's outcome; will retry it apart");
                }
                None => tracing::error!(
                    error = %e,
                    at,
                    given = batch.len(),
                    "the task source refused a settlement it was not given (a bug in the source)"
                ),
            }
        }
        if self.retry.is_none() && refused.contains(&true) {
            self.retry = Some(Retry::after(RETRY_FIRST));
        }
        let mut recorded = Vec::with_capacity(batch.len());
        for (settlement, refused_now) in batch.into_iter().zip(refused) {
            if refused_now {
                self.refused.push(settlement);
            } else {
                recorded.push(settlement);
            }
        }
        recorded
    }
}

/// How many of `unsaved`, from the first, go to the source in one call: at
/// least one, within [`SETTLE_AT_ONCE`] and [`SETTLE_BYTES`].
fn first_call(unsaved: &[Settlement]) -> usize {
    let mut bytes = 0;
    for (at, s) in unsaved.iter().take(SETTLE_AT_ONCE).enumerate() {
        bytes += settlement_bytes(s);
        if at > 0 && bytes > SETTLE_BYTES {
            return at;
        }
    }
    unsaved.len().min(SETTLE_AT_ONCE)
}

/// The bytes a settlement carries beyond its fixed fields.
fn settlement_bytes(s: &Settlement) -> usize {
    let error = |e: &ErrorInfo| e.kind.len() + e.message.len();
    s.id.len()
        + match &s.outcome {
            Outcome::Settled { line, error: e, .. } => line.len() + e.as_ref().map_or(0, error),
            Outcome::Retry { error: e, .. } => error(e),
            Outcome::Interrupted | Outcome::NotStarted => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use task_source::TaskState;

    /// A backlog of outcomes goes to the source in calls a store can write:
    /// never past the count or the bytes, never empty, whatever one holds.
    #[test]
    fn a_backlog_is_recorded_in_calls_within_the_bounds() {
        let settled = |line_bytes: usize| Settlement {
            id: "t".to_owned(),
            attempt: 1,
            outcome: Outcome::Settled {
                state: TaskState::Ok,
                line: "x".repeat(line_bytes),
                error: None,
            },
        };
        assert_eq!(first_call(&[]), 0);
        let small: Vec<Settlement> = (0..SETTLE_AT_ONCE + 10).map(|_| settled(10)).collect();
        assert_eq!(first_call(&small), SETTLE_AT_ONCE);
        assert_eq!(first_call(&small[..10]), 10);
        let third: Vec<Settlement> = (0..5).map(|_| settled(SETTLE_BYTES / 3)).collect();
        assert_eq!(first_call(&third), 2, "a third is too many: the ids count");
        let huge = [settled(SETTLE_BYTES + 1), settled(1)];
        assert_eq!(first_call(&huge), 1, "one past the bytes still goes alone");
        assert_eq!(first_call(&huge[1..]), 1);
    }
}
