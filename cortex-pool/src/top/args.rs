//! `cortex-pool top`'s command line.

use clap::Args;

use crate::cli::args::ConfigArgs;

/// `cortex-pool top [--interval-ms N] [--once] [--queue URL]`.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Time between two refreshes, in milliseconds (100 … 60000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub(crate) interval_ms: u64,
    /// Print one plain-text frame (80×24, or the terminal's size) and exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// Watch the shared NATS queue at URL instead of one daemon: tasks waiting,
    /// tasks held by daemons, dead letters (with `d` to list and retry them).
    /// The other `queue*` keys (credentials, TLS) come from --config/--set.
    #[arg(long, value_name = "URL")]
    pub(crate) queue: Option<String>,
}
