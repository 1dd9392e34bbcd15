//! A strict scanner of plain task lines. It reads a line only where its
//! reading cannot differ from serde_json's: each key once, keys and the
//! `id` and `type` strings without escapes, `priority` and `timeout_ms` as
//! plain unsigned integers, and a `payload` of any JSON it can check whole
//! (escapes included, except any `\u` escape of a surrogate; exponents and
//! deep nesting excepted).
//! Anything else, it declines.

use std::borrow::Cow;

use super::Fields;
use crate::cli::json_str;
use crate::set_once::set_once;

/// How deep a payload's arrays and objects may nest here (serde_json stops
/// at 128 levels; a deeper payload is left to it).
const PAYLOAD_DEPTH: u32 = 64;

/// The fields of `line`, or `None` when it is not plain.
pub(super) fn fields(line: &str) -> Option<Fields<'_>> {
    let mut at = Cursor { text: line, at: 0 };
    at.space();
    at.eat(b'{')?;
    let mut id = None;
    let mut task_type = None;
    let mut payload = None;
    let mut priority = None;
    let mut timeout_ms = None;
    loop {
        at.space();
        let key = at.plain_string()?;
        at.space();
        at.eat(b':')?;
        at.space();
        match key {
            "id" => set_once(&mut id, at.or_null(Cursor::plain_string)?)?,
            "type" => set_once(&mut task_type, at.plain_string()?)?,
            "payload" => {
                let start = at.at;
                at.skip_value(PAYLOAD_DEPTH)?;
                let text = line.get(start..at.at)?;
                set_once(&mut payload, (text != "null").then_some(text))?;
            }
            "priority" => {
                let n = at.or_null(|c| c.uint().and_then(|n| u8::try_from(n).ok()))?;
                set_once(&mut priority, n)?;
            }
            "timeout_ms" => set_once(&mut timeout_ms, at.or_null(Cursor::uint)?)?,
            _ => return None,
        }
        at.space();
        if at.eat(b',').is_none() {
            at.eat(b'}')?;
            break;
        }
    }
    at.space();
    (at.at == line.len()).then_some(())?;
    Some(Fields {
        id: id.flatten().map(Cow::Borrowed),
        task_type: Cow::Borrowed(task_type?),
        payload: payload.flatten(),
        priority: priority.flatten(),
        timeout_ms: timeout_ms.flatten(),
    })
}

/// A position in the line.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    /// Skips JSON's whitespace.
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// `null` as `Some(None)`, else what `read` reads.
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek() == Some(b'n') {
            self.word("null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    fn word(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A string with no escape in it: its text.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = json_str::plain_len(self.text.as_bytes().get(start..)?);
        self.at = start + len;
        self.eat(b'"')?;
        self.text.get(start..start + len)
    }

    /// `0` or digits not starting with `0`, not followed by a fraction or an
    /// exponent, that fit a `u64`.
    fn uint(&mut self) -> Option<u64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = self.text.get(start..self.at)?;
        let leading_zero = digits.len() > 1 && digits.starts_with('0');
        let more = matches!(self.peek(), Some(b'.' | b'e' | b'E'));
        if digits.is_empty() || leading_zero || more {
            return None;
        }
        digits.parse().ok()
    }

    /// Skips one JSON value, checking it.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'[' => self.skip_items(depth.checked_sub(1)?, b']', Self::skip_value),
            b'{' => self.skip_items(depth.checked_sub(1)?, b'}', |c, depth| {
                c.skip_string()?;
                c.space();
                c.eat(b':')?;
                c.space();
                c.skip_value(depth)
            }),
            b't' => self.word("true"),
            b'f' => self.word("false"),
            b'n' => self.word("null"),
            _ => self.skip_number(),
        }
    }

    /// Skips an array's items or an object's members, each read by `item`.
    fn skip_items(
        &mut self,
        depth: u32,
        close: u8,
        item: impl Fn(&mut Self, u32) -> Option<()>,
    ) -> Option<()> {
        self.at += 1;
        self.space();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self, depth)?;
            self.space();
            if self.eat(b',').is_none() {
                return self.eat(close);
            }
            self.space();
        }
    }

    /// Skips a string, checking its escapes.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.at += json_str::plain_len(self.text.as_bytes().get(self.at..)?);
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'"' => return Some(()),
                b'\\' => self.skip_escape()?,
                0..0x20 => return None,
                _ => {}
            }
        }
    }

    /// Skips the rest of an escape; a `\u` escape of a surrogate is declined
    /// (serde_json pairs them).
    fn skip_escape(&mut self) -> Option<()> {
        let byte = self.peek()?;
        self.at += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let hex = self.text.get(self.at..self.at + 4)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let code = u16::from_str_radix(hex, 16).ok()?;
                self.at += 4;
                (!(0xd800..=0xdfff).contains(&code)).then_some(())
            }
            _ => None,
        }
    }

    /// Skips a number without an exponent: `-`, then `0` or digits not
    /// starting with `0`, then an optional fraction.
    fn skip_number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        let digits = |c: &mut Self| {
            let start = c.at;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.at += 1;
            }
            c.at - start
        };
        let first = self.peek()?;
        let n = digits(self);
        if n == 0 || (first == b'0' && n > 1) {
            return None;
        }
        if self.eat(b'.').is_some() && digits(self) == 0 {
            return None;
        }
        (!matches!(self.peek(), Some(b'e' | b'E'))).then_some(())
    }
}
