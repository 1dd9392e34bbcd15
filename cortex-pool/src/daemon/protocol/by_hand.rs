//! The messages that carry the task path's lines (`submit` requests, and
//! `line_text` and `lines_text` replies), decoded and encoded by hand:
//! rmp-serde took about 1 500 instructions to decode a `line_text` reply of
//! one line, most of them skipping the tag through its generic visitor, and
//! about 400 to encode one. Each decoder reads exactly the map the derived
//! encoder writes (any key order, the tag included, the optional fields
//! absent or present) and gives `None` for anything else, which the caller
//! leaves to rmp-serde; each encoder writes the derived encoder's bytes.

use bytes::BytesMut;
use pool_core::protocol::emit::{str_head_len, Scratch};
use pool_core::protocol::{cursor, FrameError};

use super::{LineStatus, Reply, Request};
use crate::set_once::set_once;

/// The number of entries of a map in any of its forms.
pub(super) fn map_len(rd: &mut &[u8]) -> Option<usize> {
    let (&marker, rest) = rd.split_first()?;
    *rd = rest;
    match marker {
        0x80..=0x8f => Some(usize::from(marker & 0x0f)),
        0xde => Some(usize::from(u16::from_be_bytes(be(rd)?))),
        0xdf => usize::try_from(u32::from_be_bytes(be(rd)?)).ok(),
        _ => None,
    }
}

/// The number of items of an array in any of its forms.
fn array_len(rd: &mut &[u8]) -> Option<usize> {
    let (&marker, rest) = rd.split_first()?;
    *rd = rest;
    match marker {
        0x90..=0x9f => Some(usize::from(marker & 0x0f)),
        0xdc => Some(usize::from(u16::from_be_bytes(be(rd)?))),
        0xdd => usize::try_from(u32::from_be_bytes(be(rd)?)).ok(),
        _ => None,
    }
}

/// The next `N` bytes, as an array (a big-endian length).
fn be<const N: usize>(rd: &mut &[u8]) -> Option<[u8; N]> {
    cursor::take(rd, N)?.try_into().ok()
}

fn boolean(rd: &mut &[u8]) -> Option<bool> {
    let (&marker, rest) = rd.split_first()?;
    *rd = rest;
    match marker {
        0xc2 => Some(false),
        0xc3 => Some(true),
        _ => None,
    }
}

/// An array of strings, each taken as its own `String`.
fn strings(rd: &mut &[u8]) -> Option<Vec<String>> {
    let n = array_len(rd)?;
    // Each item takes at least one byte: a count beyond the body is a lie.
    let mut out = Vec::with_capacity(n.min(rd.len()));
    for _ in 0..n {
        out.push(cursor::string(rd)?.to_owned());
    }
    Some(out)
}

/// Reads a map whose keys are strings, handing each key and the rest of the
/// body to `field` (which takes its value off the front); `None` when the
/// body is not such a map, a field refuses, or bytes are left over.
fn map<'a>(
    body: &'a [u8],
    mut field: impl FnMut(&'a str, &mut &'a [u8]) -> Option<()>,
) -> Option<()> {
    let mut rd = body;
    for _ in 0..map_len(&mut rd)? {
        let key = cursor::string(&mut rd)?;
        field(key, &mut rd)?;
    }
    rd.is_empty().then_some(())
}

/// A `submit` request.
pub(super) fn submit(body: &[u8]) -> Option<Request> {
    let (mut op, mut lines, mut wait, mut first_line, mut text) = (None, None, None, None, None);
    map(body, |key, rd| match key {
        "op" => set_once(&mut op, cursor::string(rd)?),
        "lines" => set_once(&mut lines, strings(rd)?),
        "wait" => set_once(&mut wait, boolean(rd)?),
        "first_line" => set_once(&mut first_line, cursor::uint(rd)?),
        "text" => set_once(&mut text, boolean(rd)?),
        _ => None,
    })?;
    Some(Request::Submit {
        lines: lines?,
        wait: wait?,
        first_line: first_line?,
        text: text.unwrap_or(false),
    })
}

/// A `line_text` reply.
pub(super) fn line_text(body: &[u8]) -> Option<Reply> {
    let (mut tag, mut line, mut status) = (None, None, None);
    map(body, |key, rd| match key {
        "reply" => set_once(&mut tag, cursor::string(rd)?),
        "line" => set_once(&mut line, cursor::string(rd)?.to_owned()),
        "status" => set_once(&mut status, LineStatus::named(cursor::string(rd)?)),
        _ => None,
    })?;
    Some(Reply::LineText {
        line: line?,
        status,
    })
}

