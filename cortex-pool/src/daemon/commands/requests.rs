//! What the clients of the control socket share about their requests: how
//! many lines or ids go in one ([`split`], within [`most_bytes`]), and the
//! daemon's refusal of one ([`Refusal`]).

use crate::daemon::config::Settings;

/// The most bytes of lines or ids one request carries (the daemon's default
/// `max_request_bytes` is 1 MiB)…
pub(super) const REQUEST_BYTES: usize = 256 * 1024;
/// …and the room left in `max_request_bytes` for the request's own framing.
const REQUEST_FRAMING: usize = 256;

/// The most bytes of items a request to the daemon configured by `settings`
/// carries.
pub(super) fn most_bytes(settings: &Settings) -> usize {
    REQUEST_BYTES.min(settings.max_request_bytes.saturating_sub(REQUEST_FRAMING))
}

/// `items` in order, in runs of at most `most` bytes, about (each item
/// counts 8 bytes of framing; a longer item goes alone).
pub(super) fn split<T: AsRef<str>>(items: &[T], most: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let len = item.as_ref().len() + 8;
        if size + len > most && i > start {
            out.push(&items[start..i]);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// An error the daemon answered a request with.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) kind: String,
    pub(super) message: String,
}

impl Refusal {
    /// The daemon's answer in `e`, if it is one.
    pub(super) fn of(e: &std::io::Error) -> Option<&Self> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<Self>())
    }

    /// Whether asking again gets the same answer: all but a daemon with no
    /// room for the connection (`busy`) and a store read that failed
    /// (`store`).
    pub(super) fn is_final(&self) -> bool {
        !matches!(self.kind.as_str(), "busy" | "store")
    }

    /// As an I/O error (of kind `Other`), for the callers that carry one.
    pub(super) fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_line_in_order() {
        let lines: Vec<String> = (0..20_000)
            .map(|i| format!("{{\"type\":\"echo\",\"payload\":{i}}}"))
            .collect();
        let b = split(&lines, REQUEST_BYTES);
        assert!(b.len() > 1);
        assert_eq!(b.iter().map(|s| s.len()).sum::<usize>(), 20_000);
        assert_eq!(b.concat(), lines);
        assert!(split::<String>(&[], REQUEST_BYTES).is_empty());
        // A smaller limit makes more batches, each within it.
        let small = split(&lines, 4096);
        assert!(small.len() > b.len());
        assert!(small
            .iter()
            .all(|batch| batch.iter().map(|l| l.len() + 8).sum::<usize>() <= 4096));
        assert_eq!(small.concat(), lines);
    }

    #[test]
    fn ids_are_split_into_request_sized_chunks_in_order() {
        let ids: Vec<String> = (0..40_000).map(|i| format!("{i:026}")).collect();
        let c = split(&ids, REQUEST_BYTES);
        assert!(c.len() > 1);
        assert_eq!(c.concat(), ids);
        let small = split(&ids, 4096);
        assert!(small.iter().all(|chunk| chunk.len() * (26 + 8) <= 4096));
        assert_eq!(small.concat(), ids);
    }
}
