//! JSON strings for `run`'s output lines, checked eight bytes at a time.
//!
//! Most strings `run` writes (ids, worker names, echoed payloads) need no
//! escape. serde_json looks every byte up on its own; this looks at a word at a
//! time for a byte that JSON must escape (`"`, `\` or one below 0x20) and copies
//! the string whole when there is none. A string that has one is left to
//! serde_json, so every line is byte for byte what serde_json writes.

/// Each byte of a word set to `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}

const ONES: u64 = splat(0x01);
const HIGHS: u64 = splat(0x80);

/// The high bit of each zero byte of `word` set, and no bit below the
/// first of them (a byte above a zero one may be marked too, by the borrow).
const fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// Marks the bytes of `word` below 0x20, quotes and backslashes: the lowest
/// mark is the first such byte.
const fn specials(word: u64) -> u64 {
    // A byte below 0x20 is one whose top three bits are clear: `b & 0xe0 == 0`.
    zero_bytes(word & splat(0xe0))
        | zero_bytes(word ^ splat(b'"'))
        | zero_bytes(word ^ splat(b'\\'))
}

/// How many bytes at the start of `s` need no escape in a JSON string (none
/// of them a quote, a backslash or below 0x20): all of `s` when none does.
/// Eight bytes are looked at together, the last few padded with spaces.
pub(crate) fn plain_len(s: &[u8]) -> usize {
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if let Some(first) = first_special(word) {
            return at + first;
        }
        at += 8;
    }
    let tail = words.remainder();
    let mut word = [b' '; 8];
    word[..tail.len()].copy_from_slice(tail);
    first_special(word).map_or(s.len(), |first| at + first)
}

/// The place of the first byte of `word` that JSON escapes, if any.
fn first_special(word: [u8; 8]) -> Option<usize> {
    // Little-endian: the first byte is the lowest.
    let marks = specials(u64::from_le_bytes(word));
    (marks != 0).then(|| (marks.trailing_zeros() / 8) as usize)
}

/// Appends `s` as a JSON string, exactly as serde_json writes it.
pub(crate) fn push(json: &mut Vec<u8>, s: &str) {
    if plain_len(s.as_bytes()) < s.len() {
        // Writing into a `Vec` cannot fail.
        let _ = serde::Serialize::serialize(s, &mut serde_json::Serializer::new(json));
        return;
    }
    json.reserve(s.len() + 2);
    json.push(b'"');
    json.extend_from_slice(s.as_bytes());
    json.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).expect("a str serializes")
    }

    fn ours(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push(&mut out, s);
        out
    }

    #[test]
    fn every_byte_that_needs_an_escape_is_found_at_every_place_in_a_word() {
        let plain = "abcdefghijklmnopqrstuvwxyz0123";
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..plain.len() {
                let mut bytes = plain.as_bytes().to_vec();
                bytes[at] = special;
                let s = String::from_utf8(bytes).expect("ASCII");
                assert_eq!(plain_len(s.as_bytes()), at, "{special:#x} at {at}");
                assert_eq!(ours(&s), serde(&s), "{special:#x} at {at}");
            }
        }
    }

    #[test]
    fn strings_without_escapes_are_copied_as_serde_json_writes_them() {
        let samples = [
            "",
            "x",
            "worker-0",
            "a string of exactly sixteen bytes",
            "grüße, 日本語, emoji 🎉, DEL \u{7f}, slash /",
        ];
        for s in samples {
            assert_eq!(plain_len(s.as_bytes()), s.len(), "{s:?}");
            assert_eq!(ours(s), serde(s), "{s:?}");
        }
        let long = "y".repeat(1000);
        assert_eq!(ours(&long), serde(&long));
    }

    #[test]
    fn bytes_just_above_the_escaped_ones_are_not_escaped() {
        for b in [0x20u8, b'!', b'#', b'[', b']', 0x7f] {
            let s = String::from_utf8(vec![b; 11]).expect("ASCII");
            assert_eq!(plain_len(s.as_bytes()), s.len(), "{b:#x}");
            assert_eq!(ours(&s), serde(&s));
        }
    }
}
