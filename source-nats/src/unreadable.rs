//! Header blocks the client cannot hand over as a message. The NATS client
//! (async-nats 0.42) parses a delivered message's header block as it reads
//! the connection: one it cannot parse ends the connection (the client
//! reconnects, and the fetch that was delivering it loses its end), and one
//! whose first line carries a status code other than 200 is taken for the
//! server's own status reply (nats-server 2.15 drops a status from a
//! published message's `NATS/1.0` line as it stores it; a server that keeps
//! it delivers such a message). Either way the message never reaches the
//! source, and the server delivers it again every `ack_wait`. The check
//! here follows the client's reading of `HMSG` (`connection.rs`) rule for
//! rule, on the block as the stream stored it, which is what the server
//! delivers.

use std::str::FromStr;

use async_nats::{HeaderName, StatusCode};

/// Why the client cannot hand over a message with a header block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unreadable {
    /// The block is not UTF-8.
    #[error("the header block is not UTF-8")]
    NotUtf8,
    /// The block has no line at all.
    #[error("the header block has no version line")]
    NoVersionLine,
    /// The first line does not begin with `NATS/1.0`.
    #[error("the header version line {0:?} does not begin with NATS/1.0")]
    BadVersion(String),
    /// The version line carries a status that is no status code.
    #[error("the header version line carries {0:?}, which is no status code")]
    BadStatus(String),
    /// The version line carries a status code other than 200: the client
    /// reads the message as the server's status reply, not as a message.
    #[error(
        "the header version line carries the status {0}, so the client takes it for a status reply"
    )]
    Status(u16),
    /// A header line without a colon.
    #[error("the header line {0:?} has no colon")]
    NoColon(String),
    /// A header name with a character a name cannot hold.
    #[error("the header name {0:?} holds a character a header name cannot")]
    BadName(String),
}

/// Why the client cannot hand over a message whose stored header block is
/// `block`; `None` when it can.
pub(crate) fn unreadable(block: &[u8]) -> Option<Unreadable> {
    let Ok(text) = std::str::from_utf8(block) else {
        return Some(Unreadable::NotUtf8);
    };
    let mut lines = text.lines().peekable();
    let Some(version) = lines.next() else {
        return Some(Unreadable::NoVersionLine);
    };
    let Some(suffix) = version.strip_prefix("NATS/1.0").map(str::trim) else {
        return Some(Unreadable::BadVersion(version.to_owned()));
    };
    let status = suffix
        .split_once(' ')
        .map_or(suffix, |(status, _)| status.trim());
    if !status.is_empty() {
        // The client hands over a message whose status is 200 ("OK") only.
        match StatusCode::from_str(status) {
            Ok(StatusCode::OK) => {}
            Ok(code) => return Some(Unreadable::Status(code.as_u16())),
            Err(_) => return Some(Unreadable::BadStatus(status.to_owned())),
        }
    }
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Some(Unreadable::NoColon(line.to_owned()));
        };
        if HeaderName::from_str(name).is_err() {
            return Some(Unreadable::BadName(name.to_owned()));
        }
        // A value may go on over lines that begin with white space.
        while lines
            .next_if(|next| next.starts_with(char::is_whitespace))
            .is_some()
        {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_the_client_writes_and_folded_values_are_readable() {
        for fine in [
            &b"NATS/1.0\r\nNats-Msg-Id: task-1\r\nX-Other: a: b c\r\n\r\n"[..],
            b"NATS/1.0\r\n\r\n",
            b"NATS/1.0\r\nNats-Msg-Id: a\r\n  folded on\r\n\r\n",
            b"NATS/1.0\r\n\r\nX: 1\r\n\r\n",
            b"NATS/1.0   \r\nX:\r\n\r\n",
            b"NATS/1.0 200 OK\r\nX: 1\r\n\r\n",
        ] {
            assert_eq!(unreadable(fine), None, "{}", String::from_utf8_lossy(fine));
        }
    }

    #[test]
    fn blocks_the_client_cannot_read_say_why() {
        let cases: [(&[u8], Unreadable); 8] = [
            (b"NATS/1.0\r\n\xff: x\r\n\r\n", Unreadable::NotUtf8),
            (b"", Unreadable::NoVersionLine),
            (
                b"HTTP/1.1\r\nNats-Msg-Id: a\r\n\r\n",
                Unreadable::BadVersion("HTTP/1.1".into()),
            ),
            (
                b"NATS/1.0 nope\r\n\r\n",
                Unreadable::BadStatus("nope".into()),
            ),
            (
                b"NATS/1.0 408 Request Timeout\r\n\r\n",
                Unreadable::Status(408),
            ),
            (
                b"NATS/1.0\r\nNats-Msg-Id: a\nwithout colon\r\n\r\n",
                Unreadable::NoColon("without colon".into()),
            ),
            (
                b"NATS/1.0\r\n folded first: x\r\n\r\n",
                Unreadable::BadName(" folded first".into()),
            ),
            (
                b"NATS/1.0\r\nbad name: x\r\n\r\n",
                Unreadable::BadName("bad name".into()),
            ),
        ];
        for (block, why) in cases {
            assert_eq!(
                unreadable(block).as_ref(),
                Some(&why),
                "{}",
                String::from_utf8_lossy(block)
            );
            assert!(!why.to_string().is_empty());
        }
    }
}
