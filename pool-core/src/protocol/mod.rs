//! The wire protocol between the manager and its workers, shared by every transport.
//!
//! A frame is a `u32` big-endian length followed by that many bytes of MessagePack
//! (maps with field names, so peers in other languages can evolve with it). The first
//! frame on a link is the manager's [`ToWorker::Hello`]; the worker answers with
//! [`FromWorker::Ready`] carrying the same [`PROTOCOL_VERSION`]. Task payloads and
//! results are opaque bytes to the manager: they are copied into a frame once and
//! handed back as [`bytes::Bytes`] without being decoded. `docs/PROTOCOL.md` describes
//! every message byte by byte.

mod codec;
pub mod cursor;
pub mod emit;
mod error;
mod fast;
pub mod layout;
mod message;

pub use codec::{
    decode_from_worker, decode_to_worker, encode_frame, require_map, FrameCodec, DEFAULT_MAX_FRAME,
};
pub use error::FrameError;
pub(crate) use fast::{encode_task, encode_task_around, result_parts, TASK_FRAME_FIXED_MAX};
pub use message::{ErrorReply, FromWorker, Heartbeat, LogLevel, TaskFrame, ToWorker};

/// The protocol version both sides must announce in the handshake.
///
/// A worker that answers the manager's hello with another version is rejected
/// with [`FrameError::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;
