//! Type erasure of user handlers: decode the input, call, encode the output.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use bytes::Bytes;
use futures_util::future::{Fuse, FutureExt};
use pool_core::protocol::emit::bin_head_len;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bytes_path::{decode_input, large_bin};
use crate::{spare, HandlerError, TaskContext};

/// What an erased handler produces: the encoded result, or why there is none.
pub(crate) type HandlerOutput = Result<Encoded, HandlerError>;

/// A result's bytes: encoded by the SDK from a typed output, or given as they are by
/// a raw handler (no copy either way until the reply frame is written).
pub(crate) enum Encoded {
    Vec(Vec<u8>),
    Bytes(Bytes),
    /// A MessagePack `bin` of these bytes: a large output of bytes (see
    /// [`encode_output`]), whose `bin` marker is written before the bytes are
    /// written from their own buffer.
    Bin(Bytes),
}

impl Encoded {
    /// The result's length as it is written (a `bin`'s marker included).
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Vec(v) => v.len(),
            Self::Bytes(b) => b.len(),
            Self::Bin(b) => bin_head_len(b.len()) + b.len(),
        }
    }
}

/// The rest of a handler's future, with its types erased, for a task that did not
/// finish in its first poll.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = HandlerOutput> + Send>>;

/// What a handler's future gave: its output, or the panic it raised.
pub(crate) type Caught = Result<HandlerOutput, Box<dyn Any + Send>>;

/// What starting a task gave.
pub(crate) enum Started {
    /// The handler finished (or panicked) in its first poll.
    Done(Caught),
    /// The handler waits for something: its future, polled once already.
    Pending(BoxFuture),
}

/// A registered handler with its types erased.
pub(crate) trait Start: Send + Sync {
    /// Calls the handler with the task's context and raw MessagePack payload, and
    /// polls its future once, in place (a panic in either is caught).
    fn start(&self, ctx: TaskContext, payload: Bytes) -> Started;
}

/// A registered handler, shared by the tasks of its type.
pub(crate) type ErasedHandler = Arc<dyn Start>;

/// Wraps a raw handler (bytes in, bytes out) for the dispatcher.
pub(crate) fn erase_raw<F, Fut>(handler: F) -> ErasedHandler
where
    F: Fn(TaskContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
{
    reusing(move |ctx: TaskContext, payload: Bytes| {
        let called = handler(ctx, payload);
        async move { called.await.map(Encoded::Bytes) }
    })
}

/// Wraps a typed handler so the dispatcher can call it with raw bytes.
///
/// The payload is decoded and the handler called as the task starts (on the
/// dispatcher); the output is encoded inside the returned future, at its end: on the
/// dispatcher when it finishes in its first poll, on the task's own tokio task if
/// it waits.
pub(crate) fn erase<T, O, F, Fut>(handler: F) -> ErasedHandler
where
    T: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
{
    reusing(move |ctx: TaskContext, payload: Bytes| {
        // Room for an output about as large as the input (an echo, a transform):
        // no regrowth on the way.
        let room = payload.len() + 16;
        let called = decode_input(payload)
            .map(|input: T| handler(ctx, input))
            .map_err(|e| {
                HandlerError::fatal(format!(
                    "payload does not decode into the handler's input type: {e}"
                ))
                .with_kind("bad_input")
            });
        async move { encode_output(called?.await?, room) }
    })
}

/// Encodes a typed handler's output into this thread's spare buffer (see
/// `spare`), with room for `room` bytes.
///
/// An output of bytes of [`APART_MIN`](crate::dispatch::APART_MIN) bytes or
/// more is not copied ([`Encoded::Bin`], see [`bytes_path`](crate::bytes_path)).
fn encode_output<O: Serialize + 'static>(output: O, room: usize) -> HandlerOutput {
    let mut output = Some(output);
    if let Some(large) = large_bin(&mut output) {
        return Ok(Encoded::Bin(large));
    }
    // Still `Some` (only a large `bin` is taken), and MessagePack writes
    // `Some(value)` as `value`.
    let mut encoded = spare::take(room);
    rmp_serde::encode::write_named(&mut encoded, &output)
        .map(|()| Encoded::Vec(encoded))
        .map_err(|e| {
            HandlerError::fatal(format!("the handler's output cannot be encoded: {e}"))
                .with_kind("bad_output")
        })
}

