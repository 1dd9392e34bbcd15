//! The pool daemon: a service that keeps a pool running, takes tasks and answers
//! queries over a Unix control socket, and stops without leaving anything behind.
//!
//! - `service` — `daemon run`: PID file, socket, pool, signals, clean exit.
//! - `commands` — the client commands (`daemon start|stop|…`, `submit`, …).
//! - `config` — TOML file + environment + `--set` → validated [`config::Settings`].
//! - `paths`, `pidfile` — the runtime directory and the locked PID file.
//! - `protocol`, `server`, `client` — the control socket's requests and replies;
//!   `doc` — a JSON document in a reply, sent from its text; `hangup` — a
//!   connection's peer hanging up, seen without reading what it sent.
//! - `signals` — drain, forced stop, reload with a rolling restart.
//! - `event_log` — the pool's events and the restart breaker in the daemon's log.
//! - `health_view` — the active alerts in `status`, and why health is what it is.
//! - `prometheus`, `http` — the exposition format and the optional scrape endpoint.

pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod doc;
pub(crate) mod durable;
pub(crate) mod event_log;
pub(crate) mod exposition;
pub(crate) mod hangup;
pub(crate) mod health_view;
pub(crate) mod http;
pub(crate) mod paths;
pub(crate) mod pidfile;
#[cfg(test)]
mod pool_failure_tests;
pub(crate) mod prometheus;
pub(crate) mod protocol;
pub(crate) mod queue;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod signals;
pub(crate) mod state;
#[cfg(test)]
pub(crate) mod test_daemon;

use std::path::Path;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DaemonError {
    /// Another daemon holds the PID file.
    #[error("already running (pid {0})")]
    AlreadyRunning(u32),
    /// A file or directory could not be made or used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or directory could not be made or used; the error names it.
    #[error("{0}")]
    Fs(std::io::Error),
    /// The pool did not start (its workers cannot be started).
    #[error("the pool did not start: {0}")]
    PoolStart(String),
    /// Anything else that stopped the start.
    #[error("{0}")]
    Start(String),
}

impl DaemonError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
