//! Which journal rows still hold changes some row of `tasks` lacks
//! ([`UnwrittenRows`]): kept as records change, so a checkpoint learns the
//! oldest without a scan of every entry.

use std::collections::VecDeque;

/// The journal row of each dirty record's oldest unwritten change, counted
/// by row, in the order of the rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct UnwrittenRows(VecDeque<(i64, usize)>);

impl UnwrittenRows {
    /// A record's oldest unwritten change is in `row` from now on.
    pub(super) fn add(&mut self, row: i64) {
        match self.0.binary_search_by_key(&row, |(r, _)| *r) {
            Ok(at) => self.0[at].1 += 1,
            // The usual case: the current row, the last.
            Err(at) => self.0.insert(at, (row, 1)),
        }
    }

    /// A record whose oldest unwritten change was in `row` was written.
    pub(super) fn remove(&mut self, row: i64) {
        match self.0.binary_search_by_key(&row, |(r, _)| *r) {
            Ok(at) => {
                self.0[at].1 -= 1;
                if self.0[at].1 == 0 {
                    self.0.remove(at);
                }
            }
            Err(_) => debug_assert!(false, "no record's oldest change is in row {row}"),
        }
    }

    /// The oldest row some record still needs; `None` when every record is
    /// written.
    pub(super) fn oldest(&self) -> Option<i64> {
        self.0.front().map(|(row, _)| *row)
    }
}

#[cfg(test)]
mod tests {
    use super::UnwrittenRows;

    #[test]
    fn the_oldest_row_is_the_first_still_counted() {
        let mut rows = UnwrittenRows::default();
        assert_eq!(rows.oldest(), None);
        for row in [3, 3, 5, 4] {
            rows.add(row);
        }
        assert_eq!(rows.oldest(), Some(3));
        rows.remove(3);
        assert_eq!(rows.oldest(), Some(3), "one record still needs row 3");
        rows.remove(3);
        assert_eq!(rows.oldest(), Some(4));
        rows.remove(5);
        rows.remove(4);
        assert_eq!(rows.oldest(), None);
    }
}
