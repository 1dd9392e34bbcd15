//! `cortex-pool run`: JSON lines in, one JSON line per task out, in completion order.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use pool_core::{Pool, PoolConfig, PoolSettings, Transport, WorkerCommand};
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::{broadcast, mpsc, watch};

use super::args::RunArgs;
use super::interrupt::{self, Phase};
use super::output::{self, Line};
use super::progress::{self, Progress};
use super::reader::{LineReader, RawLine};
use super::summary::Tally;
use super::{input, EXIT_USAGE};
use crate::pool_settings::TransportKind;

/// How long the runtime's shutdown waits for blocking threads (a read of stdin).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// How long a task cancelled by a second signal may take to settle.
const CANCEL_WAIT: Duration = Duration::from_millis(300);

/// How many batches of finished lines, and of accepted tasks, may wait between
/// the stages: with the batch sizes, at most 2 048 lines and 1 024 tasks, so a
/// slow standard output soon stops the reading of input.
const CHANNEL_DEPTH: usize = 8;

/// The most finished lines handed to the writer at once: lines that are ready
/// together travel together, so the writer's thread wakes once for them.
const LINE_BATCH: usize = 256;

/// How many bytes of input one read takes in (a read of a file is a hop to a
/// blocking thread and back).
const READ_BUFFER: usize = 64 * 1024;

/// The most input lines submitted to the pool in one call.
const SUBMIT_BATCH: usize = 128;

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
    eprintln!("cortex-pool: {message}");
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
        max_rss_mb: args.max_rss_mb,
        kill_rss_mb: args.kill_rss_mb,
        ..PoolSettings::default()
    };
    Ok(settings.resolve()?)
}

fn transport(args: &RunArgs) -> Result<Arc<dyn Transport>, UsageError> {
    let kind: TransportKind = args.transport.parse().map_err(UsageError)?;
    if args.fifo_dir.is_some() && kind != TransportKind::Fifo {
        return Err(UsageError("--fifo-dir needs --transport fifo".into()));
    }
    kind.open(args.fifo_dir.as_deref()).map_err(UsageError)
}

