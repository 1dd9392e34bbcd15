//! Generated task ids: ULIDs (48-bit Unix ms, then 80 bits that count up within
//! a millisecond from a random start), 26 Crockford base-32 characters, so ids
//! sort by the time they were made.

use std::sync::Mutex;

use foldhash::HashSet;

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
    let time = last.0;
    drop(last);
    spell(time, random)
}

/// The id of a 48-bit time and an 80-bit random part.
fn spell(time: u64, random: u128) -> String {
    // 26 digits of five bits: the time's 48 bits (10 digits, the first with
    // three), then the random part's 80 (16 digits), each half of it in a u64.
    let mut id = String::with_capacity(26);
    let mut push = |value: u64, digits: u32| {
        for at in (0..digits).rev() {
            id.push(char::from(ALPHABET[((value >> (at * 5)) & 31) as usize]));
        }
    };
    push(time, 10);
    push((random >> 40) as u64, 8);
    push((random & ((1 << 40) - 1)) as u64, 8);
    id
}

/// `ids` without repeats, each where it is first named: a wait answers each
/// task once (the client's request and the daemon's answer both).
pub(crate) fn first_of_each(mut ids: Vec<String>) -> Vec<String> {
    let first: Vec<bool> = {
        let mut seen: HashSet<&str> = HashSet::default();
        seen.reserve(ids.len());
        ids.iter().map(|id| seen.insert(id.as_str())).collect()
    };
    let mut first = first.into_iter();
    ids.retain(|_| first.next().unwrap_or(true));
    ids
}

#[cfg(test)]
mod tests {
    /// Each half of the random part is spelled as the whole 128 bits would
    /// be, five bits at a time from the top, across the halves' boundary too.
    #[test]
    fn an_id_spells_its_128_bits_five_at_a_time() {
        let whole = |time: u64, random: u128| -> String {
            let value = u128::from(time) << 80 | random;
            (0..26)
                .rev()
                .map(|at| char::from(super::ALPHABET[((value >> (at * 5)) & 31) as usize]))
                .collect()
        };
        let top = (1u128 << 80) - 1;
        for (time, random) in [
            (0, 0),
            ((1 << 48) - 1, top),
            (1_733_000_000_000, 1 << 40),
            (1_733_000_000_000, (1 << 40) - 1),
            (1_733_000_000_000, 0x5555_5555_5555_5555_5555 & top),
            (42, 0xa5a5_0000_ffff_1234_8001),
        ] {
            assert_eq!(
                super::spell(time, random),
                whole(time, random),
                "{time} {random:#x}"
            );
        }
    }

    /// The digits are the ULID's 128 bits, five at a time from the top.
    #[test]
    fn an_id_spells_its_time_then_its_random_part_in_crockford_base_32() {
        let before = task_source::now_ms();
        let id = super::generate();
        let value = id.bytes().fold(0u128, |v, b| {
            let digit = super::ALPHABET
                .iter()
                .position(|&a| a == b)
                .expect("an alphabet digit");
            v << 5 | digit as u128
        });
        let time = (value >> 80) as u64;
        assert!(
            time >= before && time <= task_source::now_ms(),
            "{id}: {time}"
        );
    }

    #[test]
    fn ids_are_unique_sorted_and_26_characters() {
        let ids: Vec<String> = (0..10_000).map(|_| super::generate()).collect();
        assert!(ids.iter().all(|id| id.len() == 26));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort by creation");
    }

    #[test]
    fn a_wait_names_each_id_once_where_it_is_first_named() {
        let ids: Vec<String> = (0..40_000).map(|i| format!("{i:026}")).collect();
        let twice: Vec<String> = ids.iter().chain(ids.iter().rev()).cloned().collect();
        assert_eq!(super::first_of_each(twice), ids);
    }
}
