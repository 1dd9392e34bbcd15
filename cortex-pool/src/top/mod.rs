//! `cortex-pool top`: a live terminal view of a running daemon (ratatui +
//! crossterm), and `--once` for one plain-text frame.
//!
//! Everything it shows comes from the control socket, through the same requests
//! as the CLI commands (`status`, `alerts`, `dlq list`), and every action it takes
//! is one of those commands' requests (`scale`, `roll`, `dlq retry`), so it needs
//! exactly the same authorisation.
//!
//! - `args` — the command line.
//! - `source` — one snapshot of the daemon (status and recent alerts).
//! - `queue_watch` — `--queue URL`: snapshots and dead-letter actions straight
//!   from the shared NATS queue instead of a daemon.
//! - `history` — what successive snapshots tell: throughput, derived events.
//! - `app` — the screen's state and what each key does.
//! - `actions` — the control requests a key asks for, run in the background.
//! - `terminal` — raw mode and the alternate screen, restored on every exit.
//! - `ui` — one file per panel.
//! - `run` — the refresh loop and `--once`.

mod actions;
mod app;
mod args;
mod history;
mod queue_watch;
mod run;
mod source;
mod terminal;
mod ui;

pub(crate) use args::TopArgs;
pub(crate) use run::top;
