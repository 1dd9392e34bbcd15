//! Control requests and replies: MessagePack maps in the pool's own frames
//! (u32 big-endian length prefix, see `pool_core::protocol`).

use bytes::BytesMut;
use pool_core::protocol::{cursor, encode_frame, FrameError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::doc::Doc;

mod by_hand;

/// Largest reply frame a client accepts.
pub(crate) const MAX_REPLY: usize = pool_core::protocol::DEFAULT_MAX_FRAME;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Is the daemon there? Replies `Json` `{pid, version}`.
    Ping,
    /// Pool, workers, queue and health.
    Status,
    /// The metrics snapshot (`Json`), or the Prometheus text (`Text`).
    Metrics {
        /// Text exposition format instead of JSON.
        prometheus: bool,
    },
    /// Per-worker state.
    Workers,
    /// Tasks as JSON lines in `run`'s input format. With `wait`, one `Line` per
    /// task as it ends, then `Done`; without, `Done` once all were accepted.
    Submit {
        /// The lines.
        lines: Vec<String>,
        /// Stream results back.
        wait: bool,
        /// Number of the first line (for ids and error messages).
        first_line: u64,
        /// Send the answers as JSON text (`LinesText`) instead of maps. A
        /// daemon older than this field ignores it and sends `Lines`.
        #[serde(default)]
        text: bool,
    },
    /// Each task's line now: `Line` per id, then `Done` (accepted = settled ok).
    Result {
        /// The task ids.
        ids: Vec<String>,
        /// Send each line as its JSON text (`LineText`) instead of a map. A
        /// daemon older than this field ignores it and sends `Line`.
        #[serde(default)]
        text: bool,
    },
    /// As `Result`, once every task has settled (or the timeout passed).
    Wait {
        /// The task ids.
        ids: Vec<String>,
        /// Give up after this long; the lines then show the current state.
        timeout_ms: Option<u64>,
        /// As `Result`'s.
        #[serde(default)]
        text: bool,
    },
    /// Recent tasks, newest first (`Json` array; with `paged`, `LinesText`
    /// pages then `Done`).
    Tasks {
        /// Only this status.
        status: Option<String>,
        /// Only this type.
        task_type: Option<String>,
        /// At most this many (0: all).
        limit: usize,
        /// Send the entries as JSON text in pages that each fit a reply,
        /// then `Done` (`accepted`: the entries sent; `refused`: those too
        /// large for a reply, each named by a `too_large` error in its
        /// place), instead of one `Json` array, which a long listing
        /// exceeds. A daemon older than this field ignores it and sends the
        /// array.
        #[serde(default, skip_serializing_if = "is_false")]
        paged: bool,
    },
    /// The dead-letter queue, oldest first (`Json` array; with `paged`, as
    /// `Tasks`'s).
    DlqList {
        /// As `Tasks`'s.
        #[serde(default, skip_serializing_if = "is_false")]
        paged: bool,
    },
    /// Put dead letters back in the queue by id (all when `ids` is absent).
    DlqRetry {
        /// Which tasks.
        ids: Option<Vec<String>>,
    },
    /// Empty the dead-letter queue.
    DlqPurge,
    /// Set the pool's size.
    Scale {
        /// The new size.
        size: usize,
    },
    /// The most recent alerts, oldest first (`Json` array of the pool's alerts).
    Alerts {
        /// At most this many.
        last: usize,
    },
    /// Replace every worker, one at a time, on the current worker command (the
    /// roll a `SIGHUP` does, without re-reading the configuration). Replies
    /// `Json` `{replaced}` once the last one was retired.
    Roll,
}

