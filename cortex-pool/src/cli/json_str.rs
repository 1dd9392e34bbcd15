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

/// Whether a byte of `word` is zero.
const fn has_zero(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether a byte of `word` is below 0x20, a quote or a backslash.
const fn needs_escape(word: u64) -> bool {
    // A byte below 0x20 is one whose top three bits are clear: `b & 0xe0 == 0`.
    has_zero(word & splat(0xe0)) || has_zero(word ^ splat(b'"')) || has_zero(word ^ splat(b'\\'))
}

/// Whether JSON must escape a byte of `s`.
fn any_escape(s: &[u8]) -> bool {
    let mut words = s.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if needs_escape(u64::from_ne_bytes(word)) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `s` as a JSON string, exactly as serde_json writes it.
pub(crate) fn push(json: &mut Vec<u8>, s: &str) {
    if any_escape(s.as_bytes()) {
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
                assert!(any_escape(s.as_bytes()), "{special:#x} at {at}");
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
            assert!(!any_escape(s.as_bytes()), "{s:?}");
            assert_eq!(ours(s), serde(s), "{s:?}");
        }
        let long = "y".repeat(1000);
        assert_eq!(ours(&long), serde(&long));
    }

    #[test]
    fn bytes_just_above_the_escaped_ones_are_not_escaped() {
        for b in [0x20u8, b'!', b'#', b'[', b']', 0x7f] {
            let s = String::from_utf8(vec![b; 11]).expect("ASCII");
            assert!(!any_escape(s.as_bytes()), "{b:#x}");
            assert_eq!(ours(&s), serde(&s));
        }
    }
}
