//! The overlay's records by task id ([`Ids`]).
//!
//! Each slot holds the id's hash and the task's sequence number, 16 bytes: the
//! id itself is its record's, compared there. A table of `String` keys held a
//! copy of every id (an allocation a task) and took twice the memory, and a
//! look-up read the key's bytes from a third place.

use hashbrown::HashTable;

use super::records::Records;
use crate::live::Live;

/// The sequence number of each record's task, by id.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    /// `(hash of the id, sequence number)`.
    table: HashTable<(u64, i64)>,
    hasher: foldhash::fast::RandomState,
}

impl Ids {
    /// `id`'s hash.
    fn hash(&self, id: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, id)
    }

    /// Task `id`'s record in `records`, with its sequence number (the
    /// record the look-up compared the id in).
    pub(crate) fn get<'r>(&self, id: &str, records: &'r Records) -> Option<(i64, &'r Live)> {
        let hash = self.hash(id);
        let mut found = None;
        self.table.find(hash, |&(h, seq)| {
            // The whole hash first: a slot whose hash differs (its tag matched)
            // is passed over without reading its record.
            found = (h == hash)
                .then(|| records.get(seq))
                .flatten()
                .filter(|live| live.task.id == id)
                .map(|live| (seq, live));
            found.is_some()
        })?;
        found
    }

    /// Notes that task `id`'s record is `seq`'s (its id has no record yet).
    pub(crate) fn insert(&mut self, id: &str, seq: i64) {
        let hash = self.hash(id);
        self.table.insert_unique(hash, (hash, seq), |&(h, _)| h);
    }

    /// Forgets task `seq`'s id, `id`.
    pub(crate) fn remove(&mut self, id: &str, seq: i64) {
        let hash = self.hash(id);
        if let Ok(found) = self.table.find_entry(hash, |&(h, s)| h == hash && s == seq) {
            found.remove();
        }
    }

    /// How many ids it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::accepted as record;

    #[test]
    fn an_id_finds_its_records_number_until_it_is_removed() {
        let (mut ids, mut records) = (Ids::default(), Records::default());
        for (seq, id) in [(1, "a"), (2, "b"), (7, "c")] {
            records.insert(seq, record(id));
            ids.insert(id, seq);
        }
        assert_eq!(ids.get("b", &records).map(|(seq, _)| seq), Some(2));
        assert_eq!(ids.get("c", &records).map(|(seq, _)| seq), Some(7));
        assert_eq!(ids.get("d", &records).map(|(seq, _)| seq), None);
        ids.remove("b", 2);
        assert_eq!(ids.get("b", &records).map(|(seq, _)| seq), None);
        assert_eq!(ids.len(), 2);
        // Removing with the wrong number leaves the id.
        ids.remove("a", 9);
        assert_eq!(ids.get("a", &records).map(|(seq, _)| seq), Some(1));
    }
}
