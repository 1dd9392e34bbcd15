//! Generated task ids: ULIDs (48-bit Unix ms, then 80 bits that count up within
//! a millisecond from a random start), 26 Crockford base-32 characters, so ids
//! sort by the time they were made.

use std::sync::Mutex;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The last id's time and random part, so ids made in one millisecond still sort.
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// A new, unique, sortable id.
pub(crate) fn generate() -> String {
    let now = task_source::now_ms() & ((1 << 48) - 1);
    let mut last = match LAST.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let random = if now <= last.0 {
        // Same (or an earlier) millisecond: count up from the last id.
        last.1 = (last.1 + 1) & ((1 << 80) - 1);
        last.1
    } else {
        last.0 = now;
        last.1 =
            (u128::from(fastrand::u64(..)) << 16 | u128::from(fastrand::u16(..))) & ((1 << 79) - 1);
        last.1
    };
    let value = u128::from(last.0) << 80 | random;
    drop(last);
    let mut id = [0u8; 26];
    for (at, digit) in id.iter_mut().rev().enumerate() {
        *digit = ALPHABET[((value >> (at * 5)) & 31) as usize];
    }
    // Every byte is one of the alphabet's ASCII digits and capitals: valid
    // UTF-8, borrowed as it is (no byte is replaced).
    String::from_utf8_lossy(&id).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_sorted_and_26_characters() {
        let ids: Vec<String> = (0..10_000).map(|_| super::generate()).collect();
        assert!(ids.iter().all(|id| id.len() == 26));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort by creation");
    }
}
