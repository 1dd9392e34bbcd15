//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keep a pool of long-lived worker processes and feed them tasks.
#[derive(Debug, Parser)]
#[command(name = "cortex-pool", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a batch of tasks (JSON lines) on a pool and print one JSON line per task.
    Run(Box<RunArgs>),
    /// Act as the built-in demo worker (speaks the protocol on stdin/stdout).
    Worker,
}

/// `cortex-pool run [OPTIONS] [TASKS]`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A JSON-lines file of tasks; standard input when absent or "-".
    pub(crate) tasks: Option<PathBuf>,

    /// Worker processes [default: number of CPUs].
    #[arg(short = 'w', long, value_name = "N")]
    pub(crate) workers: Option<usize>,

    /// Balance policy: round-robin | least-loaded | p2c.
    #[arg(long, value_name = "NAME", default_value = "least-loaded")]
    pub(crate) policy: String,

    /// Retries after a failed first attempt.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) max_retries: u32,

    /// Base of the exponential retry backoff, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) backoff_ms: u64,

    /// Per-attempt timeout, in milliseconds (a task's `timeout_ms` overrides it).
    #[arg(long, value_name = "N", default_value_t = 300_000)]
    pub(crate) timeout_ms: u64,

    /// Transport between the pool and its workers: stdio | fifo.
    #[arg(long, value_name = "NAME", default_value = "stdio")]
    pub(crate) transport: String,

    /// Directory under which the fifo transport makes its private FIFO directory
    /// [default: $XDG_RUNTIME_DIR, else the system temp dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) fifo_dir: Option<PathBuf>,

    /// Recycle a worker after about N tasks (with jitter) [default: never].
    #[arg(long, value_name = "N")]
    pub(crate) max_tasks_per_worker: Option<u64>,

    /// Recycle a worker whose RSS exceeds N MiB, after its current task [default: no limit].
    #[arg(long, value_name = "N")]
    pub(crate) max_rss_mb: Option<u64>,

    /// Write the final metrics snapshot as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics_json: Option<PathBuf>,

    /// Write every pool event as one JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<PathBuf>,

    /// Interval of worker heartbeats, in milliseconds [default: 5000].
    #[arg(long, value_name = "N")]
    pub(crate) heartbeat_ms: Option<u64>,

    /// Silence after which a worker gets no new tasks, in milliseconds [default: 15000].
    #[arg(long, value_name = "N")]
    pub(crate) suspect_ms: Option<u64>,

    /// Silence after which a worker is killed and replaced, in milliseconds [default: 30000].
    #[arg(long, value_name = "N")]
    pub(crate) zombie_ms: Option<u64>,

    /// The worker program and its arguments (the rest of the command line);
    /// default: this binary's built-in demo worker.
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    pub(crate) worker: Vec<String>,

    /// The worker program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) worker_after_dashes: Vec<String>,
}