/// A `lines_text` reply.
pub(super) fn lines_text(body: &[u8]) -> Option<Reply> {
    let (mut tag, mut lines) = (None, None);
    map(body, |key, rd| match key {
        "reply" => set_once(&mut tag, cursor::string(rd)?),
        "lines" => set_once(&mut lines, strings(rd)?),
        _ => None,
    })?;
    Some(Reply::LinesText { lines: lines? })
}

/// Appends the frame of a `line_text` or `lines_text` reply to `dst`: the
/// bytes the derived encoder writes. `None` for any other reply (and a
/// status this daemon does not write), which the caller frames with serde.
pub(super) fn frame(
    reply: &Reply,
    dst: &mut BytesMut,
    max: usize,
) -> Option<Result<(), FrameError>> {
    match reply {
        Reply::LineText { line, status } => {
            let status = match status {
                Some(status) => Some(status.as_str()?),
                None => None,
            };
            let fields = [("reply", "line_text"), ("line", line.as_str())];
            let status = status.map(|status| ("status", status));
            let all = || fields.iter().chain(status.iter());
            let len = 1 + all().map(|(k, v)| str_len(k) + str_len(v)).sum::<usize>();
            Some(framed(dst, len, max, |dst| {
                dst.extend_from_slice(&[0x82 + u8::from(status.is_some())]);
                for (key, value) in all() {
                    put_str(dst, key);
                    put_str(dst, value);
                }
            }))
        }
        Reply::LinesText { lines } => {
            let items = lines.iter().map(|line| str_len(line)).sum::<usize>();
            let head = array_head(lines.len());
            let len = 1
                + str_len("reply")
                + str_len("lines_text")
                + str_len("lines")
                + head.bytes().len()
                + items;
            Some(framed(dst, len, max, |dst| {
                dst.extend_from_slice(&[0x82]);
                put_str(dst, "reply");
                put_str(dst, "lines_text");
                put_str(dst, "lines");
                dst.extend_from_slice(head.bytes());
                for line in lines {
                    put_str(dst, line);
                }
            }))
        }
        _ => None,
    }
}

/// Appends a frame of a `len`-byte body that `body` writes, or refuses it
/// (leaving `dst` as it was) when it is larger than `max`.
fn framed(
    dst: &mut BytesMut,
    len: usize,
    max: usize,
    body: impl FnOnce(&mut BytesMut),
) -> Result<(), FrameError> {
    let head = Scratch::frame(len, max)?;
    dst.reserve(head.bytes().len() + len);
    dst.extend_from_slice(head.bytes());
    body(dst);
    Ok(())
}

/// The encoded size of a `str`.
fn str_len(s: &str) -> usize {
    str_head_len(s.len()) + s.len()
}

fn put_str(dst: &mut BytesMut, s: &str) {
    let mut head = Scratch::new();
    head.str_head(s.len());
    dst.extend_from_slice(head.bytes());
    dst.extend_from_slice(s.as_bytes());
}

