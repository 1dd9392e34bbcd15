//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The largest RSS limit the flags take, in MiB (1 PiB): beyond it the byte count
/// would overflow.
pub(crate) const MAX_RSS_MB: u64 = 1 << 30;

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
    /// Run, start, stop and inspect the pool daemon.
    Daemon {
        #[command(subcommand)]
        command: DaemonCommand,
    },
    /// Submit tasks to the daemon.
    Submit(Box<SubmitArgs>),
    /// The daemon's metrics.
    Metrics(MetricsArgs),
    /// Per-worker status.
    Workers(WorkersArgs),
    /// The daemon's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Set the number of workers.
    Scale(ScaleArgs),
    /// Replace every worker, one at a time (a rolling restart).
    Roll(RollArgs),
    /// A live view of the daemon: health, throughput, workers, alerts.
    Top(Box<crate::top::TopArgs>),
    /// Each task's result line (or its state) by id.
    Result(crate::daemon::commands::ResultArgs),
    /// Wait until tasks settle and print their result lines.
    Wait(crate::daemon::commands::WaitArgs),
    /// List recent tasks.
    Tasks(crate::daemon::commands::TasksArgs),
}

/// `cortex-pool run [OPTIONS] [TASKS]`.
#[derive(Debug, Args)]
#[command(
    after_help = "Logs go to stderr at `warn` and above; `CORTEX_POOL_LOG=info` (an \
    `EnvFilter` directive) adds the workers' log lines and stderr as they come. Exit \
    status: 0 when every line is `ok`, 1 when one is `failed`, `dead_letter` or `invalid`, \
    2 for bad usage or configuration (no task ran)."
)]
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
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=super::input::MAX_DURATION_MS))]
    pub(crate) backoff_ms: u64,

    /// Per-attempt timeout, in milliseconds (a task's `timeout_ms` overrides it).
    #[arg(long, value_name = "N", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=super::input::MAX_DURATION_MS))]
    pub(crate) timeout_ms: u64,

    /// Transport between the pool and its workers: stdio | fifo.
    #[arg(long, value_name = "NAME", default_value = "stdio")]
    pub(crate) transport: String,

    /// Directory under which the fifo transport makes its private FIFO directory
    /// [default: $XDG_RUNTIME_DIR, else the system temp dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) fifo_dir: Option<PathBuf>,

    /// Tasks each worker runs at once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) concurrency: u32,

    /// Tasks written to each worker beyond --concurrency at most, so it never waits
    /// for its next one (as many as it gets through in about 5 ms at its pace);
    /// 0 keeps strict priority order [default: 512].
    #[arg(long, value_name = "N")]
    pub(crate) prefetch: Option<u32>,

    /// Bytes the tasks waiting in a worker's --prefetch window may weigh: one
    /// more is written only while those waiting weigh less, so large tasks
    /// wait in the queue instead [default: 1048576].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) prefetch_bytes: Option<u64>,

    /// Recycle a worker after about N tasks (with jitter) [default: never].
    #[arg(long, value_name = "N")]
    pub(crate) max_tasks_per_worker: Option<u64>,

    /// Recycle a worker whose RSS exceeds N MiB, after its current task [default: no limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_RSS_MB))]
    pub(crate) max_rss_mb: Option<u64>,

    /// Kill a worker whose RSS exceeds N MiB at once (its tasks are retried) [default: no limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_RSS_MB))]
    pub(crate) kill_rss_mb: Option<u64>,

    /// Write the final metrics snapshot as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics_json: Option<PathBuf>,

    /// Write every pool event as one JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<PathBuf>,

    /// Interval of worker heartbeats, in milliseconds [default: 5000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=super::input::MAX_DURATION_MS))]
    pub(crate) heartbeat_ms: Option<u64>,

    /// Silence after which a worker gets no new tasks, in milliseconds [default: 15000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=super::input::MAX_DURATION_MS))]
    pub(crate) suspect_ms: Option<u64>,

    /// Silence after which a worker is killed and replaced, in milliseconds [default: 30000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=super::input::MAX_DURATION_MS))]
    pub(crate) zombie_ms: Option<u64>,

    /// The progress line on stderr (`N / TOTAL tasks done`; TOTAL is the task
    /// count when TASKS is a file): auto draws it when stderr is a terminal. When
    /// stdout is the same terminal it is cleared before each result line.
    #[arg(long, value_name = "WHEN", value_enum, default_value = "auto")]
    pub(crate) progress: super::progress::ProgressMode,

    /// Longest input line, in bytes; a longer line is reported invalid without
    /// being read into memory whole.
    #[arg(long, value_name = "N", default_value_t = super::reader::DEFAULT_MAX_LINE_BYTES, value_parser = at_least_one_byte)]
    pub(crate) max_line_bytes: usize,

    /// The worker program and its arguments (the rest of the command line);
    /// default: this binary's built-in demo worker.
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    pub(crate) worker: Vec<String>,

    /// The worker program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) worker_after_dashes: Vec<String>,
}