/// The `status` of a line the daemon's feeder wrote, sent beside it
/// ([`Reply::LineText`]): a client then reads what else it counts (`id`,
/// `duration_ms`) from an ok line's beginning, where the feeder writes them,
/// instead of parsing the whole line (a failed or dead-letter line, whose
/// `error` comes first, is still parsed: those are few). Parsing each line
/// cost a `submit --wait` client about 3 000 instructions a task, a third of
/// all it spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LineStatus {
    /// `ok`.
    Ok,
    /// `failed`.
    Failed,
    /// `dead_letter`.
    DeadLetter,
    /// One this client does not know (from a newer daemon): the line is read
    /// whole.
    #[serde(other)]
    Other,
}

impl LineStatus {
    /// The status named `name` (as serde names it; [`Other`](Self::Other)
    /// for a name this client does not know).
    pub(crate) fn named(name: &str) -> Self {
        match name {
            "ok" => Self::Ok,
            "failed" => Self::Failed,
            "dead_letter" => Self::DeadLetter,
            _ => Self::Other,
        }
    }

    /// The status as the line writes it (`None` for [`Other`](Self::Other)).
    pub(crate) fn as_str(self) -> Option<&'static str> {
        match self {
            Self::Ok => Some("ok"),
            Self::Failed => Some("failed"),
            Self::DeadLetter => Some("dead_letter"),
            Self::Other => None,
        }
    }
}

/// A reply from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The request failed; the connection is closed after it when `fatal`.
    Error {
        /// A stable, short kind: `unauthorized`, `too_large`, `malformed`, `busy`,
        /// `invalid`, `shutting_down`, `idle` (no request for a minute: the
        /// connection closes).
        kind: String,
        /// What went wrong.
        message: String,
    },
    /// A JSON document.
    Json {
        /// The document.
        value: serde_json::Value,
    },
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// One result line in `run`'s output format.
    Line {
        /// The line.
        line: Doc,
    },
    /// One result line as its JSON text, to a request that asked for text: a
    /// stored line is sent as it is, neither parsed nor transcoded.
    LineText {
        /// The line, one JSON document.
        line: String,
        /// The line's `status`, when the daemon's feeder wrote the line (see
        /// [`LineStatus`]). A client older than this field ignores it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<LineStatus>,
    },
    /// A submitted batch's answers as JSON text, in input order, to a request
    /// that asked for text.
    LinesText {
        /// The lines, each one JSON object.
        lines: Vec<String>,
    },
    /// Several lines at once (a submitted batch's answers, in input order).
    Lines {
        /// The lines.
        lines: Vec<serde_json::Value>,
    },
    /// A submit ended: how many lines were taken and how many were refused
    /// (a look-up: settled ok and not; a listing in pages: entries sent and
    /// left out).
    Done {
        /// Tasks accepted by the pool.
        accepted: u64,
        /// Lines refused (invalid or not accepted).
        refused: u64,
    },
}

impl Reply {
    /// An error reply.
    pub(crate) fn error(kind: &str, message: impl Into<String>) -> Self {
        Self::Error {
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
}

/// Whether a flag is off: such a flag is left out of a request, which is
/// then what a client from before the flag sends.
fn is_false(flag: &bool) -> bool {
    !*flag
}

/// Encodes `message` as one frame (named MessagePack map).
///
/// # Errors
/// When it does not encode or is larger than `max`.
pub(crate) fn frame<T: Serialize>(message: &T, max: usize) -> Result<BytesMut, FrameError> {
    let mut buf = BytesMut::new();
    encode_frame(message, &mut buf, max)?;
    Ok(buf)
}

/// Appends `reply` to `dst` as one frame (the task path's replies framed by
/// hand, the same bytes as serde's).
///
/// # Errors
/// When it does not encode or is larger than `max`.
pub(crate) fn frame_reply(reply: &Reply, dst: &mut BytesMut, max: usize) -> Result<(), FrameError> {
    by_hand::frame(reply, dst, max).unwrap_or_else(|| encode_frame(reply, dst, max))
}

/// Writes `message` as one frame.
///
/// # Errors
/// An encoding error or the writer's I/O error.
pub(crate) async fn write<W, T>(writer: &mut W, message: &T, max: usize) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = frame(message, max).map_err(std::io::Error::other)?;
    writer.write_all(&buf).await?;
    writer.flush().await
}

/// Decodes a frame body.
///
/// # Errors
/// When the body is not a valid message of type `T`.
pub(crate) fn decode<T: Message>(body: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    if let Some(decoded) = first_tag(body, T::TAG).and_then(|kind| T::fast(kind, body)) {
        return decoded;
    }
    rmp_serde::from_slice(body)
}

/// A request or a reply: a map that names its kind under [`TAG`](Self::TAG).
///
/// serde decodes such a map (an internally tagged enum) by copying the whole
/// of it into a tree of its own first, since the tag may come last: every
/// line of a batch was copied twice. The kinds that carry the task path's
/// lines are decoded straight into their fields instead, when the tag comes
/// first (as this crate writes it); any other message goes through serde.
pub(crate) trait Message: Sized + for<'de> Deserialize<'de> {
    /// The key that names the kind.
    const TAG: &'static str;

