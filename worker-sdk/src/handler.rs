//! Type erasure of user handlers: decode the input, call, encode the output.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{spare, HandlerError, TaskContext};

/// What an erased handler produces: the encoded result, or why there is none.
pub(crate) type HandlerOutput = Result<Encoded, HandlerError>;

/// A result's bytes: encoded by the SDK from a typed output, or given as they are by
/// a raw handler (no copy either way until the reply frame is written).
pub(crate) enum Encoded {
    Vec(Vec<u8>),
    Bytes(Bytes),
}

impl std::ops::Deref for Encoded {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Vec(v) => v,
            Self::Bytes(b) => b,
        }
    }
}

/// A handler's future with its types erased.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = HandlerOutput> + Send>>;

/// A registered handler: takes the context and the raw MessagePack payload.
pub(crate) type ErasedHandler = Arc<dyn Fn(TaskContext, Bytes) -> BoxFuture + Send + Sync>;

/// The handlers by task type. Task types come from the manager, not from strangers,
/// so a cheap FNV-1a hash serves the lookup of every task (SipHash cost more than the
/// rest of the lookup).
pub(crate) type Handlers = HashMap<String, Registered, BuildHasherDefault<Fnv>>;

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A handler with its task type, shared (not copied) by every task's context.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) task_type: Arc<str>,
    pub(crate) handler: ErasedHandler,
}

/// Wraps a raw handler (bytes in, bytes out) for the dispatcher.
pub(crate) fn erase_raw<F, Fut>(handler: F) -> ErasedHandler
where
    F: Fn(TaskContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx: TaskContext, payload: Bytes| -> BoxFuture {
        let handler = Arc::clone(&handler);
        Box::pin(async move { handler(ctx, payload).await.map(Encoded::Bytes) })
    })
}

/// Wraps a typed handler so the dispatcher can call it with raw bytes.
///
/// Decoding, the call and encoding all happen inside the returned future: on the
/// dispatcher for its first poll, then on the task's own tokio task if it waits.
pub(crate) fn erase<T, O, F, Fut>(handler: F) -> ErasedHandler
where
    T: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx: TaskContext, payload: Bytes| -> BoxFuture {
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let input: T = rmp_serde::from_slice(&payload).map_err(|e| {
                HandlerError::fatal(format!(
                    "payload does not decode into the handler's input type: {e}"
                ))
                .with_kind("bad_input")
            })?;
            let output = handler(ctx, input).await?;
            // Into this thread's spare buffer (see `spare`), with room for an output
            // about as large as the input (an echo, a transform): no regrowth on
            // the way.
            let mut encoded = spare::take(payload.len() + 16);
            rmp_serde::encode::write_named(&mut encoded, &output)
                .map(|()| Encoded::Vec(encoded))
                .map_err(|e| {
                    HandlerError::fatal(format!("the handler's output cannot be encoded: {e}"))
                        .with_kind("bad_output")
                })
        })
    })
}
