//! Keeps `docs/PROTOCOL.md` honest: every hex example in it must decode with the real
//! codec and encode back to the very same bytes.
//!
//! Marker format: a fenced block whose info string is `hex <direction> <message>`,
//! `<direction>` being `to-worker` or `from-worker` and `<message>` the message's
//! `type`. Inside, `#` starts a comment that runs to the end of the line; the rest is
//! the frame as whitespace-separated pairs of hex digits.

use std::collections::BTreeSet;

use bytes::BytesMut;
use pool_core::protocol::{
    decode_from_worker, decode_to_worker, encode_frame, FrameCodec, FromWorker, ToWorker,
    DEFAULT_MAX_FRAME,
};
use serde::Deserialize;
use tokio_util::codec::Decoder;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PROTOCOL_MD: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"));

const TO_WORKER: [&str; 4] = ["hello", "task", "cancel", "shutdown"];
const FROM_WORKER: [&str; 5] = ["ready", "result", "error", "heartbeat", "log"];

/// One ```` ```hex ```` block of the document.
#[derive(Debug)]
struct Example {
    /// 1-based line of the opening fence, for messages.
    line: usize,
    direction: String,
    message: String,
    bytes: Vec<u8>,
}

fn parse_hex(text: &str, line: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let data = l.split('#').next().unwrap_or("");
        for pair in data.split_whitespace() {
            if pair.len() != 2 {
                return Err(format!(
                    "line {}: `{pair}` is not two hex digits",
                    line + n + 1
                ));
            }
            let byte = u8::from_str_radix(pair, 16)
                .map_err(|e| format!("line {}: `{pair}`: {e}", line + n + 1))?;
            out.push(byte);
        }
    }
    Ok(out)
}

fn examples(doc: &str) -> Result<Vec<Example>, String> {
    let mut found = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        let Some(info) = l.trim_start().strip_prefix("```hex") else {
            continue;
        };
        let words: Vec<&str> = info.split_whitespace().collect();
        let [direction, message] = words[..] else {
            return Err(format!(
                "line {}: expected ```hex <direction> <message>, got `{l}`",
                i + 1
            ));
        };
        let mut body = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if !closed {
            return Err(format!("line {}: unterminated hex block", i + 1));
        }
        found.push(Example {
            line: i + 1,
            direction: direction.to_owned(),
            message: message.to_owned(),
            bytes: parse_hex(&body, i + 1)?,
        });
    }
    Ok(found)
}

/// Just the `type` key of a body.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
}

