//! `cortex-pool run`: JSON lines in, one JSON line per task out, in completion order.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, StreamExt};
use pool_core::{Pool, PoolConfig, RetryPolicy, Transport, WorkerCommand};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{broadcast, mpsc};
use transport_fifo::FifoTransport;
use transport_ipc::StdioTransport;

use super::args::RunArgs;
use super::output::{self, Line};
use super::summary::Tally;
use super::{input, EXIT_USAGE};

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
    match runtime.block_on(run_async(args)) {
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

fn config(args: &RunArgs) -> Result<PoolConfig, UsageError> {
    let workers = match args.workers {
        Some(0) => return Err(UsageError("--workers must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let base = Duration::from_millis(args.backoff_ms);
    let cap = base.max(Duration::from_secs(30));
    let retry = RetryPolicy::new(args.max_retries, base, cap, false)?;
    let mut config = PoolConfig {
        pool_size: workers,
        min_workers: 1,
        max_workers: workers.max(50),
        retry,
        task_timeout: Duration::from_millis(args.timeout_ms),
        max_queue_len: 10_000,
        ..PoolConfig::default()
    };
    if let Some(ms) = args.heartbeat_ms {
        config.heartbeat_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = args.suspect_ms {
        config.suspect_after = Duration::from_millis(ms);
    } else if args.heartbeat_ms.is_some() {
        config.suspect_after = config.heartbeat_interval * 3;
    }
    if let Some(ms) = args.zombie_ms {
        config.zombie_after = Duration::from_millis(ms);
        if args.suspect_ms.is_none() {
            config.suspect_after = config.suspect_after.min(config.zombie_after);
        }
    } else if args.heartbeat_ms.is_some() || args.suspect_ms.is_some() {
        config.zombie_after = config.suspect_after * 2;
    }
    config.max_tasks_per_worker = args.max_tasks_per_worker;
    config.worker_concurrency = args.concurrency;
    config.prefetch = args.prefetch.unwrap_or(config.prefetch);
    config.max_rss_bytes = args.max_rss_mb.map(|mb| mb * 1024 * 1024);
    config.validate()?;
    Ok(config)
}

fn transport(args: &RunArgs) -> Result<Arc<dyn Transport>, UsageError> {
    if args.fifo_dir.is_some() && args.transport != "fifo" {
        return Err(UsageError("--fifo-dir needs --transport fifo".into()));
    }
    match args.transport.as_str() {
        "stdio" => Ok(Arc::new(StdioTransport::new())),
        "fifo" => {
            let fifo = match &args.fifo_dir {
                Some(dir) => FifoTransport::in_dir(dir),
                None => FifoTransport::new(),
            }
            .map_err(|e| UsageError(format!("cannot set up the fifo transport: {e}")))?;
            Ok(Arc::new(fifo))
        }
        other => Err(UsageError(format!(
            "unknown transport {other:?}: expected stdio or fifo"
        ))),
    }
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
            Ok(Box::new(file))
        }
    }
}

async fn run_async(args: RunArgs) -> Result<bool, UsageError> {
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
    let started = Instant::now();
    let pool = builder
        .start()
        .await
        .map_err(|e| UsageError(e.to_string()))?;

    let (lines_tx, lines_rx) = mpsc::unbounded_channel::<Line>();
    let (accepted_tx, accepted_rx) = mpsc::unbounded_channel::<Accepted>();
    let submitted = Arc::new(AtomicU64::new(0));
    let feeder = tokio::spawn(feed(
        pool.clone(),
        tasks,
        lines_tx.clone(),
        accepted_tx,
        submitted.clone(),
    ));
    tokio::spawn(collect(accepted_rx, lines_tx));
    let interrupt = pool.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cortex-pool: interrupted; finishing running tasks");
            interrupt.shutdown().await;
        }
    });
    let mut tally = write_lines(lines_rx, submitted).await;
    let _ = feeder.await;
    let elapsed = started.elapsed();
    let metrics = pool.metrics();
    if let Some(path) = &args.metrics_json {
        let json = serde_json::to_vec_pretty(&metrics)?;
        std::fs::write(path, json)
            .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
    }
    pool.shutdown().await;
    drop(pool);
    if let Some(writer) = event_writer {
        let _ = writer.await;
    }
    eprintln!("{}", tally.render(elapsed, Some(&metrics)));
    Ok(tally.all_ok())
}