fn worker_command(args: &RunArgs) -> Result<WorkerCommand, UsageError> {
    let cmd = match (args.worker.is_empty(), args.worker_after_dashes.is_empty()) {
        (false, false) => {
            return Err(UsageError(
                "give the worker either with --worker or after --, not both".into(),
            ))
        }
        (false, true) => &args.worker,
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

async fn open_tasks(
    path: &Option<PathBuf>,
) -> Result<Box<dyn AsyncRead + Unpin + Send>, UsageError> {
    match path {
        None => Ok(Box::new(tokio::io::stdin())),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(tokio::io::stdin())),
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
    let signals = interrupt::Signals::install()
        .map_err(|e| UsageError(format!("cannot install the signal handlers: {e}")))?;
    let config = config(&args)?;
    let command = worker_command(&args)?;
    let policy = policy_balance::by_name(&args.policy)?;
    let tasks = open_tasks(&args.tasks).await?;
    let events_file = match &args.events {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|e| UsageError(format!("cannot create {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let mut builder = Pool::builder_arc(transport(&args)?, command)
        .config(config)
        .boxed_policy(policy);
    let event_writer = events_file.map(|file| {
        let events = builder.subscribe();
        tokio::spawn(write_events(events, file))
    });
    let progress = progress_line(&args).await;
    let started = Instant::now();
    let pool = builder
        .start()
        .await
        .map_err(|e| UsageError(e.to_string()))?;

    let (lines_tx, lines_rx) = mpsc::channel::<Vec<Line>>(CHANNEL_DEPTH);
    let (accepted_tx, accepted_rx) = mpsc::channel::<Vec<Accepted>>(CHANNEL_DEPTH);
    let submitted = Arc::new(AtomicU64::new(0));
    let phase = signals.watch(pool.clone());
    let feeder = tokio::spawn(feed(
        phase.clone(),
        pool.clone(),
        tasks,
        args.max_line_bytes,
        lines_tx.clone(),
        accepted_tx,
        submitted.clone(),
    ));
    tokio::spawn(collect(accepted_rx, lines_tx, phase.clone()));
    let writer_submitted = submitted.clone();
    let mut tally =
        tokio::task::spawn_blocking(move || write_lines(lines_rx, writer_submitted, progress))
            .await
            .map_err(|e| UsageError(format!("the output writer failed: {e}")))?;
    let _ = feeder.await;
    let elapsed = started.elapsed();
    let metrics = pool.metrics();
    if let Some(path) = &args.metrics_json {
        let json = serde_json::to_vec_pretty(&metrics)?;
        std::fs::write(path, json)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
    }
    // After a second signal nothing is waited for: the runtime's shutdown drops
    // the pool, which kills every worker's process group.
    let mut stopping = phase.clone();
    tokio::select! {
        biased;
        () = interrupt::reached(&mut stopping, Phase::Stopping) => {}
        () = async {
            pool.shutdown().await;
            drop(pool);
            if let Some(writer) = event_writer {
                let _ = writer.await;
            }
        } => {}
    }
    eprintln!("{}", tally.render(elapsed, Some(&metrics)));
    Ok(tally.all_ok())
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

/// Reads task lines, submits them (waiting for queue room), and hands each
/// outcome to the writer as soon as it is known. Every channel is bounded, so a
/// slow standard output stops the reading.
///
/// Lines that are already read in are parsed and submitted together (up to
/// [`SUBMIT_BATCH`]): the batch goes to the pool when the next line is not there
/// yet, or when it is full.
async fn feed(
    mut phase: watch::Receiver<Phase>,
    pool: Pool,
    tasks: Box<dyn AsyncRead + Unpin + Send>,
    max_line_bytes: usize,
    lines: mpsc::Sender<Vec<Line>>,
    accepted: mpsc::Sender<Vec<Accepted>>,
    submitted: Arc<AtomicU64>,
) {
    let mut reader = LineReader::new(BufReader::with_capacity(READ_BUFFER, tasks), max_line_bytes);
    let mut ids = input::Ids::default();
    let mut line_no = 0u64;
    let mut batch = Vec::with_capacity(SUBMIT_BATCH);
    loop {
        let next = {
            let read = reader.next_line();
            tokio::pin!(read);
            match poll_once(read.as_mut()).await {
                Poll::Ready(_) if *phase.borrow() >= Phase::Draining => break,
                Poll::Ready(next) => next,
                Poll::Pending => {
                    submit(&pool, &mut batch, &lines, &accepted).await;
                    tokio::select! {
                        biased;
                        () = interrupt::reached(&mut phase, Phase::Draining) => break,
                        next = &mut read => next,
                    }
                }
            }
        };
        let raw = match next {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => {
                line_no += 1;
                submitted.fetch_add(1, Relaxed);
                let message = format!("line {line_no} is unreadable: {e}");
                let _ = lines.send(vec![output::invalid(line_no, &message)]).await;
                break;
            }
        };
        line_no += 1;
        let bytes = match raw {
            RawLine::Bytes(bytes) => bytes,
            RawLine::TooLong(len) => {
                submitted.fetch_add(1, Relaxed);
                let message = format!(
                    "line {line_no} is {len} bytes, longer than --max-line-bytes ({max_line_bytes})"
                );
                let _ = lines.send(vec![output::invalid(line_no, &message)]).await;
                continue;
            }
        };
        if bytes.trim_ascii().is_empty() {
            continue;
        }
        submitted.fetch_add(1, Relaxed);
        match input::parse_line(&bytes, line_no, &mut ids) {
            Ok(parsed) => batch.push(parsed),
            Err(invalid) => {
                let line =
                    output::invalid_with_id(invalid.id.as_deref(), line_no, &invalid.message);
                let _ = lines.send(vec![line]).await;
                continue;
            }
        }
        if batch.len() >= SUBMIT_BATCH {
            submit(&pool, &mut batch, &lines, &accepted).await;
        }
    }
    submit(&pool, &mut batch, &lines, &accepted).await;
}

/// Polls `future` once: its output if it is ready now.
async fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        Poll::Ready(match future.take() {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        })
    })
    .await
}

/// Submits the parsed lines of `batch` in one call (emptying it): the accepted
/// ones go to the collector, a line for each refused one to the writer.
async fn submit(
    pool: &Pool,
    batch: &mut Vec<input::TaskLine>,
    lines: &mpsc::Sender<Vec<Line>>,
    accepted: &mpsc::Sender<Vec<Accepted>>,
) {
    if batch.is_empty() {
        return;
    }
    let since = Instant::now();
    let (ids, tasks): (Vec<String>, Vec<pool_core::Task>) =
        batch.drain(..).map(|line| (line.id, line.task)).unzip();
    let results = pool.submit_each(tasks).await;
    let mut taken = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(handle) => taken.push(Accepted { id, since, handle }),
            Err(error) => refused.push(output::refused(&id, &error)),
        }
    }
    if !refused.is_empty() {
        let _ = lines.send(refused).await;
    }
    if !taken.is_empty() {
        let _ = accepted.send(taken).await;
    }
}

/// A task the pool accepted, waiting for its outcome: a future of its line.
struct Accepted {
    id: String,
    since: Instant,
    handle: pool_core::TaskHandle,
}

impl Accepted {
    /// Milliseconds since it was submitted.
    fn elapsed_ms(&self) -> f64 {
        self.since.elapsed().as_secs_f64() * 1000.0
    }
}

impl Future for Accepted {
    type Output = Line;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Line> {
        let outcome = std::task::ready!(Pin::new(&mut self.handle).poll(cx));
        let ms = self.elapsed_ms();
        Poll::Ready(match outcome {
            Ok(out) => output::ok(&self.id, &out, ms),
            Err(err) => output::failed(&self.id, &err, ms),
        })
    }
}

/// Turns outcomes into lines in the order the pool settles the tasks: the handles
/// are polled together and a `FuturesUnordered` yields them in wake-up order.
///
/// After a second signal each waiting task is cancelled and given [`CANCEL_WAIT`]
/// to settle ([`give_up`]).
async fn collect(
    mut accepted: mpsc::Receiver<Vec<Accepted>>,
    lines: mpsc::Sender<Vec<Line>>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut waiting = FuturesUnordered::new();
    let mut open = true;
    let stopping = interrupt::reached(&mut phase, Phase::Stopping);
    tokio::pin!(stopping);
    while open || !waiting.is_empty() {
        tokio::select! {
            biased;
            () = &mut stopping => return give_up(waiting, accepted, open, lines).await,
            Some(line) = waiting.next(), if !waiting.is_empty() => {
                let _ = lines.send(ready_with(line, &mut waiting)).await;
            }
            next = accepted.recv(), if open => match next {
                Some(accepted) => waiting.extend(accepted),
                None => open = false,
            },
        }
    }
}

/// `first` and the lines of the other tasks that are ready now (up to
/// [`LINE_BATCH`] in all).
fn ready_with(first: Line, waiting: &mut FuturesUnordered<Accepted>) -> Vec<Line> {
    let mut batch = Vec::with_capacity(LINE_BATCH.min(waiting.len() + 1));
    batch.push(first);
    // Polled without a waker that matters: the caller polls `waiting` again,
    // with its own, before it waits.
    while batch.len() < LINE_BATCH {
        match waiting.next().now_or_never() {
            Some(Some(line)) => batch.push(line),
            _ => break,
        }
    }
    batch
}

/// After a second signal: cancels every waiting task (and those still arriving),
/// writes the lines of those that settle within [`CANCEL_WAIT`], and a
/// `cancelled` line without waiting further for each of the others (its worker
/// does not answer; it is killed as `run` exits).
async fn give_up(
    mut waiting: FuturesUnordered<Accepted>,
    mut accepted: mpsc::Receiver<Vec<Accepted>>,
    mut open: bool,
    lines: mpsc::Sender<Vec<Line>>,
) {
    for task in waiting.iter_mut() {
        task.handle.cancel();
    }
    let deadline = tokio::time::sleep(CANCEL_WAIT);
    tokio::pin!(deadline);
    while open || !waiting.is_empty() {
        tokio::select! {
            biased;
            () = &mut deadline => break,
            Some(line) = waiting.next(), if !waiting.is_empty() => {
                let _ = lines.send(vec![line]).await;
            }
            next = accepted.recv(), if open => match next {
                Some(tasks) => {
                    for task in tasks {
                        task.handle.cancel();
                        waiting.push(task);
                    }
                }
                None => open = false,
            },
        }
    }
    let abandoned: Vec<Line> = waiting
        .into_iter()
        .map(|task| output::abandoned(&task.id, task.elapsed_ms()))
        .collect();
    if !abandoned.is_empty() {
        let _ = lines.send(abandoned).await;
    }
    // The reader stopped at the first signal: what it still hands over is
    // cancelled and not waited for.
    while let Some(tasks) = if open { accepted.recv().await } else { None } {
        let mut batch = Vec::with_capacity(tasks.len());
        for task in tasks {
            task.handle.cancel();
            batch.push(output::abandoned(&task.id, task.elapsed_ms()));
        }
        let _ = lines.send(batch).await;
    }
}

/// Writes lines to stdout as they come, with the progress line on stderr. Runs on
/// a blocking thread: a slow standard output blocks it, not the runtime.
fn write_lines(
    mut lines: mpsc::Receiver<Vec<Line>>,
    submitted: Arc<AtomicU64>,
    mut progress: Progress,
) -> Tally {
    let mut tally = Tally::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while let Some(batch) = lines.blocking_recv() {
        for line in batch {
            tally.add(line.status, line.duration_ms);
            progress.before_line();
            let _ = out.write_all(&line.json);
            let _ = out.write_all(b"\n");
        }
        if lines.is_empty() {
            let _ = out.flush();
            progress.after_flush(tally.total(), submitted.load(Relaxed));
        }
    }
    let _ = out.flush();
    progress.finish();
    tally
}

/// Writes each event as a JSON line with a `ts_ms` field (Unix time in ms).
async fn write_events(mut events: broadcast::Receiver<pool_core::PoolEvent>, file: std::fs::File) {
    let mut out = std::io::BufWriter::new(file);
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "event file writer fell behind; events lost");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Ok(serde_json::Value::Object(mut map)) = serde_json::to_value(&event) else {
            continue;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        map.insert("ts_ms".into(), ts.into());
        let _ = serde_json::to_writer(&mut out, &map);
        let _ = out.write_all(b"\n");
        if events.is_empty() {
            let _ = out.flush();
        }
        if matches!(event, pool_core::PoolEvent::PoolShutdown) {
            break;
        }
    }
    let _ = out.flush();
}