fn to_worker_name(m: &ToWorker<'_>) -> &'static str {
    match m {
        ToWorker::Hello { .. } => "hello",
        ToWorker::Task(_) => "task",
        ToWorker::Cancel { .. } => "cancel",
        ToWorker::Shutdown { .. } => "shutdown",
        _ => "(new to_worker variant)",
    }
}

fn from_worker_name(m: &FromWorker<'_>) -> &'static str {
    match m {
        FromWorker::Ready { .. } => "ready",
        FromWorker::Result { .. } => "result",
        FromWorker::Error(_) => "error",
        FromWorker::Heartbeat(_) => "heartbeat",
        FromWorker::Log { .. } => "log",
        _ => "(new from_worker variant)",
    }
}

/// Decodes one example as a whole frame, checks its name and re-encodes it.
fn check(ex: &Example) -> Result<(), String> {
    let at = format!(
        "PROTOCOL.md line {} ({} {})",
        ex.line, ex.direction, ex.message
    );
    let mut buf = BytesMut::from(&ex.bytes[..]);
    let body = FrameCodec::new(DEFAULT_MAX_FRAME)
        .decode_eof(&mut buf)
        .map_err(|e| format!("{at}: {e}"))?
        .ok_or_else(|| format!("{at}: no frame"))?;
    if !buf.is_empty() {
        return Err(format!("{at}: {} bytes after the frame", buf.len()));
    }
    let tag: Tag<'_> = rmp_serde::from_slice(&body).map_err(|e| format!("{at}: {e}"))?;
    let mut again = BytesMut::new();
    let name = match ex.direction.as_str() {
        "to-worker" => {
            let msg = decode_to_worker(&body).map_err(|e| format!("{at}: {e}"))?;
            encode_frame(&msg, &mut again, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
            to_worker_name(&msg)
        }
        "from-worker" => {
            let msg = decode_from_worker(&body).map_err(|e| format!("{at}: {e}"))?;
            encode_frame(&msg, &mut again, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
            from_worker_name(&msg)
        }
        other => return Err(format!("{at}: unknown direction `{other}`")),
    };
    if name != ex.message || tag.ty != ex.message {
        return Err(format!("{at}: decodes as `{name}` (type key `{}`)", tag.ty));
    }
    if again[..] != ex.bytes[..] {
        return Err(format!(
            "{at}: re-encoding differs:\n doc:  {:02x?}\n code: {:02x?}",
            ex.bytes,
            &again[..]
        ));
    }
    Ok(())
}

#[test]
fn every_hex_example_is_byte_exact() -> TestResult {
    let all = examples(PROTOCOL_MD)?;
    assert!(!all.is_empty(), "no ```hex blocks in PROTOCOL.md");
    let failures: Vec<String> = all.iter().filter_map(|ex| check(ex).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn every_message_has_an_example() -> TestResult {
    let all = examples(PROTOCOL_MD)?;
    let shown: BTreeSet<(String, String)> = all
        .into_iter()
        .map(|ex| (ex.direction, ex.message))
        .collect();
    let wanted = TO_WORKER
        .iter()
        .map(|m| ("to-worker", *m))
        .chain(FROM_WORKER.iter().map(|m| ("from-worker", *m)));
    for (direction, message) in wanted {
        assert!(
            shown.contains(&(direction.to_owned(), message.to_owned())),
            "PROTOCOL.md has no ```hex {direction} {message} example"
        );
    }
    Ok(())
}

#[test]
fn the_parser_rejects_what_it_should() {
    assert!(examples("```hex to-worker\n00\n```\n").is_err());
    assert!(examples("```hex to-worker cancel\n0\n```\n").is_err());
    assert!(examples("```hex to-worker cancel\nzz\n```\n").is_err());
    assert!(examples("```hex to-worker cancel\n00\n").is_err());
    let one = examples("```hex from-worker log  \n00 01 # c 02\n  ff\n```\n");
    let bytes = one.map(|v| v.into_iter().map(|e| e.bytes).collect::<Vec<_>>());
    assert_eq!(bytes, Ok(vec![vec![0x00, 0x01, 0xff]]));
}

#[test]
fn check_catches_drift() -> TestResult {
    for ex in examples(PROTOCOL_MD)? {
        // A length prefix that no longer matches the body.
        let mut bytes = ex.bytes.clone();
        bytes[3] = bytes[3].wrapping_add(1);
        let longer = Example { bytes, ..ex };
        assert!(check(&longer).is_err(), "{longer:?} still passes");
        // The right bytes under another message's name.
        let mut bytes = longer.bytes;
        bytes[3] = bytes[3].wrapping_sub(1);
        let other = match (longer.direction.as_str(), longer.message.as_str()) {
            ("to-worker", "cancel") => "shutdown",
            ("to-worker", _) => "cancel",
            (_, "log") => "ready",
            _ => "log",
        };
        let relabelled = Example {
            message: other.to_owned(),
            bytes,
            ..longer
        };
        assert!(check(&relabelled).is_err(), "{relabelled:?} still passes");
    }
    // A valid frame in a non-canonical encoding (id 42 as uint 64) decodes, but does not
    // re-encode to the same bytes, so a hand-written example like it is caught.
    let body = "82 a4 74 79 70 65 a6 63 61 6e 63 65 6c a2 69 64 cf 00 00 00 00 00 00 00 2a";
    let body = parse_hex(body, 0)?;
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let wide = Example {
        line: 0,
        direction: "to-worker".into(),
        message: "cancel".into(),
        bytes,
    };
    let err = check(&wide).err().unwrap_or_default();
    assert!(err.contains("re-encoding differs"), "{err}");
    Ok(())
}

/// A MessagePack fixstr.
fn s(text: &str) -> Vec<u8> {
    let mut out = vec![0xa0 | text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

/// A fixmap body from already-encoded keys and values.
fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = vec![0x80 | entries.len() as u8];
    for (key, value) in entries {
        out.extend(s(key));
        out.extend_from_slice(value);
    }
    out
}

#[test]
fn documented_decoding_rules_hold() -> TestResult {
    let cancel = s("cancel");
    // Keys in any order.
    let body = map(&[("id", &[0x2a]), ("type", &cancel)]);
    assert_eq!(decode_to_worker(&body)?, ToWorker::Cancel { id: 42 });
    // Unknown keys are ignored.
    let body = map(&[("type", &cancel), ("id", &[0x2a]), ("later", &[0xc0])]);
    assert_eq!(decode_to_worker(&body)?, ToWorker::Cancel { id: 42 });
    // Any integer encoding of a non-negative value: uint 64, int 8.
    let body = map(&[
        ("type", &cancel),
        ("id", &[0xcf, 0, 0, 0, 0, 0, 0, 0, 0x2a]),
    ]);
    assert_eq!(decode_to_worker(&body)?, ToWorker::Cancel { id: 42 });
    let body = map(&[("type", &cancel), ("id", &[0xd0, 0x2a])]);
    assert_eq!(decode_to_worker(&body)?, ToWorker::Cancel { id: 42 });
    // `ready.task_types` is optional.
    let body = map(&[("type", &s("ready")), ("version", &[1]), ("pid", &[7])]);
    assert_eq!(
        decode_from_worker(&body)?,
        FromWorker::Ready {
            version: 1,
            pid: 7,
            task_types: vec![],
            batches_replies: false,
        }
    );
    // Heartbeat fields read as 0 when missing.
    let body = map(&[("type", &s("heartbeat")), ("in_flight", &[3])]);
    assert_eq!(
        decode_from_worker(&body)?,
        FromWorker::Heartbeat(pool_core::protocol::Heartbeat::new(0, 0, 0, 3))
    );
    // An unknown message type is refused.
    let body = map(&[("type", &s("gossip"))]);
    assert!(decode_from_worker(&body).is_err());
    Ok(())
}
