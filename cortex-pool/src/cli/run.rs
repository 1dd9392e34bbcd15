//! `cortex-pool run`: JSON lines in, one JSON line per task out, in completion order.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pool_core::{Completions, Pool, PoolConfig, PoolSettings, Transport, WorkerCommand};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use super::args::RunArgs;
use super::collect::{collect, Accepted};
use super::dead_pool;
use super::events_file::{self, EventsFile};
use super::feed::{feed, Reading, Stages};
use super::interrupt::{self, Phase};
use super::output::Line;
use super::progress::{self, Progress};
use super::summary::Tally;
use super::EXIT_USAGE;
use crate::pool_settings::TransportKind;

/// How long the runtime's shutdown waits for blocking threads (a read of stdin).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// How long `run` waits, after a second signal, for the pool it asked to stop
/// at once to let go (a kill and a reap per worker: milliseconds), so that the
/// events file still ends with `pool-shutdown`.
const STOP_WAIT: Duration = Duration::from_millis(1_000);

/// How many batches of finished lines, and of accepted tasks, may wait between
/// the stages: with the batch sizes, at most 2 048 lines and 1 024 tasks, so a
/// slow standard output soon stops the reading of input.
const CHANNEL_DEPTH: usize = 8;

/// A usage or configuration problem: exit status 2.
struct UsageError(String);

impl<E: std::fmt::Display> From<E> for UsageError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// Runs the command; exit 0 when every task is ok, 1 when any is not, 2 for usage
/// or configuration errors.
pub(crate) fn run(args: RunArgs) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage_exit(&format!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(run_async(args));
    // A read of standard input may still block a thread; do not wait for it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(UsageError(message)) => usage_exit(&message),
    }
}

fn usage_exit(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "cortex-pool: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORTEX_POOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The pool's configuration from the flags, through the loader the daemon uses.
fn config(args: &RunArgs) -> Result<PoolConfig, UsageError> {
    let workers = match args.workers {
        Some(0) => return Err(UsageError("--workers must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let settings = PoolSettings {
        pool_size: Some(workers),
        max_retries: Some(args.max_retries),
        retry_backoff_ms: Some(args.backoff_ms),
        task_timeout_ms: Some(args.timeout_ms),
        max_queue_len: Some(10_000),
        heartbeat_interval_ms: args.heartbeat_ms,
        suspect_after_ms: args.suspect_ms,
        zombie_after_ms: args.zombie_ms,
        max_tasks_per_worker: args.max_tasks_per_worker,
        worker_concurrency: Some(args.concurrency),
        prefetch: args.prefetch,
        prefetch_bytes: args
            .prefetch_bytes
            .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX)),
        max_rss_mb: args.max_rss_mb,
        kill_rss_mb: args.kill_rss_mb,
        ..PoolSettings::default()
    };
    settings.resolve().map_err(|e| {
        UsageError(format!(
            "invalid flags: {}",
            in_flags(&format!("{}: {}", e.key, e.message))
        ))
    })
}

/// The settings keys `run`'s flags set, and the flags: an error about one
/// names what the user typed.
const FLAGS: &[(&str, &str)] = &[
    ("heartbeat_interval_ms", "--heartbeat-ms"),
    ("suspect_after_ms", "--suspect-ms"),
    ("zombie_after_ms", "--zombie-ms"),
    ("worker_concurrency", "--concurrency"),
    ("pool_size", "--workers"),
    ("max_retries", "--max-retries"),
    ("retry_backoff_ms", "--backoff-ms"),
    ("task_timeout_ms", "--timeout-ms"),
    ("max_tasks_per_worker", "--max-tasks-per-worker"),
    ("max_rss_mb", "--max-rss-mb"),
    ("kill_rss_mb", "--kill-rss-mb"),
    ("prefetch_bytes", "--prefetch-bytes"),
    ("prefetch", "--prefetch"),
];

/// `text` with each settings key of [`FLAGS`] replaced by its flag.
fn in_flags(text: &str) -> String {
    let mut out = text.to_owned();
    for (key, flag) in FLAGS {
        out = out.replace(key, flag);
    }
    out
}

fn transport(
    args: &RunArgs,
    start_timeout: std::time::Duration,
) -> Result<Arc<dyn Transport>, UsageError> {
    let kind: TransportKind = args.transport.parse().map_err(UsageError)?;
    if args.fifo_dir.is_some() && kind != TransportKind::Fifo {
        return Err(UsageError("--fifo-dir needs --transport fifo".into()));
    }
    kind.open(args.fifo_dir.as_deref(), start_timeout)
        .map_err(UsageError)
}

fn worker_command(args: &RunArgs) -> Result<WorkerCommand, UsageError> {
    // `--worker` takes the rest of the command line, a `--` included (it is
    // the worker's), so at most one of the two holds a command.
    let cmd = match (args.worker.is_empty(), args.worker_after_dashes.is_empty()) {
        (false, _) => &args.worker,
        (true, false) => &args.worker_after_dashes,
        (true, true) => {
            let me = std::env::current_exe().map_err(|e| {
                UsageError(format!(
                    "cannot find this program to run its demo worker: {e}"
                ))
            })?;
            return Ok(WorkerCommand::new(me).args(["worker"]));
        }
    };
    let (program, rest) = cmd
        .split_first()
        .ok_or_else(|| UsageError("--worker needs a program".into()))?;
    Ok(WorkerCommand::new(program).args(rest))
}

/// Standard input as the task source; a directory there is a usage error,
/// as a task file that is one is.
fn stdin_tasks() -> Result<Box<dyn AsyncRead + Unpin + Send>, UsageError> {
    use std::os::fd::AsFd;
    let is_dir = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata())
        .is_ok_and(|meta| meta.is_dir());
    if is_dir {
        return Err(UsageError(
            "cannot read tasks from standard input: it is a directory".into(),
        ));
    }
    Ok(Box::new(tokio::io::stdin()))
}

