//! Reading a stream's stored messages through its message API
//! (`$JS.API.STREAM.MSG.GET`), which answers in JSON with the header block
//! as the bytes stored: a block the client cannot parse (`unreadable.rs`)
//! is read here without going through the client's parser, which a
//! delivery, a direct get or the client's own raw get would. The stream's
//! leader answers it, so a message stored is never missed, as a direct get
//! from a replica that lags could.

use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::RawMessage;
use async_nats::jetstream::{self, ErrorCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A stored message, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Its stream sequence.
    pub(crate) sequence: u64,
    /// Its header block as stored (`NATS/1.0…` when well formed), if any.
    pub(crate) headers: Option<Bytes>,
    /// Its body.
    pub(crate) payload: Bytes,
}

/// Why a stored message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredError {
    /// The request got no answer, or one that is no message API answer.
    #[error("the message API of stream {stream} did not answer: {reason}")]
    Request {
        /// The stream.
        stream: String,
        /// What the client said.
        reason: String,
    },
    /// The server refused the request.
    #[error("the message API of stream {stream} refused: {error}")]
    Refused {
        /// The stream.
        stream: String,
        /// The server's error.
        error: jetstream::Error,
    },
    /// A field of the answer is not base64.
    #[error("the {field} of message {sequence} in stream {stream} is not base64: {reason}")]
    Encoding {
        /// The stream.
        stream: String,
        /// The message's sequence.
        sequence: u64,
        /// `headers` or `body`.
        field: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// The message API's request: the first message on `next_by_subj` from
/// sequence `seq` on.
#[derive(Serialize)]
struct NextBySubject<'a> {
    seq: u64,
    next_by_subj: &'a str,
}

/// The message API's request: the message at sequence `seq`.
#[derive(Serialize)]
struct AtSequence {
    seq: u64,
}

/// The message API's answer.
#[derive(Deserialize)]
struct Got {
    message: RawMessage,
}

/// The first message of `stream` on `subject` whose sequence is `from` or
/// later; `None` when there is none.
pub(crate) async fn next_on(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    from: u64,
) -> Result<Option<Stored>, StoredError> {
    let request = NextBySubject {
        seq: from,
        next_by_subj: subject,
    };
    let Some(message) = get(js, stream, &request).await? else {
        return Ok(None);
    };
    let decode = |field: &'static str, text: &str| {
        STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| StoredError::Encoding {
                stream: stream.to_owned(),
                sequence: message.sequence,
                field,
                reason: e.to_string(),
            })
    };
    let headers = match message.headers.as_deref() {
        Some(text) => Some(decode("headers", text)?),
        None => None,
    };
    Ok(Some(Stored {
        sequence: message.sequence,
        headers,
        payload: decode("body", &message.payload)?,
    }))
}

/// When the message of `stream` at `sequence` was stored, in nanoseconds
/// since the Unix epoch; `None` when the stream holds no message there (it
/// was removed, or never stored). Only the server's answer that there is
/// none says `None`: no answer, or another error, is an error.
pub(crate) async fn published_ns(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<Option<i128>, StoredError> {
    let request = AtSequence { seq: sequence };
    let message = get(js, stream, &request).await?;
    Ok(message.map(|m| m.time.unix_timestamp_nanos()))
}

/// The message `request` (a `STREAM.MSG.GET` request) asks `stream` for;
/// `None` when the server answers that there is none. No answer, or another
/// error, is an error.
async fn get(
    js: &jetstream::Context,
    stream: &str,
    request: &impl serde::Serialize,
) -> Result<Option<RawMessage>, StoredError> {
    let answer: Response<Got> = js
        .request(format!("STREAM.MSG.GET.{stream}"), request)
        .await
        .map_err(|e| StoredError::Request {
            stream: stream.to_owned(),
            reason: e.to_string(),
        })?;
    match answer {
        Response::Ok(got) => Ok(Some(got.message)),
        Response::Err { error } if error.error_code() == ErrorCode::NO_MESSAGE_FOUND => Ok(None),
        Response::Err { error } => Err(StoredError::Refused {
            stream: stream.to_owned(),
            error,
        }),
    }
}
