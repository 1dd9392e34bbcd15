//! Workers that died in a row with no task running and no task succeeding
//! between them: the actor counts them (the restart breaker opens after
//! enough), and the lanes read the count, so that a success, which ends the
//! streak, is reported to the actor only while there is a streak to end.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The count of deaths in a row. Written by the actor alone; read by lanes.
#[derive(Debug, Default)]
pub(crate) struct CrashStreak(AtomicU32);

impl CrashStreak {
    /// Deaths in a row so far.
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }

    /// One more death in a row; the new count.
    pub(crate) fn bump(&self) -> u32 {
        let crashes = self.get().saturating_add(1);
        self.0.store(crashes, Relaxed);
        crashes
    }

    /// A task succeeded: the streak ends. Whether there was one.
    pub(crate) fn end(&self) -> bool {
        let was = self.get() > 0;
        if was {
            self.0.store(0, Relaxed);
        }
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_counts_deaths_until_a_success_ends_it() {
        let streak = CrashStreak::default();
        assert!(!streak.end(), "no streak to end");
        assert_eq!((streak.bump(), streak.bump()), (1, 2));
        assert!(streak.end());
        assert_eq!(streak.get(), 0);
    }
}
