//! Integers a payload cannot carry. MessagePack's integers run from -2^63 to
//! 2^64 - 1; serde_json reads a wider integer literal as a float, so a
//! transcoded payload would reach the worker changed
//! (`123456789012345678901234567890` as `1.2345678901234568e29`). Such a
//! payload is refused instead, naming the number and where it is.

/// The digits of the longest integer that always fits (`u64::MAX` has 20,
/// `i64::MIN` 19 after its sign): a literal with fewer is never looked at.
const ALWAYS_FITS: usize = 18;

/// An integer literal in a payload that MessagePack cannot carry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WideInteger<'a> {
    /// The literal, as written.
    pub(crate) literal: &'a str,
    /// Its byte offset in the payload's text.
    pub(crate) at: usize,
}

impl WideInteger<'_> {
    /// Why the payload is refused, its place counted as a column of a line
    /// whose payload starts at byte `payload_start` (serde_json's words: `at
    /// line 1 column N`, 1-based).
    pub(crate) fn message(&self, payload_start: usize) -> String {
        format!(
            "integer {} is outside MessagePack's range (-2^63 to 2^64-1); \
             send it as a string, at line 1 column {}",
            self.literal,
            payload_start + self.at + 1
        )
    }
}

/// The first integer literal in `json` (valid JSON text) outside strings
/// that fits neither an `i64` nor a `u64`; `None` when every one fits.
pub(crate) fn first_wide(json: &str) -> Option<WideInteger<'_>> {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = after_string(bytes, i + 1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && is_number_byte(bytes[i]) {
                    i += 1;
                }
                let literal = &json[start..i];
                if is_wide(literal) {
                    return Some(WideInteger { literal, at: start });
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The index just past the string whose contents start at `i`.
fn after_string(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn is_number_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
}

/// Whether `literal` (a JSON number) is an integer too wide for both `i64`
/// and `u64`. A fraction or an exponent makes it a float, carried as one.
fn is_wide(literal: &str) -> bool {
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    if digits.len() <= ALWAYS_FITS || digits.bytes().any(|b| !b.is_ascii_digit()) {
        return false;
    }
    literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_past_64_bits_are_found_with_their_place() {
        let json = r#"{"a":[1,"18446744073709551616"],"b":18446744073709551616}"#;
        let wide = first_wide(json).unwrap();
        assert_eq!(wide.literal, "18446744073709551616");
        assert_eq!(&json[wide.at..wide.at + 20], "18446744073709551616");
        assert_eq!(
            first_wide("[-9223372036854775809]").unwrap().literal,
            "-9223372036854775809"
        );
        assert_eq!(first_wide("123456789012345678901234567890").unwrap().at, 0);
    }

    #[test]
    fn what_fits_floats_and_strings_are_left_alone() {
        for json in [
            "18446744073709551615",
            "-9223372036854775808",
            "0",
            "-1",
            "1.8446744073709551616e19",
            "123456789012345678901234567890.5",
            r#""123456789012345678901234567890""#,
            r#"{"k\"123456789012345678901234567890":1}"#,
            r#"["\\",1]"#,
        ] {
            assert_eq!(first_wide(json), None, "{json}");
        }
    }

    #[test]
    fn the_message_names_the_number_and_its_column_in_the_line() {
        let wide = first_wide("[1, 99999999999999999999]").unwrap();
        let message = wide.message(10);
        assert!(message.contains("99999999999999999999"), "{message}");
        assert!(message.ends_with("at line 1 column 15"), "{message}");
    }
}
