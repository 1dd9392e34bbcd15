//! The fields of a task line, `{"id", "type", "payload", "priority",
//! "timeout_ms"}`: what `run` reads from its input and the daemon from a
//! submitted line, before each applies its own checks.
//!
//! A plain line is read by a scanner ([`scan`]), which declines anything it
//! does not read exactly as serde_json would; serde_json reads the rest, and
//! names what is wrong with a line that is no task. serde_json took about
//! 1 900 instructions for a 64-byte line (each key and value through its
//! visitors); the scanner a fraction of that.

mod integers;
mod scan;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::input::MAX_DURATION_MS;

/// A task line's fields, borrowed from the line where they need no unescaping.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    /// `id`, when given (and not `null`).
    pub(crate) id: Option<Cow<'a, str>>,
    /// `type`.
    pub(crate) task_type: Cow<'a, str>,
    /// The JSON text of `payload`, when given (and not `null`).
    pub(crate) payload: Option<&'a str>,
    /// `priority`, when given.
    pub(crate) priority: Option<u8>,
    /// `timeout_ms`, when given.
    pub(crate) timeout_ms: Option<u64>,
}

impl Fields<'_> {
    /// Why the payload cannot go to a worker unchanged, `None` when it can:
    /// an integer wider than MessagePack's (serde_json would read it as a
    /// float), named with its column in `line`, the line these fields were
    /// read from.
    pub(crate) fn payload_unfit(&self, line: &str) -> Option<String> {
        let payload = self.payload?;
        if payload.starts_with('"') {
            return None;
        }
        let start = (payload.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
        integers::first_wide(payload).map(|wide| wide.message(start))
    }

    /// Why `priority` or `timeout_ms` is out of range, `None` when neither
    /// is: a `priority` above [`PRIORITY_LOWEST`](pool_core::task::PRIORITY_LOWEST)
    /// (100), a `timeout_ms` of 0 or above [`MAX_DURATION_MS`] (365 days, the
    /// pool's [`MAX_TIMEOUT`](pool_core::task::MAX_TIMEOUT)). The one check
    /// of both for `run`'s input and the daemon's submitted lines.
    pub(crate) fn out_of_range(&self) -> Option<String> {
        if let Some(priority) = self
            .priority
            .filter(|&p| p > pool_core::task::PRIORITY_LOWEST)
        {
            return Some(format!("priority {priority} is out of range 0..=100"));
        }
        match self.timeout_ms? {
            0 => Some("timeout_ms must be greater than zero".to_owned()),
            ms if ms > MAX_DURATION_MS => Some(format!(
                "timeout_ms {ms} is above the maximum {MAX_DURATION_MS} (365 days)"
            )),
            _ => None,
        }
    }
}

/// The line as serde_json reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    task_type: Cow<'a, str>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    priority: Option<u8>,
    timeout_ms: Option<u64>,
}

/// Reads the fields of `line`.
///
/// # Errors
/// serde_json's, for a line that is not a JSON object of these fields (an
/// unknown or repeated key, a missing `type`, a value of the wrong kind).
pub(crate) fn read(line: &str) -> Result<Fields<'_>, serde_json::Error> {
    scan::fields(line).map_or_else(|| by_serde(line), Ok)
}

