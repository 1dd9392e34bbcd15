//! The room in a worker's window: its first `worker_concurrency` unanswered
//! tasks run, and up to `prefetch` more wait behind them, as many as the
//! worker runs in a few milliseconds at its pace ([`pace`](super::pace)),
//! while those waiting weigh less than `prefetch_bytes` (see
//! [`PoolConfig::prefetch_bytes`](crate::PoolConfig::prefetch_bytes)).

use super::pace::Pace;
use crate::PoolConfig;

/// The bounds of a worker's window: from the pool's configuration
/// ([`Window::of`]), and for one worker at its pace ([`Window::paced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Tasks a worker runs at once.
    concurrency: usize,
    /// Tasks that may wait beyond them: `prefetch` in the pool's window, as
    /// many as the worker's pace allows in a paced one.
    prefetch: usize,
    /// One more task waits only while those waiting weigh less (payload bytes).
    prefetch_bytes: usize,
}

impl Window {
    /// The window `config` gives each worker at most.
    pub(crate) fn of(config: &PoolConfig) -> Self {
        Self {
            concurrency: config.worker_concurrency as usize,
            prefetch: config.prefetch as usize,
            prefetch_bytes: config.prefetch_bytes,
        }
    }

    /// This window for a worker at `pace`: as many tasks may wait as it gets
    /// through in [`PREFETCH_SPAN`](super::pace::PREFETCH_SPAN), within
    /// `prefetch`.
    pub(crate) fn paced(self, pace: &Pace) -> Self {
        Self {
            prefetch: pace.prefetch(self.prefetch),
            ..self
        }
    }

    /// Tasks a worker holds at most: its run slots and its prefetch.
    fn tasks(&self) -> usize {
        self.concurrency.saturating_add(self.prefetch)
    }

    /// Tasks a worker runs at once.
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Whether a worker that holds `held` tasks, of which those waiting for a
    /// run slot weigh `waiting_bytes`, takes one more: always into a free run
    /// slot, else into the window while it has room by count and by weight.
    pub(crate) fn takes_more(&self, held: usize, waiting_bytes: usize) -> bool {
        held < self.concurrency || (held < self.tasks() && waiting_bytes < self.prefetch_bytes)
    }

    /// A worker's window as tasks join it, from what it holds now, while its
    /// link may be given `link_room` more bytes ([`link_ahead`](super::link_ahead)).
    pub(crate) fn filling(self, held: usize, waiting_bytes: usize, link_room: usize) -> Filling {
        Filling {
            window: self,
            held,
            waiting_bytes,
            link_room,
        }
    }
}

/// A worker's window as a refill fills it: what it holds, counted as each
/// task joins, and the bytes its link may still be given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filling {
    window: Window,
    held: usize,
    waiting_bytes: usize,
    link_room: usize,
}

impl Filling {
    /// Whether it takes one more task: the window has room
    /// ([`Window::takes_more`]) and the link does.
    pub(crate) fn takes_more(&self) -> bool {
        self.link_room > 0 && self.window_has_room()
    }

    /// Whether the window has room, and only the link keeps a task out.
    pub(crate) fn waits_for_link(&self) -> bool {
        self.link_room == 0 && self.window_has_room()
    }

    fn window_has_room(&self) -> bool {
        self.window.takes_more(self.held, self.waiting_bytes)
    }

    /// Tasks it may still take, by count (fewer when it fills by weight).
    pub(crate) fn room(&self) -> usize {
        self.window.tasks().saturating_sub(self.held)
    }