    /// Decodes `body`, a message of kind `kind`, when that kind has a direct
    /// decoder (`None` otherwise).
    fn fast(kind: &str, body: &[u8]) -> Option<Result<Self, rmp_serde::decode::Error>>;
}

/// The kind a message's first key names when that key is `tag`.
fn first_tag<'a>(body: &'a [u8], tag: &str) -> Option<&'a str> {
    let mut rd = body;
    by_hand::map_len(&mut rd)?;
    (cursor::string(&mut rd)? == tag).then_some(())?;
    cursor::string(&mut rd)
}

/// Decodes `body` as the fields of one kind (`T`), the tag skipped as an
/// unknown field, and makes the message of them.
fn fields<T: for<'de> Deserialize<'de>, M>(
    body: &[u8],
    make: impl FnOnce(T) -> M,
) -> Option<Result<M, rmp_serde::decode::Error>> {
    Some(rmp_serde::from_slice(body).map(make))
}

/// [`Request::Submit`]'s fields.
#[derive(Deserialize)]
struct SubmitFields {
    lines: Vec<String>,
    wait: bool,
    first_line: u64,
    #[serde(default)]
    text: bool,
}

/// [`Request::Result`]'s fields.
#[derive(Deserialize)]
struct ResultFields {
    ids: Vec<String>,
    #[serde(default)]
    text: bool,
}

/// [`Request::Wait`]'s fields.
#[derive(Deserialize)]
struct WaitFields {
    ids: Vec<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    text: bool,
}

impl Message for Request {
    const TAG: &'static str = "op";

    fn fast(kind: &str, body: &[u8]) -> Option<Result<Self, rmp_serde::decode::Error>> {
        match kind {
            "submit" => by_hand::submit(body).map(Ok).or_else(|| {
                fields(body, |f: SubmitFields| Self::Submit {
                    lines: f.lines,
                    wait: f.wait,
                    first_line: f.first_line,
                    text: f.text,
                })
            }),
            "result" => fields(body, |f: ResultFields| Self::Result {
                ids: f.ids,
                text: f.text,
            }),
            "wait" => fields(body, |f: WaitFields| Self::Wait {
                ids: f.ids,
                timeout_ms: f.timeout_ms,
                text: f.text,
            }),
            _ => None,
        }
    }
}

/// [`Reply::LineText`]'s fields.
#[derive(Deserialize)]
struct LineTextFields {
    line: String,
    #[serde(default)]
    status: Option<LineStatus>,
}

/// [`Reply::LinesText`]'s fields.
#[derive(Deserialize)]
struct LinesTextFields {
    lines: Vec<String>,
}

/// [`Reply::Done`]'s fields.
#[derive(Deserialize)]
struct DoneFields {
    accepted: u64,
    refused: u64,
}

impl Message for Reply {
    const TAG: &'static str = "reply";

