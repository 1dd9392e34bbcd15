//! Write workers for cortex-pool: register async handlers by task type, and the SDK
//! speaks the protocol with the manager — handshake, heartbeats, replies,
//! cancellation and shutdown.
//!
//! A worker is a long-lived process the pool starts and feeds with tasks. Its `main`
//! builds a [`Worker`], registers one handler per task type and calls
//! [`Worker::run`], which finds the link to the manager in the environment the manager
//! set (`CORTEX_TRANSPORT`, see `pool_core::transport::env`).
//!
//! # Never write to stdout
//! With the `stdio` transport, stdout *is* the protocol stream. [`Worker::run`] moves
//! the protocol to private descriptors before any handler runs and points fd 1 at
//! stderr, so a stray `println!` ends up in the worker's logs instead of corrupting a
//! frame — but log to stderr (or through the manager) on purpose, not by accident.
//!
//! # Threads
//! [`Worker::run`] serves on a single-threaded tokio runtime: the thread that
//! waits for the manager's frames runs the handlers and writes the replies, with
//! no hand-over between threads (a pool runs one worker process per core).
//! [`Worker::threads`] asks for more, for workers that run several tasks at once
//! and compute between awaits, or whose handlers call
//! `tokio::task::block_in_place`.
//!
//! # Payloads
//! Task payloads and results are MessagePack maps: a handler's input type is decoded
//! with `rmp_serde::from_slice` (an empty payload as nil, which a `()` or `Option<_>`
//! input takes), its output encoded with `rmp_serde::to_vec_named`.
//!
//! # Errors a manager can see
//! | kind | when | retryable |
//! |---|---|---|
//! | `handler` (or custom) | the handler returned a [`HandlerError`] | as the error says |
//! | `panic` | the handler panicked; the worker keeps serving | yes |
//! | `unknown_type` | no handler is registered for the task type | no |
//! | `bad_input` | the payload does not decode into the handler's input | no |
//! | `bad_output` | the handler's output cannot be encoded | no |
//! | `cancelled` | the task was cancelled and the handler returned an error, or it was cancelled while waiting for a slot (`hello.concurrency`) | no |
//! | `result_too_large` | the encoded result exceeds the frame limit | no |
//! | `shutting_down` | the task arrived after a graceful shutdown began | yes |
//!
//! # Examples
//! A worker with one handler, served here over in-memory streams the way a manager
//! would drive it:
//! ```
//! use bytes::BytesMut;
//! use pool_core::protocol::{decode_from_worker, encode_frame, FrameCodec, FromWorker, ToWorker, PROTOCOL_VERSION};
//! use tokio_util::codec::Decoder;
//! use serde::{Deserialize, Serialize};
//! use worker_sdk::{HandlerError, Stopped, TaskContext, Worker};
//!
//! #[derive(Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! #[derive(Serialize)]
//! struct Sum { sum: i64 }
//!
//! fn worker() -> Worker {
//!     Worker::new().handle("add", |ctx: TaskContext, input: Add| async move {
//!         if ctx.is_cancelled() {
//!             return Err(HandlerError::fatal("cancelled"));
//!         }
//!         let sum = input.a.checked_add(input.b).ok_or_else(|| HandlerError::fatal("overflow"))?;
//!         Ok(Sum { sum })
//!     })
//! }
//!
//! // In a real worker: `fn main() -> std::process::ExitCode { worker().run() }`.
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut input = BytesMut::new();
//! let hello = ToWorker::Hello {
//!     version: PROTOCOL_VERSION,
//!     worker_id: "worker-1",
//!     heartbeat_ms: 0,
//!     max_frame: 1 << 20,
//! };
//! encode_frame(&hello, &mut input, 1 << 20)?;
//! encode_frame(&ToWorker::Shutdown { graceful: true }, &mut input, 1 << 20)?;
//!
//! // The worker writes from its own thread; collect what it sends in a shared buffer.
//! let output = Collect::default();
//! let stopped = worker().serve(&input[..], output.clone()).await?;
//! assert_eq!(stopped, Stopped::Shutdown);
//!
//! let mut sent = BytesMut::from(&output.0.lock().unwrap()[..]);
//! let ready = FrameCodec::new(1 << 20).decode(&mut sent)?.expect("a ready frame");
//! assert!(matches!(
//!     decode_from_worker(&ready)?,
//!     FromWorker::Ready { version: PROTOCOL_VERSION, ref task_types, .. } if task_types == &["add"]
//! ));
//! # Ok(())
//! # }
//! # #[derive(Clone, Default)]
//! # struct Collect(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
//! # impl std::io::Write for Collect {
//! #     fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
//! #         self.0.lock().unwrap().extend_from_slice(buf);
//! #         Ok(buf.len())
//! #     }
//! #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(clippy::print_stdout)]
#![warn(clippy::unwrap_used)]

mod broken;
mod bytes_path;
mod cancel;
mod context;
mod dispatch;
mod error;
mod fd_writer;
mod handler;
mod heartbeat;
mod idle_read;
mod link;
mod registry;
mod running;
mod spare;
mod stats;
mod task_frames;
mod wire;
mod worker;
mod writer;

pub use context::TaskContext;
pub use dispatch::HOLD_REPLIES;
pub use error::{HandlerError, ServeError};
pub use worker::{Stopped, Worker};