/// The head of an array of `n` items, in its shortest form.
fn array_head(n: usize) -> Scratch {
    let mut head = Scratch::new();
    match (u8::try_from(n), u16::try_from(n)) {
        (Ok(n), _) if n <= 0x0f => head.put(&[0x90 | n]),
        (_, Ok(n)) => {
            head.put(&[0xdc]);
            head.put(&n.to_be_bytes());
        }
        _ => {
            head.put(&[0xdd]);
            head.put(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn body(value: &Value) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    /// What the derived encoder writes is read back as rmp-serde reads it.
    #[test]
    fn what_the_encoder_writes_is_read_as_serde_reads_it() {
        let requests = [
            Request::Submit {
                lines: vec![r#"{"type":"echo"}"#.into(), "grüße".into(), String::new()],
                wait: true,
                first_line: 70_000,
                text: true,
            },
            Request::Submit {
                lines: (0..40).map(|i| "x".repeat(i * 9)).collect(),
                wait: false,
                first_line: 1,
                text: false,
            },
        ];
        for r in requests {
            let framed = super::super::frame(&r, 1 << 20).unwrap();
            let body = &framed[4..];
            assert_eq!(submit(body), Some(r.clone()));
            assert_eq!(rmp_serde::from_slice::<Request>(body).unwrap(), r);
        }
        let replies = [
            Reply::LineText {
                line: "{}".into(),
                status: None,
            },
            Reply::LineText {
                line: "y".repeat(70_000),
                status: Some(LineStatus::DeadLetter),
            },
            Reply::LinesText { lines: vec![] },
            Reply::LinesText {
                lines: (0..20).map(|i| format!("{{\"id\":{i}}}")).collect(),
            },
        ];
        for r in replies {
            let framed = super::super::frame(&r, 1 << 20).unwrap();
            let body = &framed[4..];
            let by_hand = match r {
                Reply::LineText { .. } => line_text(body),
                _ => lines_text(body),
            };
            assert_eq!(by_hand, Some(r.clone()));
            assert_eq!(rmp_serde::from_slice::<Reply>(body).unwrap(), r);
        }
    }

    /// What `frame` writes is byte for byte what the derived encoder writes,
    /// and a reply it does not write by hand is left to it.
    #[test]
    fn replies_are_framed_as_the_derived_encoder_frames_them() {
        let lengths = [0, 1, 31, 32, 255, 256, 65_535, 65_536];
        let mut replies: Vec<Reply> = Vec::new();
        for len in lengths {
            for status in [
                None,
                Some(LineStatus::Ok),
                Some(LineStatus::Failed),
                Some(LineStatus::DeadLetter),
            ] {
                replies.push(Reply::LineText {
                    line: "l".repeat(len),
                    status,
                });
            }
        }
        for items in [0, 1, 15, 16, 65_535, 65_536] {
            replies.push(Reply::LinesText {
                lines: (0..items).map(|i| "s".repeat(lengths[i % 6])).collect(),
            });
        }
        for reply in &replies {
            let mut ours = BytesMut::new();
            frame(reply, &mut ours, usize::MAX)
                .expect("framed by hand")
                .unwrap();
            let mut theirs = BytesMut::new();
            pool_core::protocol::encode_frame(reply, &mut theirs, usize::MAX).unwrap();
            assert!(ours == theirs, "{:.60?}", format!("{reply:?}"));
        }
        let other = Reply::LineText {
            line: String::new(),
            status: Some(LineStatus::Other),
        };
        assert!(frame(&other, &mut BytesMut::new(), usize::MAX).is_none());
        assert!(frame(&Reply::error("busy", "x"), &mut BytesMut::new(), usize::MAX).is_none());
        let mut dst = BytesMut::from(&b"kept"[..]);
        let big = Reply::LineText {
            line: "x".repeat(100),
            status: None,
        };
        assert!(matches!(
            frame(&big, &mut dst, 64),
            Some(Err(FrameError::TooLarge { .. }))
        ));
        assert_eq!(&dst[..], b"kept");
    }

    /// Keys in another order are read; a map the derived decoder would refuse
    /// or read otherwise (a repeated or unknown key, a value of another kind,
    /// a missing field, bytes left over) is left to it.
    #[test]
    fn anything_but_the_encoders_maps_is_left_to_serde() {
        // `json!` sorts its keys: the tag is not first here.
        let keys_sorted = json!({"lines": ["a"], "first_line": 3, "wait": false, "op": "submit"});
        assert_eq!(
            submit(&body(&keys_sorted)),
            Some(Request::Submit {
                lines: vec!["a".into()],
                wait: false,
                first_line: 3,
                text: false,
            })
        );
        let status_of_a_newer_daemon =
            json!({"reply": "line_text", "line": "{}", "status": "paused"});
        assert_eq!(
            line_text(&body(&status_of_a_newer_daemon)),
            Some(Reply::LineText {
                line: "{}".into(),
                status: Some(LineStatus::Other),
            })
        );
        // A repeated key (which `json!` cannot make): fixmap of 5, fixstr keys.
        let mut repeated = vec![0x85];
        for (key, value) in [
            ("op", &b"\xa6submit"[..]),
            ("lines", b"\x91\xa1a"),
            ("wait", b"\xc3"),
            ("first_line", b"\x01"),
            ("wait", b"\xc2"),
        ] {
            repeated.push(0xa0 | key.len() as u8);
            repeated.extend_from_slice(key.as_bytes());
            repeated.extend_from_slice(value);
        }
        assert_eq!(
            submit(&repeated[..repeated.len() - 6]),
            None,
            "four entries of five"
        );
        assert_eq!(submit(&repeated), None, "wait twice");
        assert!(rmp_serde::from_slice::<Request>(&repeated).is_err());
        for other in [
            json!({"op": "submit", "lines": ["a"], "wait": true, "first_line": 1, "extra": 1}),
            json!({"op": "submit", "lines": ["a"], "wait": 1, "first_line": 1}),
            json!({"op": "submit", "lines": ["a"], "first_line": 1}),
            json!({"op": "submit", "lines": [1], "wait": true, "first_line": 1}),
            json!({"op": "submit", "lines": ["a"], "wait": true, "first_line": -1}),
        ] {
            assert_eq!(submit(&body(&other)), None, "{other}");
        }
        for other in [
            json!({"reply": "line_text", "line": "a", "status": null}),
            json!({"reply": "line_text"}),
            json!({"reply": "lines_text", "lines": "a"}),
        ] {
            let b = body(&other);
            assert_eq!(line_text(&b).or_else(|| lines_text(&b)), None, "{other}");
        }
        let mut trailing = body(&json!({"reply": "lines_text", "lines": ["a"]}));
        trailing.push(0xc0);
        assert_eq!(lines_text(&trailing), None);
        let whole = body(&json!({"reply": "lines_text", "lines": ["a", "b"]}));
        for cut in 0..whole.len() {
            assert_eq!(lines_text(&whole[..cut]), None, "cut at {cut}");
        }
    }

    /// Frames the encoder wrote, damaged at random (a byte changed, inserted
    /// or removed, or the body cut short): whatever a hand decoder still
    /// reads, where the daemon would call it (its kind named first), rmp-serde
    /// reads the same; the rest is left to rmp-serde.
    #[test]
    fn damaged_maps_are_read_as_serde_reads_them_or_left_to_it() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let frames: Vec<Vec<u8>> = [
            super::super::frame(
                &Request::Submit {
                    lines: vec![r#"{"type":"echo"}"#.into(), "ab".into()],
                    wait: true,
                    first_line: 300,
                    text: true,
                },
                1 << 20,
            ),
            super::super::frame(
                &Reply::LineText {
                    line: r#"{"id":"a"}"#.into(),
                    status: Some(LineStatus::Ok),
                },
                1 << 20,
            ),
            super::super::frame(
                &Reply::LinesText {
                    lines: vec!["x".into(), "yz".into()],
                },
                1 << 20,
            ),
        ]
        .into_iter()
        .map(|framed| framed.unwrap()[4..].to_vec())
        .collect();
        // Half the bytes written are markers, where a decoder's choices lie.
        const MARKERS: [u8; 24] = [
            0x00, 0x01, 0x7f, 0x80, 0x83, 0x84, 0x8f, 0x90, 0x91, 0x9f, 0xa0, 0xa2, 0xbf, 0xc0,
            0xc2, 0xc3, 0xc4, 0xcc, 0xcd, 0xd0, 0xd9, 0xdc, 0xde, 0xff,
        ];
        let byte = |pick: usize, any: usize| {
            if pick % 2 == 0 {
                MARKERS[any % MARKERS.len()]
            } else {
                any as u8
            }
        };
        let mut read_by_hand = 0;
        for _ in 0..300_000 {
            let mut body = frames[next(frames.len())].clone();
            for _ in 0..=next(2) {
                let at = next(body.len() + 1);
                let b = byte(next(2), next(256));
                match next(4) {
                    0 if at < body.len() => body[at] = b,
                    1 => body.insert(at, b),
                    2 if at < body.len() => drop(body.remove(at)),
                    _ => body.truncate(at),
                }
            }
            let by_hand_request = super::super::first_tag(&body, "op")
                .filter(|kind| *kind == "submit")
                .and_then(|_| submit(&body));
            if let Some(request) = by_hand_request {
                read_by_hand += 1;
                let serde = rmp_serde::from_slice::<Request>(&body).ok();
                assert_eq!(serde, Some(request), "{body:x?}");
            }
            let by_hand_reply = match super::super::first_tag(&body, "reply") {
                Some("line_text") => line_text(&body),
                Some("lines_text") => lines_text(&body),
                _ => None,
            };
            if let Some(reply) = by_hand_reply {
                read_by_hand += 1;
                let serde = rmp_serde::from_slice::<Reply>(&body).ok();
                assert_eq!(serde, Some(reply), "{body:x?}");
            }
        }
        assert!(
            read_by_hand > 1_000,
            "only {read_by_hand} damaged maps read"
        );
    }
}
