//! [`PriorityQueue`]: 101 FIFO levels with O(1) push and pop.

use std::collections::VecDeque;

use crate::task::PRIORITY_LOWEST;

const LEVELS: usize = PRIORITY_LOWEST as usize + 1;

/// A coarse range of priorities, for reporting queue depth at a glance (the same
/// thirds the NATS queue uses for its subjects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriorityBand {
    /// Priorities 0–33 (the default, 10, is here).
    High,
    /// Priorities 34–66.
    Normal,
    /// Priorities 67–100.
    Low,
}

impl PriorityBand {
    /// Every band, highest first (the order of [`PriorityQueue::depth_by_band`]).
    pub const ALL: [PriorityBand; 3] = [Self::High, Self::Normal, Self::Low];

    /// The band `priority` falls in (above 100 counts as 100).
    pub fn of(priority: u8) -> Self {
        match priority {
            0..=33 => Self::High,
            34..=66 => Self::Normal,
            _ => Self::Low,
        }
    }

    /// Its name in metrics: `high`, `normal` or `low`.
    pub fn name(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Its place in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A queue of items by priority, 0 (first) … 100 (last), strictly FIFO within a
/// priority.
///
/// Each level is a `VecDeque`; a 128-bit mask of non-empty levels makes `pop` find
/// the first level with one `trailing_zeros`, so push and pop are O(1) whatever the
/// depth. FIFO order within a level is the order of `push` calls (a monotonic
/// sequence), never a timestamp.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    levels: Vec<VecDeque<T>>,
    non_empty: u128,
    len: usize,
    bands: [usize; 3],
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PriorityQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            levels: (0..LEVELS).map(|_| VecDeque::new()).collect(),
            non_empty: 0,
            len: 0,
            bands: [0; 3],
        }
    }

    /// Adds `item` behind every item of the same priority. Priorities above 100 are
    /// treated as 100.
    #[inline]
    pub fn push(&mut self, priority: u8, item: T) {
        let level = usize::from(priority.min(PRIORITY_LOWEST));
        self.levels[level].push_back(item);
        self.non_empty |= 1 << level;
        self.len += 1;
        self.bands[PriorityBand::of(priority).index()] += 1;
    }

    /// Adds `item` in front of every item of the same priority (for work that was
    /// taken out and must go back where it was).
    pub fn push_front(&mut self, priority: u8, item: T) {
        let level = usize::from(priority.min(PRIORITY_LOWEST));
        self.levels[level].push_front(item);
        self.non_empty |= 1 << level;
        self.len += 1;
        self.bands[PriorityBand::of(priority).index()] += 1;
    }

    /// Removes and returns the first item of the highest priority.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let level = self.first_level()?;
        let item = self.levels[level].pop_front();
        if self.levels[level].is_empty() {
            self.non_empty &= !(1 << level);
        }
        if item.is_some() {
            self.len -= 1;
            self.bands[PriorityBand::of(level as u8).index()] -= 1;
        }
        item
    }

    /// The item `pop` would return.
    #[inline]
    pub fn peek(&self) -> Option<&T> {
        self.levels[self.first_level()?].front()
    }

    /// The priority of the item `pop` would return.
    pub fn head_priority(&self) -> Option<u8> {
        self.first_level().map(|level| level as u8)
    }

    /// Removes the first item matching `pred` (a linear scan: for rare operations
    /// such as cancellation).
    pub fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        for level in 0..LEVELS {
            if self.non_empty & (1 << level) == 0 {
                continue;
            }
            let queue = &mut self.levels[level];
            if let Some(pos) = queue.iter().position(&mut pred) {
                let item = queue.remove(pos);
                if queue.is_empty() {
                    self.non_empty &= !(1 << level);
                }
                self.len -= 1;
                self.bands[PriorityBand::of(level as u8).index()] -= 1;
                return item;
            }
        }
        None
    }

    /// Removes every item, highest priority first.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.non_empty = 0;
        self.len = 0;
        self.bands = [0; 3];
        self.levels.iter_mut().flat_map(|level| level.drain(..))
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many items wait at each priority that has any, as `(priority, count)`.
    pub fn depth_by_priority(&self) -> impl Iterator<Item = (u8, usize)> + '_ {
        self.levels
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(p, q)| (p as u8, q.len()))
    }

    /// How many items wait in each band, in [`PriorityBand::ALL`] order. O(1):
    /// kept up to date by every push and pop.
    pub fn depth_by_band(&self) -> [usize; 3] {
        self.bands
    }

    fn first_level(&self) -> Option<usize> {
        (self.non_empty != 0).then(|| self.non_empty.trailing_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_numbers_come_first_and_zero_is_honoured() {
        let mut q = PriorityQueue::new();
        q.push(20, "low");
        q.push(10, "default");
        q.push(0, "highest");
        q.push(100, "lowest");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["highest", "default", "low", "lowest"]);
    }

    #[test]
    fn fifo_within_a_priority() {
        let mut q = PriorityQueue::new();
        for i in 0..1000 {
            q.push(5, i);
        }
        q.push(0, -1);
        assert_eq!(q.pop(), Some(-1));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn push_front_goes_before_its_level_only() {
        let mut q = PriorityQueue::new();
        q.push(1, "a");
        q.push(2, "b");
        q.push_front(2, "c");
        assert_eq!(q.head_priority(), Some(1));
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.head_priority(), Some(2));
        assert_eq!(q.pop(), Some("c"));
        assert_eq!(q.pop(), Some("b"));
    }

    #[test]
    fn remove_first_keeps_counts_and_order() {
        let mut q = PriorityQueue::new();
        q.push(3, 1);
        q.push(3, 2);
        q.push(3, 3);
        assert_eq!(q.remove_first(|x| *x == 2), Some(2));
        assert_eq!(q.remove_first(|x| *x == 9), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.depth_by_priority().collect::<Vec<_>>(), [(3, 2)]);
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn band_depths_follow_every_push_and_pop() {
        let mut q = PriorityQueue::new();
        for (priority, item) in [
            (0, 'a'),
            (33, 'b'),
            (34, 'c'),
            (66, 'd'),
            (67, 'e'),
            (200, 'f'),
        ] {
            q.push(priority, item);
        }
        q.push_front(34, 'g');
        assert_eq!(q.depth_by_band(), [2, 3, 2]);
        assert_eq!(q.pop(), Some('a'));
        assert_eq!(q.remove_first(|x| *x == 'e'), Some('e'));
        assert_eq!(q.depth_by_band(), [1, 3, 1]);
        assert_eq!(PriorityBand::of(200), PriorityBand::Low);
        assert_eq!(
            PriorityBand::ALL.map(PriorityBand::name),
            ["high", "normal", "low"]
        );
        let _ = q.drain().count();
        assert_eq!(q.depth_by_band(), [0, 0, 0]);
    }

    #[test]
    fn drain_empties_in_priority_order() {
        let mut q = PriorityQueue::new();
        q.push(9, 'b');
        q.push(1, 'a');
        assert_eq!(q.drain().collect::<String>(), "ab");
        assert!(q.is_empty());
        assert_eq!(q.peek(), None);
    }
}