/// Reads task lines, submits them (waiting for queue room), and hands each
/// outcome to the writer as soon as it is known.
async fn feed(
    pool: Pool,
    tasks: Box<dyn AsyncRead + Unpin + Send>,
    lines: mpsc::UnboundedSender<Line>,
    accepted: mpsc::UnboundedSender<Accepted>,
    submitted: Arc<AtomicU64>,
) {
    let mut reader = BufReader::new(tasks).lines();
    let mut line_no = 0u64;
    loop {
        let text = match reader.next_line().await {
            Ok(Some(text)) => text,
            Ok(None) => break,
            Err(e) => {
                line_no += 1;
                let _ = lines.send(output::invalid(line_no, &format!("unreadable line: {e}")));
                break;
            }
        };
        line_no += 1;
        if text.trim().is_empty() {
            continue;
        }
        submitted.fetch_add(1, Relaxed);
        let parsed = match input::parse(&text, line_no) {
            Ok(parsed) => parsed,
            Err(message) => {
                let _ = lines.send(output::invalid(line_no, &message));
                continue;
            }
        };
        let since = Instant::now();
        match pool.submit(parsed.task).await {
            Ok(handle) => {
                let _ = accepted.send(Accepted {
                    id: parsed.id,
                    since,
                    handle,
                });
            }
            Err(refused) => {
                let _ = lines.send(output::refused(&parsed.id, &refused));
            }
        }
    }
}

/// A task the pool accepted, waiting for its outcome.
struct Accepted {
    id: String,
    since: Instant,
    handle: pool_core::TaskHandle,
}

/// Turns outcomes into lines in the order the pool settles the tasks: the handles
/// are polled together and a `FuturesUnordered` yields them in wake-up order.
async fn collect(
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    lines: mpsc::UnboundedSender<Line>,
) {
    let mut waiting = FuturesUnordered::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            biased;
            Some(line) = waiting.next(), if !waiting.is_empty() => {
                let _ = lines.send(line);
            }
            next = accepted.recv(), if open => match next {
                Some(Accepted { id, since, handle }) => waiting.push(async move {
                    let outcome = handle.await;
                    let ms = since.elapsed().as_secs_f64() * 1000.0;
                    match outcome {
                        Ok(out) => output::ok(&id, &out, ms),
                        Err(err) => output::failed(&id, &err, ms),
                    }
                }),
                None => open = false,
            },
        }
    }
}

/// Writes lines to stdout as they come, with a progress line on a terminal.
async fn write_lines(mut lines: mpsc::UnboundedReceiver<Line>, submitted: Arc<AtomicU64>) -> Tally {
    let mut tally = Tally::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    while let Some(line) = lines.recv().await {
        tally.add(line.status, line.duration_ms);
        let _ = serde_json::to_writer(&mut out, &line.json);
        let _ = out.write_all(b"\n");
        if lines.is_empty() {
            let _ = out.flush();
        }
        if progress && last_progress.elapsed() > Duration::from_millis(200) {
            last_progress = Instant::now();
            eprint!(
                "\r{} / {} tasks done",
                tally.total(),
                submitted.load(Relaxed)
            );
        }
    }
    let _ = out.flush();
    if progress {
        eprint!("\r\x1b[2K");
    }
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
        if matches!(event, pool_core::PoolEvent::PoolShutdown) {
            break;
        }
    }
    let _ = out.flush();
}