/// Erases `make` (the handler, wrapped to take raw bytes) behind [`Start`].
fn reusing<M, Fut>(make: M) -> ErasedHandler
where
    M: Fn(TaskContext, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerOutput> + Send + 'static,
{
    Arc::new(Reusing {
        make,
        spare: Mutex::new(None),
    })
}

/// A handler and the box its futures run in.
///
/// A future is polled where it will stay (it may not move once polled), so each
/// task's future lives in a box from the start. The box of a future that finished
/// in its first poll — most of them — is kept and serves the next task of this
/// type: an allocation and a free fewer per task. The box of a future that waits
/// goes with it onto its tokio task.
struct Reusing<M, Fut> {
    make: M,
    /// Empty (a terminated [`Fuse`]) between tasks.
    spare: Mutex<Option<Pin<Box<Fuse<Fut>>>>>,
}

impl<M, Fut> Start for Reusing<M, Fut>
where
    M: Fn(TaskContext, Bytes) -> Fut + Send + Sync,
    Fut: Future<Output = HandlerOutput> + Send + 'static,
{
    fn start(&self, ctx: TaskContext, payload: Bytes) -> Started {
        // Only the dispatcher starts tasks: the lock is never contended, and it is
        // held across the handler's first poll so that it is taken once.
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        let mut slot = spare.take().unwrap_or_else(|| Box::pin(Fuse::terminated()));
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            slot.set((self.make)(ctx, payload).fuse());
            slot.as_mut()
                .poll(&mut std::task::Context::from_waker(Waker::noop()))
        }));
        match polled {
            // `Fuse` dropped the finished future: the box is empty again.
            Ok(Poll::Ready(output)) => {
                *spare = Some(slot);
                Started::Done(Ok(output))
            }
            Ok(Poll::Pending) => Started::Pending(slot),
            // The future that panicked goes with its box.
            Err(panic) => Started::Done(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::APART_MIN;
    use serde_bytes::ByteBuf;

    fn ctx() -> TaskContext {
        TaskContext::for_test(1, "t")
    }

    /// Where the spare box is, if there is one.
    fn spare_at<M, Fut>(handler: &Reusing<M, Fut>) -> Option<*const Fuse<Fut>> {
        let spare = handler.spare.lock().expect("not poisoned");
        spare.as_ref().map(|slot| &**slot as *const Fuse<Fut>)
    }

    /// The result's bytes as the reply frame carries them.
    fn written(encoded: Encoded) -> Vec<u8> {
        match encoded {
            Encoded::Vec(v) => v,
            Encoded::Bytes(b) => b.to_vec(),
            Encoded::Bin(b) => {
                let mut marker = pool_core::protocol::emit::Scratch::new();
                marker.bin_head(b.len());
                [marker.bytes(), &b[..]].concat()
            }
        }
    }

    fn output(started: Started) -> Vec<u8> {
        match started {
            Started::Done(Ok(Ok(encoded))) => written(encoded),
            Started::Done(Ok(Err(e))) => panic!("handler error: {e}"),
            Started::Done(Err(_)) => panic!("handler panicked"),
            Started::Pending(_) => panic!("pending"),
        }
    }

    #[test]
    fn the_box_of_a_future_that_finished_at_once_serves_the_next_task() {
        let handler = Reusing {
            make: |_ctx: TaskContext, payload: Bytes| async move { Ok(Encoded::Bytes(payload)) },
            spare: Mutex::new(None),
        };
        assert_eq!(output(handler.start(ctx(), Bytes::from_static(b"a"))), b"a");
        let first = spare_at(&handler).expect("kept");
        assert_eq!(output(handler.start(ctx(), Bytes::from_static(b"b"))), b"b");
        assert_eq!(spare_at(&handler), Some(first));
    }

    #[tokio::test]
    async fn a_future_that_waits_takes_its_box_along_and_finishes_on_its_own() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
        let rx = Mutex::new(Some(rx));
        let handler = Reusing {
            make: |_ctx: TaskContext, _payload: Bytes| {
                let rx = rx.lock().expect("not poisoned").take();
                async move {
                    let rx = rx.ok_or_else(|| HandlerError::fatal("second call"))?;
                    let got = rx.await.map_err(|_| HandlerError::fatal("dropped"))?;
                    Ok(Encoded::Bytes(got))
                }
            },
            spare: Mutex::new(None),
        };
        let Started::Pending(future) = handler.start(ctx(), Bytes::new()) else {
            panic!("finished without its answer");
        };
        assert_eq!(spare_at(&handler), None, "the box went with the future");
        tx.send(Bytes::from_static(b"late"))
            .expect("receiver alive");
        let encoded = future.await.expect("no handler error");
        assert_eq!(written(encoded), b"late");
    }

    #[test]
    fn a_panic_in_the_first_poll_is_caught_and_the_next_task_runs() {
        let handler = Reusing {
            make: |_ctx: TaskContext, payload: Bytes| async move {
                assert!(!payload.is_empty(), "boom");
                Ok(Encoded::Bytes(payload))
            },
            spare: Mutex::new(None),
        };
        assert!(matches!(
            handler.start(ctx(), Bytes::new()),
            Started::Done(Err(_))
        ));
        assert_eq!(spare_at(&handler), None, "the panicked future is dropped");
        assert_eq!(output(handler.start(ctx(), Bytes::from_static(b"x"))), b"x");
    }

    /// A typed handler that returns a `ByteBuf` of `len` bytes and records
    /// where its buffer is.
    fn bytes_out(len: usize, at: Arc<Mutex<usize>>) -> ErasedHandler {
        erase(move |_ctx: TaskContext, (): ()| {
            let out = ByteBuf::from(vec![7u8; len]);
            *at.lock().expect("not poisoned") = out.as_ptr() as usize;
            async move { Ok::<_, HandlerError>(out) }
        })
    }

    fn started_output(started: Started) -> Encoded {
        match started {
            Started::Done(Ok(Ok(encoded))) => encoded,
            _ => panic!("the handler did not finish with a result"),
        }
    }

    #[test]
    fn a_large_bytebuf_output_is_written_from_its_own_buffer_as_serde_would_encode_it() {
        let at = Arc::new(Mutex::new(0));
        let handler = bytes_out(APART_MIN, at.clone());
        let nil = Bytes::from_static(&[0xc0]);
        let encoded = started_output(handler.start(ctx(), nil));
        let Encoded::Bin(bytes) = &encoded else {
            panic!("a large ByteBuf was copied");
        };
        assert_eq!(bytes.as_ptr() as usize, *at.lock().expect("not poisoned"));
        assert_eq!(encoded.len(), 5 + APART_MIN);
        let serde = rmp_serde::to_vec_named(&ByteBuf::from(vec![7u8; APART_MIN])).expect("encode");
        assert_eq!(written(encoded), serde);
    }

    #[test]
    fn a_small_bytebuf_output_is_encoded_into_the_spare_buffer() {
        let handler = bytes_out(APART_MIN - 1, Arc::new(Mutex::new(0)));
        let nil = Bytes::from_static(&[0xc0]);
        let encoded = started_output(handler.start(ctx(), nil));
        assert!(matches!(encoded, Encoded::Vec(_)));
        let serde =
            rmp_serde::to_vec_named(&ByteBuf::from(vec![7u8; APART_MIN - 1])).expect("encode");
        assert_eq!(written(encoded), serde);
    }

    #[test]
    fn other_outputs_encode_as_serde_encodes_them() {
        let handler = erase(|_ctx: TaskContext, n: u32| async move {
            Ok::<_, HandlerError>((n, Some("x"), None::<u8>))
        });
        let input = Bytes::from(rmp_serde::to_vec(&5u32).expect("encode"));
        let encoded = started_output(handler.start(ctx(), input));
        let serde = rmp_serde::to_vec_named(&(5u32, Some("x"), None::<u8>)).expect("encode");
        assert_eq!(written(encoded), serde);
    }
}
