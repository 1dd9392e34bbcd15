//! Which ids the store may hold ([`KnownIds`]): a Bloom filter of every id
//! accepted, so that the usual acceptance, of an id never seen, skips the
//! look-up in the index of ids (a string B-tree, a sixth of the store's work
//! a task). An id it may hold is looked up as before.

use fastbloom::BloomFilter;
use rusqlite::Connection;

/// Wrong "may hold" answers allowed (each costs one look-up).
const FALSE_POSITIVES: f64 = 0.01;
/// Ids a filter is sized for at least (about 1.2 MB).
#[cfg(not(test))]
const MIN_CAPACITY: usize = 1 << 20;
/// Small in the crate's tests, so that they fill filters and rebuild them.
#[cfg(test)]
const MIN_CAPACITY: usize = 64;

/// A filter of every id with a row or a record: "no" is certain, "maybe" is
/// looked up.
#[derive(Debug)]
pub(crate) struct KnownIds {
    filter: BloomFilter<foldhash::fast::RandomState>,
    /// Ids it was sized for; past them its false positives grow, and it is
    /// built again at twice the size.
    capacity: usize,
    /// Ids put in since it was built that it did not hold already: one put
    /// in again (the records a reload after a failed transaction finds, an
    /// acceptance tried again after one) sets no bit, so it adds nothing to
    /// the false positives, and counting it would build the filter again
    /// before it is full.
    inserted: usize,
}

impl KnownIds {
    /// A filter of every id in `conn`'s rows and in `more`, sized for twice
    /// as many.
    pub(crate) fn load<'a>(
        conn: &Connection,
        more: impl ExactSizeIterator<Item = &'a str>,
    ) -> rusqlite::Result<Self> {
        let rows: i64 = conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
        let ids = usize::try_from(rows)
            .unwrap_or(0)
            .saturating_add(more.len());
        let mut known = Self::sized(ids.saturating_mul(2));
        let mut select = conn.prepare("SELECT id FROM tasks")?;
        let mut ids = select.query([])?;
        while let Some(row) = ids.next()? {
            known.insert(row.get_ref(0)?.as_str()?);
        }
        for id in more {
            known.insert(id);
        }
        Ok(known)
    }

    fn sized(capacity: usize) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        Self {
            filter: BloomFilter::with_false_pos(FALSE_POSITIVES)
                .hasher(foldhash::fast::RandomState::default())
                .expected_items(capacity),
            capacity,
            inserted: 0,
        }
    }

    /// Notes that `id` may be held from now on.
    pub(crate) fn insert(&mut self, id: &str) {
        self.insert_hash(self.hash(id));
    }

    /// `false` when no row and no record has `id`.
    pub(crate) fn may_hold(&self, id: &str) -> bool {
        self.filter.contains(id)
    }

    /// `id`'s hash, for [`may_hold_hash`](Self::may_hold_hash) and
    /// [`insert_hash`](Self::insert_hash): an id checked and then put in
    /// is hashed once.
    pub(crate) fn hash(&self, id: &str) -> u64 {
        self.filter.source_hash(id)
    }

    /// [`may_hold`](Self::may_hold) of the id `hash` is of.
    pub(crate) fn may_hold_hash(&self, hash: u64) -> bool {
        self.filter.contains_hash(hash)
    }

    /// [`insert`](Self::insert) of the id `hash` is of.
    pub(crate) fn insert_hash(&mut self, hash: u64) {
        let held_already = self.filter.insert_hash(hash);
        self.inserted += usize::from(!held_already);
    }

    /// Whether it holds more ids than it was sized for.
    pub(crate) fn full(&self) -> bool {
        self.inserted > self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_put_in_is_held_and_most_others_are_not() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tasks (id TEXT); INSERT INTO tasks VALUES ('row-1'), ('row-2');",
        )
        .unwrap();
        let mut known = KnownIds::load(&conn, ["record-1"].into_iter()).unwrap();
        // Three ids in it already: two rows and a record.
        for i in 0..MIN_CAPACITY - 3 {
            known.insert(&format!("new-{i}"));
        }
        assert!(!known.full(), "sized for {MIN_CAPACITY} ids at least");
        for id in ["row-1", "row-2", "record-1", "new-0", "new-60"] {
            assert!(known.may_hold(id), "{id}");
        }
        let wrong = (0..10_000)
            .filter(|i| known.may_hold(&format!("never-{i}")))
            .count();
        assert!(wrong < 500, "{wrong} false positives in 10 000");
        for i in 0..10 {
            known.insert(&format!("more-{i}"));
        }
        assert!(known.full(), "past its size");
    }

    /// An id put in again counts once: it changes nothing in the filter.
    #[test]
    fn an_id_put_in_again_is_counted_once() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE tasks (id TEXT)").unwrap();
        let mut known = KnownIds::load(&conn, std::iter::empty()).unwrap();
        for _ in 0..2 * MIN_CAPACITY {
            known.insert("same");
        }
        assert_eq!(known.inserted, 1);
        assert!(!known.full());
    }

    /// A reload after a failed transaction keeps the filter and puts in the
    /// ids of the records it replays, which it holds already: the count stays
    /// that of the ids accepted, and the filter is not built again early.
    #[test]
    fn a_reload_that_keeps_the_filter_counts_no_id_twice() {
        use crate::overlay::Overlay;
        use crate::test_support::{empty_overlay, new_task};
        let (conn, mut overlay) = empty_overlay();
        let accepted = MIN_CAPACITY * 2 / 3;
        let tasks = (0..accepted).map(|i| new_task(&format!("t{i}"))).collect();
        overlay.accept(&conn, tasks, 1, None).unwrap();
        let (row, entries) = overlay.take_pending().unwrap();
        crate::journal::append(&conn, row, &entries).unwrap();
        let before = overlay.take_known().unwrap();
        let counted = before.inserted;
        assert!(counted > 0 && counted <= accepted, "{counted}");
        let mut reloaded = Overlay::load(&conn, Some(before)).unwrap();
        let after = reloaded.take_known().unwrap();
        assert_eq!(after.inserted, counted, "the replayed ids counted again");
        assert!(!after.full());
    }
}
