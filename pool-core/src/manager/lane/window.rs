//! The room in a worker's window: its first `worker_concurrency` unanswered
//! tasks run, and up to `prefetch` more wait behind them while those waiting
//! weigh less than `prefetch_bytes` (see
//! [`PoolConfig::prefetch_bytes`](crate::PoolConfig::prefetch_bytes)).

use crate::PoolConfig;

/// The bounds of every worker's window, from the pool's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Tasks a worker runs at once.
    concurrency: usize,
    /// Tasks it holds at most: `concurrency` plus `prefetch`.
    tasks: usize,
    /// One more task waits only while those waiting weigh less (payload bytes).
    prefetch_bytes: usize,
}

impl Window {
    /// The window `config` gives each worker.
    pub(crate) fn of(config: &PoolConfig) -> Self {
        Self {
            concurrency: config.worker_concurrency as usize,
            tasks: config.worker_window() as usize,
            prefetch_bytes: config.prefetch_bytes,
        }
    }

    /// Tasks a worker runs at once.
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Tasks a worker holds at most.
    pub(crate) fn tasks(&self) -> usize {
        self.tasks
    }

    /// Whether a worker that holds `held` tasks, of which those waiting for a
    /// run slot weigh `waiting_bytes`, takes one more: always into a free run
    /// slot, else into the window while it has room by count and by weight.
    pub(crate) fn takes_more(&self, held: usize, waiting_bytes: usize) -> bool {
        held < self.concurrency || (held < self.tasks && waiting_bytes < self.prefetch_bytes)
    }

    /// A worker's window as tasks join it, from what it holds now.
    pub(crate) fn filling(self, held: usize, waiting_bytes: usize) -> Filling {
        Filling {
            window: self,
            held,
            waiting_bytes,
        }
    }
}

/// A worker's window as a refill fills it: what it holds, counted as each
/// task joins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filling {
    window: Window,
    held: usize,
    waiting_bytes: usize,
}

impl Filling {
    /// Whether it takes one more task ([`Window::takes_more`]).
    pub(crate) fn takes_more(&self) -> bool {
        self.window.takes_more(self.held, self.waiting_bytes)
    }

    /// A task of `payload_bytes` joined: into a run slot, or to wait.
    pub(crate) fn join(&mut self, payload_bytes: usize) {
        if self.held >= self.window.concurrency {
            self.waiting_bytes = self.waiting_bytes.saturating_add(payload_bytes);
        }
        self.held += 1;
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
        let mut filling = window.filling(0, 0);
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

    #[test]
    fn prefetch_zero_writes_nothing_beyond_the_run_slots() {
        assert_eq!(fills_with(window(3, 0, usize::MAX), 1), 3);
        assert!(!window(3, 0, usize::MAX).takes_more(3, 0));
    }
}
