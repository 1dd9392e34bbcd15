//! The Prometheus text exposition format, encoded by the official
//! `prometheus-client` crate from a metrics snapshot.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::durable::unsaved::Outcomes;
use super::state::Daemon;

/// How long a scrape waits for the store's figures (and, in
/// [`super::queue::metrics`], for the queue's): a stalled server costs that
/// much, and the scrape still answers with the rest.
pub(crate) const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/metrics` and `metrics --prometheus` answer: the daemon's series,
/// its store's, and the shared queue's when it runs on one. Figures that
/// cannot be read within [`STATS_TIMEOUT`] are left out, not guessed.
pub(crate) async fn scrape(daemon: &Daemon) -> String {
    let store = within("the task store", daemon.source.stats())
        .await
        .map_err(|e| tracing::debug!(error = %e, "metrics: the task store's figures are left out"))
        .ok();
    super::queue::metrics::prometheus(render(daemon, store.as_ref()), daemon).await
}

/// What `figures` gives within [`STATS_TIMEOUT`], or why not: its error, or
/// that `what` (the store, the queue) did not answer in time (logged).
pub(crate) async fn within<T, E: std::fmt::Display>(
    what: &str,
    figures: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STATS_TIMEOUT, figures).await {
        Ok(figures) => figures.map_err(|e| e.to_string()),
        Err(_) => {
            let late = format!("{what} did not answer within {STATS_TIMEOUT:?}");
            tracing::warn!("metrics: {late}; its figures are left out");
            Err(late)
        }
    }
}

/// Registers the counter `name` at `value`.
pub(crate) fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// Registers the gauge `name` at `value` (the largest `i64` past it).
pub(crate) fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// Renders the pool's metrics (counters, gauges, and the task latency
/// histogram with `_bucket`/`_sum`/`_count`) as Prometheus text.
pub(crate) fn render(daemon: &Daemon, store: Option<&task_source::SourceStats>) -> String {
    let m = daemon.pool.metrics();
    let mut registry = Registry::with_prefix("cortex_pool");
    counter(
        &mut registry,
        "tasks_submitted",
        "Tasks accepted",
        m.tasks.submitted,
    );
    counter(
        &mut registry,
        "tasks_completed",
        "Tasks that produced a result",
        m.tasks.completed,
    );
    counter(
        &mut registry,
        "tasks_failed",
        "Tasks that ended without a result",
        m.tasks.failed,
    );
    counter(
        &mut registry,
        "tasks_retried",
        "Retries scheduled",
        m.tasks.retried,
    );
    counter(
        &mut registry,
        "tasks_dead_lettered",
        "Tasks that ran out of attempts",
        m.tasks.dead_lettered,
    );
    counter(
        &mut registry,
        "tasks_cancelled",
        "Tasks cancelled by their caller",
        m.tasks.cancelled,
    );
    counter(
        &mut registry,
        "tasks_timed_out",
        "Attempts that ran past their timeout",
        m.tasks.timed_out,
    );
    counter(
        &mut registry,
        "dispatches",
        "Attempts sent to workers",
        m.performance.dispatches,
    );
    counter(
        &mut registry,
        "workers_spawned",
        "Worker processes started",
        m.performance.workers_spawned,
    );
    counter(
        &mut registry,
        "workers_restarted",
        "Workers started to replace one that died",
        m.performance.workers_restarted,
    );
    counter(
        &mut registry,
        "workers_crashed",
        "Workers that died without being asked to",
        m.performance.workers_crashed,
    );
    counter(
        &mut registry,
        "workers_recycled",
        "Workers retired and replaced",
        m.performance.workers_recycled,
    );
    counter(
        &mut registry,
        "zombies_killed",
        "Workers killed for missing heartbeats",
        m.performance.zombies_killed,
    );
    gauge(&mut registry, "workers", "Live workers", m.workers.total);
    gauge(
        &mut registry,
        "workers_ready",
        "Workers with free capacity",
        m.workers.ready,
    );
    gauge(
        &mut registry,
        "workers_busy",
        "Workers running a task",
        m.workers.busy,
    );
    gauge(
        &mut registry,
        "workers_unhealthy",
        "Workers judged suspect or worse",
        m.workers.unhealthy,
    );
    gauge(
        &mut registry,
        "pool_target_size",
        "The size the pool keeps itself at",
        m.pool.target_size,
    );
    gauge(
        &mut registry,
        "queue_depth",
        "Tasks waiting",
        m.tasks.queued,
    );
    let bands = Family::<Vec<(&'static str, &'static str)>, Gauge<i64>>::default();
    for (band, depth) in [
        ("high", m.queue.by_priority.high),
        ("normal", m.queue.by_priority.normal),
        ("low", m.queue.by_priority.low),
    ] {
        bands
            .get_or_create(&vec![("band", band)])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    registry.register(
        "queue_depth_by_band",
        "Tasks in the queue by priority band: high 0-33, normal 34-66, low 67-100",
        bands,
    );
    gauge(
        &mut registry,
        "queue_retrying",
        "Tasks waiting out a retry backoff",
        m.queue.retrying,
    );
    gauge(
        &mut registry,
        "queue_shards",
        "Shards the queue of waiting tasks is split in",
        m.queue.shards,
    );
    gauge(
        &mut registry,
        "in_flight",
        "Tasks running on a worker",
        m.tasks.in_flight,
    );
    // The daemon's dead letters live in its task store, not in the pool's
    // own dead-letter queue (which a daemon's pool never fills): left out
    // when the store cannot count them now (a 0 would resolve an alert).
    if let Some(dead_letters) = store
        .and_then(|s| s.rows.get(task_source::TaskState::DeadLetter.as_str()))
        .copied()
    {
        gauge(
            &mut registry,
            "dlq_size",
            "Entries in the dead-letter queue",
            dead_letters,
        );
    }
    let healthy = match m.health.status {
        pool_core::HealthStatus::Healthy => 2,
        pool_core::HealthStatus::Degraded => 1,
        pool_core::HealthStatus::Critical | pool_core::HealthStatus::Failed => 0,
    };
    gauge(
        &mut registry,
        "health",
        "2 healthy, 1 degraded, 0 critical or failed",
        healthy,
    );
    gauge(
        &mut registry,
        "uptime_seconds",
        "Time since the daemon started",
        daemon.started.elapsed().as_secs(),
    );
    registry.register(
        "task_duration_seconds",
        "Time from submission to result of tasks submitted through the daemon",
        daemon.latency.clone(),
    );
    let Outcomes {
        unrecorded,
        refused,
    } = daemon.unrecorded.get();
    gauge(
        &mut registry,
        "outcomes_unrecorded",
        "Task outcomes the task store or queue has not recorded yet, as of the feeder's last try",
        unrecorded,
    );
    gauge(
        &mut registry,
        "outcomes_refused",
        "Of them, those the task source refused one by one (retried apart, after growing pauses)",
        refused,
    );
    if let Some(store) = store {
        // A source that counts nothing now (a shared queue whose connection
        // is down) knows no size either: left out, not 0.
        if !store.rows.is_empty() {
            gauge(
                &mut registry,
                "store_size_bytes",
                "Bytes the task store takes on disk (database and log)",
                store.size_bytes,
            );
        }
        let rows = Family::<Vec<(String, String)>, Gauge<i64>>::default();
        for (state, n) in &store.rows {
            rows.get_or_create(&vec![("state".to_owned(), state.clone())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        registry.register("store_tasks", "Tasks in the task store by state", rows);
        counter(
            &mut registry,
            "store_commits",
            "Transactions the task store committed",
            store.commits,
        );
        let sum = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        sum.inc_by(store.commit_ms_sum / 1000.0);
        registry.register(
            "store_commit_seconds",
            "Total time spent committing task store transactions",
            sum,
        );
    }
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}