async fn open_tasks(
    path: &Option<PathBuf>,
) -> Result<Box<dyn AsyncRead + Unpin + Send>, UsageError> {
    match path {
        None => stdin_tasks(),
        Some(p) if p.as_os_str() == "-" => stdin_tasks(),
        Some(p) => {
            let file = tokio::fs::File::open(p)
                .await
                .map_err(|e| UsageError(format!("cannot open {}: {e}", p.display())))?;
            let meta = file
                .metadata()
                .await
                .map_err(|e| UsageError(format!("cannot read {}: {e}", p.display())))?;
            if meta.is_dir() {
                return Err(UsageError(format!(
                    "cannot read tasks from {}: it is a directory",
                    p.display()
                )));
            }
            Ok(Box::new(file))
        }
    }
}

async fn run_async(args: RunArgs) -> Result<bool, UsageError> {
    let mut signals = interrupt::Signals::install()
        .map_err(|e| UsageError(format!("cannot install the signal handlers: {e}")))?;
    let mut config = config(&args)?;
    if args.events.is_some() {
        config.event_capacity = config.event_capacity.max(events_file::CHANNEL_CAPACITY);
    }
    let command = worker_command(&args)?;
    let policy = policy_balance::by_name(&args.policy)?;
    let tasks = open_tasks(&args.tasks).await?;
    // Made before any task runs: a path that cannot be written is a usage
    // error while no task has run yet.
    let metrics_file = match &args.metrics_json {
        Some(path) => Some((
            path.clone(),
            std::fs::File::create(path)
                .map_err(|e| UsageError(format!("cannot create {}: {e}", path.display())))?,
        )),
        None => None,
    };
    let events_file = match &args.events {
        Some(path) => Some((
            std::fs::File::create(path)
                .map_err(|e| UsageError(format!("cannot create {}: {e}", path.display())))?,
            path.clone(),
        )),
        None => None,
    };
    let mut builder = Pool::builder_arc(transport(&args, config.start_timeout)?, command)
        .config(config)
        .boxed_policy(policy);
    let event_writer =
        events_file.map(|(file, path)| EventsFile::start(builder.subscribe(), file, path));
    let progress = progress_line(&args).await;
    let started = Instant::now();
    // A signal while the workers start (a handshake may take its whole
    // timeout) ends `run` there: no task has run, nothing is left to drain.
    let pool = tokio::select! {
        started = builder.start() => started.map_err(|e| UsageError(e.to_string()))?,
        name = signals.next() => {
            return Err(UsageError(format!(
                "interrupted ({name}) while the workers started; no task ran"
            )));
        }
    };

    let (lines_tx, lines_rx) = mpsc::channel::<Vec<Line>>(CHANNEL_DEPTH);
    let (accepted_tx, accepted_rx) = mpsc::channel::<Vec<Accepted>>(CHANNEL_DEPTH);
    let submitted = Arc::new(AtomicU64::new(0));
    let (phase, stopper) = signals.watch(pool.clone());
    let done = Completions::new();
    let feeder = {
        let (phase, pool, submitted) = (phase.clone(), pool.clone(), submitted.clone());
        let (sink, lines) = (done.sink(), lines_tx.clone());
        let max_line_bytes = args.max_line_bytes;
        tokio::spawn(async move {
            let stages = Stages {
                pool: &pool,
                done: &sink,
                lines: &lines,
                accepted: &accepted_tx,
            };
            feed(phase, stages, tasks, max_line_bytes, submitted).await
        })
    };
    tokio::spawn(collect(
        pool.clone(),
        done,
        accepted_rx,
        lines_tx,
        phase.clone(),
    ));
    let dead_pool = tokio::spawn(dead_pool::watch(
        pool.clone(),
        stopper.clone(),
        phase.clone(),
    ));
    let writer_submitted = submitted.clone();
    let (mut tally, output_failed) = tokio::task::spawn_blocking(move || {
        write_lines(lines_rx, writer_submitted, progress, &stopper)
    })
    .await
    .map_err(|e| UsageError(format!("the output writer failed: {e}")))?;
    // Every line is written: the watch has nothing left to stop.
    dead_pool.abort();
    let pool_gave_up = dead_pool.await.ok().flatten();
    let reading = feeder.await.unwrap_or(Reading::Stopped);
    let elapsed = started.elapsed();
    let metrics = pool.metrics();
    let mut metrics_failed = None;
    if let Some((path, mut file)) = metrics_file {
        let json = serde_json::to_vec_pretty(&metrics)?;
        if let Err(e) = file.write_all(&json) {
            metrics_failed = Some(format!("cannot write {}: {e}", path.display()));
        }
    }
    // After a second signal the pool stops at once (its workers killed),
    // and is waited for only a bounded time; its events still end with
    // `pool-shutdown` when it let go in that time.
    let mut stopping = phase.clone();
    let stop_now = pool.clone();
    let events_path = args.events.clone();
    let finished = async {
        pool.shutdown().await;
        drop(pool);
        match event_writer {
            Some(writer) => writer.finish().await,
            None => None,
        }
    };
    tokio::pin!(finished);
    let events_failed = tokio::select! {
        biased;
        () = interrupt::reached(&mut stopping, Phase::Stopping) => {
            let stopped = async {
                stop_now.shutdown_now().await;
                drop(stop_now);
                (&mut finished).await
            };
            tokio::time::timeout(STOP_WAIT, stopped)
                .await
                .unwrap_or_else(|_| {
                    events_path.map(|path| {
                        format!(
                            "the pool did not let go within {} ms of the second signal; {} ends \
                             without pool-shutdown",
                            STOP_WAIT.as_millis(),
                            path.display()
                        )
                    })
                })
        }
        failed = &mut finished => failed,
    };
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "{}", tally.render(elapsed, Some(&metrics)));
    let mut ok = tally.all_ok();
    let unread = (reading == Reading::Stopped).then(|| {
        "stopped before the end of the input: the lines after it were not read".to_owned()
    });
    for failure in [pool_gave_up, unread, output_failed.map(|e| format!("cannot write the results to standard output ({e}); stopped at the first failed write")), metrics_failed, events_failed].into_iter().flatten() {
        let _ = writeln!(stderr, "cortex-pool: {failure}");
        ok = false;
    }
    Ok(ok)
}

