//! The attempts bucket's keys: the one a message's count is kept under
//! ([`key`]), and which message a key found in the bucket names
//! ([`Counted::parse`]), so that the count sweep can tell the counts of
//! messages gone from the stream.

use crate::message::result_key;

/// The attempts bucket's key of the message of the tasks' stream `stream`
/// at `sequence`, stored there `published_ns` nanoseconds after the Unix
/// epoch. A stream deleted and made again numbers its messages from 1
/// again, while the counts its old messages left may stay in the bucket
/// until the count sweep removes them: keyed by the sequence alone, a new
/// message would take the given-back count of an old one (and run more
/// attempts than it may). When the message was stored tells them apart,
/// and every daemon reads it from the message itself.
pub(crate) fn key(stream: &str, sequence: u64, published_ns: i128) -> String {
    result_key(&format!("{stream}.{sequence}.{published_ns}"))
}

/// The message of the tasks' stream a key of the attempts bucket names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    /// Its stream sequence.
    pub(crate) sequence: u64,
    /// When it was stored, in nanoseconds since the Unix epoch; `None` for a
    /// key written by a version that keyed counts `STREAM.SEQUENCE`.
    pub(crate) published_ns: Option<i128>,
}

impl Counted {
    /// The message of stream `stream` that `key` names ([`key`], or an
    /// older daemon's `STREAM.SEQUENCE`); `None` for the key of another
    /// stream, or one that no daemon writes.
    pub(crate) fn parse(key: &str, stream: &str) -> Option<Self> {
        let text = match key.strip_prefix('=') {
            Some(hex) => unhex(hex)?,
            None => key.to_owned(),
        };
        let rest = text.strip_prefix(stream)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let sequence = tokens.next()?.parse().ok()?;
        let published_ns = match tokens.next() {
            Some(published) => Some(published.parse().ok()?),
            None => None,
        };
        if tokens.next().is_some() {
            return None;
        }
        Some(Self {
            sequence,
            published_ns,
        })
    }

    /// Whether the message the stream holds at the counted sequence, stored
    /// `stored_ns` nanoseconds after the Unix epoch (`None`: it holds none),
    /// is the one counted. A stream made again numbers its messages anew,
    /// so a message at the sequence stored at another time is another
    /// message (a key without the time, an older daemon's, takes any).
    pub(crate) fn is_held_as(self, stored_ns: Option<i128>) -> bool {
        match (stored_ns, self.published_ns) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(stored), Some(published)) => stored == published,
        }
    }
}

/// The text whose bytes `hex` spells in hex, two digits a byte.
fn unhex(hex: &str) -> Option<String> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_stream_the_sequence_and_when_the_message_was_stored() {
        let published = 1_733_000_000_123_456_789;
        assert_eq!(
            key("CORTEX_TASKS", 42, published),
            "CORTEX_TASKS.42.1733000000123456789"
        );
        assert_ne!(
            key("CORTEX_TASKS", 42, published),
            key("CORTEX_TASKS", 42, published + 1),
            "a message of a stream made again counts afresh"
        );
    }

    #[test]
    fn a_key_names_the_message_it_was_made_for() {
        let published = 1_733_000_000_123_456_789;
        let counted = Counted {
            sequence: 42,
            published_ns: Some(published),
        };
        let made = key("CORTEX_TASKS", 42, published);
        assert_eq!(Counted::parse(&made, "CORTEX_TASKS"), Some(counted));
        // A stream name that is no valid key spells the whole key in hex.
        let odd = key("TASKS#1", 7, -5);
        assert!(odd.starts_with('='), "{odd}");
        let parsed = Counted::parse(&odd, "TASKS#1");
        assert_eq!(
            parsed,
            Some(Counted {
                sequence: 7,
                published_ns: Some(-5)
            })
        );
        let legacy = Counted::parse("CORTEX_TASKS.42", "CORTEX_TASKS");
        assert_eq!(
            legacy,
            Some(Counted {
                sequence: 42,
                published_ns: None
            })
        );
    }

    #[test]
    fn keys_of_other_streams_or_no_count_name_no_message() {
        let other = key("CORTEX_TASKS_B", 42, 1);
        assert_eq!(Counted::parse(&other, "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("CORTEX_TASKS", "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("CORTEX_TASKS.x", "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("CORTEX_TASKS.1.x", "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("CORTEX_TASKS.1.2.3", "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("=zz", "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("=4", "CORTEX_TASKS"), None);
        assert_eq!(Counted::parse("=ff", "CORTEX_TASKS"), None, "not UTF-8");
    }

    #[test]
    fn a_count_is_of_the_message_held_at_its_sequence_and_time() {
        let counted = Counted {
            sequence: 3,
            published_ns: Some(10),
        };
        assert!(counted.is_held_as(Some(10)));
        assert!(!counted.is_held_as(Some(11)), "a stream made again");
        assert!(!counted.is_held_as(None), "gone");
        let legacy = Counted {
            published_ns: None,
            ..counted
        };
        assert!(legacy.is_held_as(Some(11)));
        assert!(!legacy.is_held_as(None));
    }
}