/// Where the daemon's configuration comes from (also how clients find its socket).
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Override one key (highest precedence; repeatable), e.g. `--set pool_size=4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

/// `cortex-pool daemon …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Run in the foreground (systemd, containers); logs to stderr.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Started by `daemon start`: become a session leader.
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Detach, write the PID file, log to a file (appending).
    Start {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Drain gracefully, wait for the exit, escalate; exit 0 only when it is gone.
    Stop {
        #[command(flatten)]
        config: ConfigArgs,
        /// Seconds to wait for a graceful drain before forcing.
        #[arg(long, value_name = "N", default_value_t = 60)]
        timeout_s: u64,
    },
    /// Stop (when running), then start.
    Restart {
        #[command(flatten)]
        config: ConfigArgs,
        /// Seconds to wait for a graceful drain before forcing.
        #[arg(long, value_name = "N", default_value_t = 60)]
        timeout_s: u64,
    },
    /// Pool, workers, queue, health; exit 3 when not running.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the full status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a stale PID file, socket and FIFO directory left by a dead daemon.
    Cleanup {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// `cortex-pool submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Submit one task of this type (instead of reading TASKS).
    #[arg(long = "type", value_name = "T")]
    pub(crate) task_type: Option<String>,
    /// The task's payload, as JSON (with --type).
    #[arg(long, value_name = "JSON")]
    pub(crate) payload: Option<String>,
    /// Priority 0 (highest) … 100; for lines that set none.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) priority: Option<u8>,
    /// Per-attempt timeout in milliseconds; for lines that set none.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=super::input::MAX_DURATION_MS))]
    pub(crate) timeout_ms: Option<u64>,
    /// Wait and print one JSON line per task (the `run` output format).
    #[arg(long)]
    pub(crate) wait: bool,
    /// Act on the NATS JetStream queue at URL directly (no daemon).
    #[arg(long, value_name = "URL")]
    pub(crate) queue: Option<String>,
    /// A JSON-lines file of tasks; standard input when absent or "-".
    pub(crate) tasks: Option<PathBuf>,
}

/// `cortex-pool metrics`.
#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// JSON (the default).
    #[arg(long, conflicts_with = "prometheus")]
    pub(crate) json: bool,
    /// The Prometheus text exposition format.
    #[arg(long)]
    pub(crate) prometheus: bool,
}

/// `cortex-pool workers`.
#[derive(Debug, Args)]
pub(crate) struct WorkersArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `cortex-pool dlq …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List the dead letters as JSON.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// Act on the NATS JetStream queue at URL directly (no daemon).
        #[arg(long, value_name = "URL")]
        queue: Option<String>,
    },
    /// Put dead letters back in the queue under their ids, attempts reset (all
    /// when no ID is given).
    Retry {
        #[command(flatten)]
        config: ConfigArgs,
        /// Act on the NATS JetStream queue at URL directly (no daemon).
        #[arg(long, value_name = "URL")]
        queue: Option<String>,
        /// Task ids to retry.
        ids: Vec<String>,
    },
    /// Remove every dead letter, printing each id removed.
    Purge {
        #[command(flatten)]
        config: ConfigArgs,
        /// Act on the NATS JetStream queue at URL directly (no daemon).
        #[arg(long, value_name = "URL")]
        queue: Option<String>,
    },
}

/// `cortex-pool scale N`.
#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// The new number of workers, within min_workers..=max_workers.
    pub(crate) size: usize,
}

/// `cortex-pool roll`.
#[derive(Debug, Args)]
pub(crate) struct RollArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
}

/// A byte count of at least 1 (a line limit of 0 would refuse every line).
fn at_least_one_byte(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    /// `submit --priority` is checked as it is read, as `run`'s durations are:
    /// a usage error (exit 2) past 100, not a refusal of every line.
    #[test]
    fn a_submit_priority_past_100_is_a_usage_error() {
        let parse = |p: &str| Cli::try_parse_from(["cortex-pool", "submit", "--priority", p, "t"]);
        assert!(parse("100").is_ok());
        let e = parse("101").unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    /// `tasks --status` is checked as it is read, against the states the
    /// daemon's listing takes: a usage error (exit 2) naming the value and
    /// every state, before any daemon is asked.
    #[test]
    fn a_tasks_status_that_names_no_state_is_a_usage_error() {
        let parse = |s: &str| Cli::try_parse_from(["cortex-pool", "tasks", "--status", s]);
        for state in task_source::TaskState::ALL {
            assert!(parse(state.as_str()).is_ok(), "{}", state.as_str());
        }
        let e = parse("bogus").unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains(
                "unknown status \"bogus\": expected one of queued, running, retrying, \
                 ok, failed, dead_letter, cancelled"
            ),
            "{e}"
        );
    }
}