/// Reads the fields of `line` with serde_json alone. A line that is not an
/// object (an array, which serde would read as the fields in order) is refused.
fn by_serde(line: &str) -> Result<Fields<'_>, serde_json::Error> {
    let first = line
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .chars()
        .next();
    if first.is_some_and(|c| c != '{') {
        return Err(serde::de::Error::custom(
            "a task line must be a JSON object",
        ));
    }
    let raw: Raw<'_> = serde_json::from_str(line)?;
    Ok(Fields {
        id: raw.id,
        task_type: raw.task_type,
        payload: raw.payload.map(RawValue::get),
        priority: raw.priority,
        timeout_ms: raw.timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small seeded generator (xorshift), so every run checks the same lines.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// An array is no task, though serde would read one as the fields in
    /// order; other values are refused as before, with serde's words.
    #[test]
    fn a_line_that_is_not_an_object_is_refused() {
        for line in [r#"["echo","x",null,null,null]"#, "[]", " [1]"] {
            let e = read(line).unwrap_err();
            assert!(
                e.to_string().contains("must be a JSON object"),
                "{line}: {e}"
            );
        }
        assert!(read("null").is_err());
        assert!(read("").is_err());
        assert!(read(r#" {"type":"echo"}"#).is_ok());
    }

    const SPACE: &[&str] = &["", "", "", " ", "\t", "\n ", "\r"];
    const STRINGS: &[&str] = &[
        r#""echo""#,
        r#""""#,
        r#""a b""#,
        r#""grüße 日本""#,
        r#""q\"uote""#,
        r#""back\\slash""#,
        r#""\u0041\n""#,
        r#""\ud83d\ude00""#,
        r#""\ud83d""#,
        r#""\x""#,
        "\"tab\there\"",
        r#""unterminated"#,
    ];
    const NUMBERS: &[&str] = &[
        "0",
        "7",
        "100",
        "101",
        "255",
        "256",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "01",
        "18446744073709551615",
        "18446744073709551616",
        "2.",
        "-",
        "1E+2",
    ];
    const OTHERS: &[&str] = &[
        "null",
        "true",
        "false",
        "nul",
        "[]",
        "{}",
        "[1,[2,{\"a\":null}]]",
    ];

    fn value(rng: &mut Rng, depth: usize) -> String {
        match rng.below(if depth == 0 { 3 } else { 5 }) {
            0 => rng.pick(STRINGS).to_owned(),
            1 => rng.pick(NUMBERS).to_owned(),
            2 => rng.pick(OTHERS).to_owned(),
            3 => {
                let items: Vec<String> = (0..rng.below(4)).map(|_| value(rng, depth - 1)).collect();
                format!("[{}{}]", rng.pick(SPACE), items.join(","))
            }
            _ => {
                let members: Vec<String> = (0..rng.below(4))
                    .map(|_| format!("{}:{}", rng.pick(STRINGS), value(rng, depth - 1)))
                    .collect();
                format!("{{{}}}", members.join(&format!(",{}", rng.pick(SPACE))))
            }
        }
    }

    /// A task line: `type` and some of the other keys in any order, each
    /// mostly with a value of its kind; sometimes a repeated or unknown key,
    /// sometimes one byte dropped, doubled or changed.
    fn line(rng: &mut Rng) -> String {
        const KEYS: &[&str] = &[
            "id",
            "type",
            "payload",
            "priority",
            "timeout_ms",
            "typo",
            "typ\\u0065",
        ];
        let mut keys: Vec<&str> = vec!["type"];
        keys.extend(
            ["id", "payload", "priority", "timeout_ms"]
                .into_iter()
                .filter(|_| rng.below(2) == 0),
        );
        if rng.below(5) == 0 {
            keys.push(rng.pick(KEYS));
        }
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.below(i + 1));
        }
        let members: Vec<String> = keys
            .into_iter()
            .map(|key| {
                let value = match (key, rng.below(8)) {
                    (_, 0) => value(rng, 3),
                    ("id", 1) | ("priority" | "timeout_ms", 1) => "null".to_owned(),
                    ("id" | "type", 2) => rng.pick(STRINGS).to_owned(),
                    ("id" | "type", _) => rng.pick(&STRINGS[..4]).to_owned(),
                    ("priority" | "timeout_ms", 2) => rng.pick(NUMBERS).to_owned(),
                    ("priority" | "timeout_ms", _) => rng.pick(&NUMBERS[..4]).to_owned(),
                    _ => value(rng, 4),
                };
                format!(
                    "{}\"{key}\"{}:{}{value}",
                    rng.pick(SPACE),
                    rng.pick(SPACE),
                    rng.pick(SPACE)
                )
            })
            .collect();
        let mut text = format!(
            "{}{{{}}}{}",
            rng.pick(SPACE),
            members.join(","),
            rng.pick(SPACE)
        );
        if rng.below(4) == 0 {
            let at = rng.below(text.len().max(1));
            if text.is_char_boundary(at) && text.is_char_boundary(at + 1) {
                match rng.below(3) {
                    0 => text.replace_range(at..at + 1, ""),
                    1 => {
                        let byte = text[at..at + 1].to_owned();
                        text.insert_str(at, &byte);
                    }
                    _ => text.replace_range(at..at + 1, rng.pick(&[",", "\"", "}", "\\", "x"])),
                }
            }
        }
        text
    }

    /// Whatever the scanner reads, serde_json reads the same; what it
    /// declines, `read` leaves to serde_json.
    #[test]
    fn the_scanner_reads_what_serde_json_reads_or_declines() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut scanned = 0;
        for _ in 0..40_000 {
            let text = line(&mut rng);
            let serde = by_serde(&text).ok();
            if let Some(fields) = scan::fields(&text) {
                scanned += 1;
                assert_eq!(Some(&fields), serde.as_ref(), "{text}");
            }
            assert_eq!(read(&text).ok(), serde, "{text}");
        }
        assert!(scanned > 10_000, "only {scanned} lines were plain");
    }

    #[test]
    fn a_plain_line_is_scanned_and_an_escaped_one_read_by_serde_json() {
        let plain = r#"{"id":"01J","type":"echo","payload":{"a":[1,2.5,"x"]},"priority":3,"timeout_ms":50}"#;
        let fields = scan::fields(plain).expect("plain");
        assert_eq!(
            fields,
            Fields {
                id: Some("01J".into()),
                task_type: "echo".into(),
                payload: Some(r#"{"a":[1,2.5,"x"]}"#),
                priority: Some(3),
                timeout_ms: Some(50),
            }
        );
        let escaped = r#"{"id":"a\"b","type":"echo"}"#;
        assert_eq!(scan::fields(escaped), None);
        assert_eq!(read(escaped).unwrap().id.as_deref(), Some("a\"b"));
        let null = read(r#"{"type":"t","payload":null,"id":null,"priority":null}"#).unwrap();
        assert_eq!((null.payload, null.id, null.priority), (None, None, None));
        assert!(read(r#"{"type":"t","type":"u"}"#).is_err());
        assert!(read(r#"{"type":"t","x":1}"#).is_err());
        assert!(read(r#"{"id":"t"}"#).is_err());
    }
}