    /// A task of `payload_bytes` joined: into a run slot, or to wait.
    pub(crate) fn join(&mut self, payload_bytes: usize) {
        if self.held >= self.window.concurrency {
            self.waiting_bytes = self.waiting_bytes.saturating_add(payload_bytes);
        }
        self.held += 1;
        self.link_room = self.link_room.saturating_sub(payload_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(concurrency: u32, prefetch: u32, prefetch_bytes: usize) -> Window {
        Window::of(&PoolConfig {
            worker_concurrency: concurrency,
            prefetch,
            prefetch_bytes,
            ..PoolConfig::default()
        })
    }

    /// How many tasks of `size` bytes an empty worker takes.
    fn fills_with(window: Window, size: usize) -> usize {
        let mut filling = window.filling(0, 0, usize::MAX);
        let mut taken = 0;
        while filling.takes_more() {
            filling.join(size);
            taken += 1;
        }
        taken
    }

    #[test]
    fn small_tasks_fill_the_window_by_count() {
        assert_eq!(fills_with(window(1, 64, 1 << 20), 64), 65);
        assert_eq!(fills_with(window(4, 8, 1 << 20), 1000), 12);
    }

    #[test]
    fn large_tasks_wait_while_those_waiting_weigh_less_than_the_bound() {
        // One waits (nothing waited before it), the next would exceed it.
        assert_eq!(fills_with(window(1, 64, 1 << 20), 1 << 20), 2);
        assert_eq!(fills_with(window(1, 64, 1 << 20), (1 << 20) + 1), 2);
        // Two of 600 KiB: the first weighs less than 1 MiB, so a second waits.
        assert_eq!(fills_with(window(1, 64, 1 << 20), 600 << 10), 3);
        // A task larger than the bound still waits, alone.
        assert_eq!(fills_with(window(2, 64, 1000), 1 << 20), 3);
    }

    #[test]
    fn run_slots_are_never_bounded_by_weight() {
        assert_eq!(fills_with(window(16, 0, 1), 1 << 20), 16);
        assert_eq!(fills_with(window(16, 4, 1), 1 << 20), 17);
    }

    /// A pace of `task_ms` a task, measured over one interval of work.
    fn pace_of(task_ms: u64) -> Pace {
        let at = |ms: u64| {
            crate::manager::clock::Moment::default() + std::time::Duration::from_millis(ms)
        };
        let mut pace = Pace::default();
        pace.refill_at(at(0), 0, true);
        pace.answered();
        pace.refill_at(at(task_ms), 1, true);
        pace
    }

    #[test]
    fn a_paced_window_holds_what_the_worker_gets_through_in_the_span() {
        let paced = window(2, 64, 1 << 20).paced(&pace_of(100));
        assert_eq!(fills_with(paced, 64), 3, "100 ms tasks: one waits");
        assert_eq!(paced.filling(0, 0, usize::MAX).room(), 3);
        assert_eq!(fills_with(window(2, 64, 1 << 20).paced(&pace_of(1)), 64), 7);
        assert_eq!(
            fills_with(window(2, 64, 1 << 20).paced(&pace_of(0)), 64),
            66
        );
        assert_eq!(
            fills_with(window(2, 64, 1 << 20).paced(&Pace::default()), 64),
            66,
            "within the first fill's bound"
        );
        assert_eq!(fills_with(window(2, 0, 1 << 20).paced(&pace_of(0)), 64), 2);
    }

    #[test]
    fn a_task_joins_while_the_link_has_room_and_one_always_does() {
        let mut filling = window(64, 0, 1 << 20).filling(0, 0, 1 << 20);
        filling.join(600 << 10);
        assert!(filling.takes_more(), "400 KiB of room left");
        filling.join(600 << 10);
        assert!(!filling.takes_more());
        assert!(filling.waits_for_link(), "the window has 62 free run slots");
        let full = window(2, 0, 1 << 20).filling(2, 0, 0);
        assert!(
            !full.waits_for_link(),
            "a full window does not wait for the link"
        );
    }

    #[test]
    fn prefetch_zero_writes_nothing_beyond_the_run_slots() {
        assert_eq!(fills_with(window(3, 0, usize::MAX), 1), 3);
        assert!(!window(3, 0, usize::MAX).takes_more(3, 0));
    }
}