/// The progress line `--progress` asks for; a task file's tasks are counted first
/// when it is drawn.
async fn progress_line(args: &RunArgs) -> Progress {
    let path = args.tasks.clone().filter(|p| p.as_os_str() != "-");
    let mode = args.progress;
    let probe = Progress::new(mode, None);
    match path {
        Some(path) if probe.enabled() => {
            let total = tokio::task::spawn_blocking(move || progress::count_tasks(&path))
                .await
                .ok()
                .flatten();
            Progress::new(mode, total)
        }
        _ => probe,
    }
}

/// Writes lines to stdout as they come, with the progress line on stderr. Runs on
/// a blocking thread: a slow standard output blocks it, not the runtime.
///
/// The first write that fails (a reader that went away, a full disk) stops the
/// run at once through `stopper`: the lines after it are counted, not written,
/// and the error is returned beside the tally.
fn write_lines(
    mut lines: mpsc::Receiver<Vec<Line>>,
    submitted: Arc<AtomicU64>,
    mut progress: Progress,
    stopper: &interrupt::Stopper,
) -> (Tally, Option<std::io::Error>) {
    let mut tally = Tally::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Called on the first failed write only (nothing is written after it).
    let fail = |e: std::io::Error| {
        stopper.stop();
        Some(e)
    };
    let mut failed = None;
    while let Some(batch) = lines.blocking_recv() {
        for line in batch {
            tally.add(line.status, line.duration_ms);
            if failed.is_some() {
                continue;
            }
            progress.before_line();
            if let Err(e) = out
                .write_all(&line.json)
                .and_then(|()| out.write_all(b"\n"))
            {
                failed = fail(e);
            }
        }
        if lines.is_empty() && failed.is_none() {
            if let Err(e) = out.flush() {
                failed = fail(e);
            }
            progress.after_flush(tally.total(), submitted.load(Relaxed));
        }
    }
    if failed.is_none() {
        if let Err(e) = out.flush() {
            failed = fail(e);
        }
    }
    progress.finish();
    (tally, failed)
}