    fn fast(kind: &str, body: &[u8]) -> Option<Result<Self, rmp_serde::decode::Error>> {
        match kind {
            "line_text" => by_hand::line_text(body).map(Ok).or_else(|| {
                fields(body, |f: LineTextFields| Self::LineText {
                    line: f.line,
                    status: f.status,
                })
            }),
            "lines_text" => by_hand::lines_text(body).map(Ok).or_else(|| {
                fields(body, |f: LinesTextFields| Self::LinesText {
                    lines: f.lines,
                })
            }),
            "done" => fields(body, |f: DoneFields| Self::Done {
                accepted: f.accepted,
                refused: f.refused,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let requests = [
            Request::Ping,
            Request::Metrics { prometheus: true },
            Request::Submit {
                lines: vec![r#"{"type":"echo"}"#.into()],
                wait: true,
                first_line: 1,
                text: true,
            },
            Request::DlqRetry {
                ids: Some(vec!["a".into(), "b".into()]),
            },
            Request::Wait {
                ids: vec!["x".into()],
                timeout_ms: Some(5),
                text: true,
            },
            Request::Scale { size: 3 },
            Request::Alerts { last: 20 },
            Request::Roll,
        ];
        for r in requests {
            let f = frame(&r, 1 << 20).unwrap();
            assert_eq!(decode::<Request>(&f[4..]).unwrap(), r);
        }
        let replies = [
            Reply::error("busy", "x"),
            Reply::Json {
                value: serde_json::json!({"a": [1, "b", null, 2.5]}),
            },
            Reply::Done {
                accepted: 3,
                refused: 0,
            },
            Reply::LineText {
                line: r#"{"id":"a","status":"ok"}"#.into(),
                status: None,
            },
            Reply::LineText {
                line: r#"{"attempts":1,"duration_ms":1.5,"id":"a","status":"dead_letter"}"#.into(),
                status: Some(LineStatus::DeadLetter),
            },
            Reply::LinesText {
                lines: vec![r#"{"id":"a","status":"accepted"}"#.into()],
            },
        ];
        for r in replies {
            let f = frame(&r, 1 << 20).unwrap();
            assert_eq!(decode::<Reply>(&f[4..]).unwrap(), r);
        }
    }

    /// A line's `status` is an addition both ways: a client from before it
    /// reads the line alone, and a status this client does not know (a newer
    /// daemon's) is `Other`, not an error.
    #[test]
    fn a_line_status_is_read_by_new_clients_and_skipped_by_old_ones() {
        #[derive(Deserialize)]
        struct OldLineText {
            line: String,
        }
        let new = Reply::LineText {
            line: "{}".into(),
            status: Some(LineStatus::Failed),
        };
        let body = frame(&new, 1 << 20).unwrap();
        let old: OldLineText = rmp_serde::from_slice(&body[4..]).unwrap();
        assert_eq!(old.line, "{}");
        let newer = serde_json::json!({"reply": "line_text", "line": "{}", "status": "paused"});
        let body = rmp_serde::to_vec_named(&newer).unwrap();
        assert_eq!(
            decode::<Reply>(&body).unwrap(),
            Reply::LineText {
                line: "{}".into(),
                status: Some(LineStatus::Other),
            }
        );
        assert_eq!(LineStatus::Other.as_str(), None);
    }

    /// `paged` is an addition both ways: off, it is left out (the request is
    /// what a client from before it sends), absent it reads as off, and a
    /// daemon from before it reads a paged request as the plain one.
    #[test]
    fn paged_listings_are_an_addition_both_ways() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        enum Old {
            Tasks {
                status: Option<String>,
                task_type: Option<String>,
                limit: usize,
            },
            DlqList,
        }
        let old_tasks = Old::Tasks {
            status: Some("ok".into()),
            task_type: None,
            limit: 0,
        };
        let cases = [
            (
                Request::Tasks {
                    status: Some("ok".into()),
                    task_type: None,
                    limit: 0,
                    paged: false,
                },
                &old_tasks,
            ),
            (Request::DlqList { paged: false }, &Old::DlqList),
        ];
        for (new, old) in cases {
            let body = rmp_serde::to_vec_named(old).unwrap();
            assert_eq!(rmp_serde::to_vec_named(&new).unwrap(), body);
            assert_eq!(decode::<Request>(&body).unwrap(), new);
        }
        for (new, old) in [
            (
                Request::Tasks {
                    status: Some("ok".into()),
                    task_type: None,
                    limit: 0,
                    paged: true,
                },
                &old_tasks,
            ),
            (Request::DlqList { paged: true }, &Old::DlqList),
        ] {
            let body = rmp_serde::to_vec_named(&new).unwrap();
            assert_eq!(&rmp_serde::from_slice::<Old>(&body).unwrap(), old);
            assert_eq!(decode::<Request>(&body).unwrap(), new);
        }
    }

    /// A client from before `text` asks for `Line` and `Lines` maps, and gets
    /// them.
    #[test]
    fn a_look_up_without_text_asks_for_maps() {
        for (old, want) in [
            (
                serde_json::json!({"op": "wait", "ids": ["x"], "timeout_ms": null}),
                Request::Wait {
                    ids: vec!["x".into()],
                    timeout_ms: None,
                    text: false,
                },
            ),
            (
                serde_json::json!({"op": "result", "ids": ["x"]}),
                Request::Result {
                    ids: vec!["x".into()],
                    text: false,
                },
            ),
            (
                serde_json::json!({"op": "submit", "lines": [], "wait": false, "first_line": 1}),
                Request::Submit {
                    lines: vec![],
                    wait: false,
                    first_line: 1,
                    text: false,
                },
            ),
        ] {
            let body = rmp_serde::to_vec_named(&old).unwrap();
            assert_eq!(decode::<Request>(&body).unwrap(), want);
        }
    }

    /// The kinds decoded straight into their fields decode to what serde's
    /// own decoding of the enum makes of them, tag first or last, and are
    /// refused alike when a field is missing.
    #[test]
    fn direct_decoding_agrees_with_serde() {
        fn both<T: Message + std::fmt::Debug + PartialEq>(doc: serde_json::Value) {
            let body = rmp_serde::to_vec_named(&doc).unwrap();
            let serde: Result<T, _> = rmp_serde::from_slice(&body);
            let ours: Result<T, _> = decode(&body);
            match (serde, ours) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{doc}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{doc}: serde {a:?}, direct {b:?}"),
            }
        }
        let lines = serde_json::json!([r#"{"type":"echo"}"#, "x"]);
        for doc in [
            serde_json::json!({"op": "submit", "lines": lines, "wait": true, "first_line": 7, "text": true}),
            serde_json::json!({"lines": lines, "wait": false, "first_line": 1, "op": "submit"}),
            serde_json::json!({"op": "submit", "lines": lines, "first_line": 1}),
            serde_json::json!({"op": "submit", "lines": [1], "wait": true, "first_line": 1}),
            serde_json::json!({"op": "result", "ids": ["a", "b"], "text": true}),
            serde_json::json!({"op": "result"}),
            serde_json::json!({"op": "wait", "ids": ["a"], "timeout_ms": 5}),
            serde_json::json!({"op": "wait", "ids": ["a"], "timeout_ms": null, "text": true, "extra": 1}),
            serde_json::json!({"op": "status"}),
            serde_json::json!({"op": "nonsense"}),
        ] {
            both::<Request>(doc);
        }
        for doc in [
            serde_json::json!({"reply": "line_text", "line": "{}"}),
            serde_json::json!({"reply": "lines_text", "lines": ["{}", "[]"]}),
            serde_json::json!({"lines": ["{}"], "reply": "lines_text"}),
            serde_json::json!({"reply": "lines_text"}),
            serde_json::json!({"reply": "done", "accepted": 3, "refused": 1}),
            serde_json::json!({"reply": "done", "accepted": -3, "refused": 1}),
            serde_json::json!({"reply": "text", "text": "hi"}),
        ] {
            both::<Reply>(doc);
        }
    }
}
