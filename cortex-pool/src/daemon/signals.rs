//! Signals: SIGTERM/SIGINT drain gracefully (a second one stops the pool at
//! once, [`pool_core::Pool::shutdown_now`]); SIGHUP reloads the configuration
//! and rolls the workers.
//!
//! The daemon never signals a worker by pid: only the pool does, through the
//! task that owns each worker's process and has not reaped it, so a pid reused
//! by another process can never be hit.

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

use pool_core::{PoolConfig, PoolSettings};

use super::config::{Settings, Sources};
use super::state::Daemon;

/// Serves signals until the pool has shut down (gracefully or at once) and let
/// go of everything it held (the transport among them).
pub(crate) async fn serve_until_stopped(daemon: &Arc<Daemon>, sources: &Sources) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; shutting down");
        daemon.draining.cancel();
        daemon.pool.shutdown().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let daemon = daemon.clone();
                let sources = sources.clone();
                tokio::spawn(async move { reload(&daemon, &sources).await });
            }
        }
    }
    tracing::info!("draining: running tasks finish, queued ones stay in the store");
    daemon.draining.cancel();
    tokio::select! {
        () = daemon.pool.shutdown() => {}
        () = second(&mut term, &mut int) => {
            tracing::warn!("second stop signal: killing every worker now");
            daemon.pool.shutdown_now().await;
        }
    }
}

async fn second(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Puts back in `new` what only a start applies (the files, the transport,
/// the metrics address, how the store was opened, the queue, the connection
/// slots, the balance policy, most of the pool's keys), so that what the
/// daemon reports (`status`: its paths, its store's durability) is what it
/// uses until then.
fn keep_until_restart(old: &Settings, new: &mut Settings) {
    new.paths = old.paths.clone();
    new.transport = old.transport;
    new.metrics_addr = old.metrics_addr;
    new.store.path = old.store.path.clone();
    new.store.durability = old.store.durability;
    new.store.memory_bytes = old.store.memory_bytes;
    new.queue = old.queue.clone();
    new.max_connections = old.max_connections;
    new.policy.clone_from(&old.policy);
    keep_pool_until_restart(&old.pool, &mut new.pool);
}

/// Puts back in `new` the pool's settings the running pool keeps until the
/// next start: all but `pool_size` (a scale, within the `min_workers` and
/// `max_workers` it started with), the retry keys (read by the daemon for
/// each failed attempt) and `max_queue_len` (the daemon's admission).
fn keep_pool_until_restart(old: &PoolConfig, new: &mut PoolConfig) {
    let mut kept = old.clone();
    kept.pool_size = new.pool_size;
    kept.retry = new.retry;
    kept.max_queue_len = new.max_queue_len;
    *new = kept;
}

/// The pool keys whose values differ between `old` and `new`, as the
/// configuration spells them.
fn changed_pool_keys(old: &PoolConfig, new: &PoolConfig) -> Vec<&'static str> {
    let value = |c: &PoolConfig| serde_json::to_value(PoolSettings::from(c)).unwrap_or_default();
    let (old, new) = (value(old), value(new));
    PoolSettings::KEYS
        .iter()
        .copied()
        .filter(|key| old.get(key) != new.get(key))
        .collect()
}

/// Re-reads the configuration; when valid, applies the pool size, the retry
/// keys and `max_queue_len`, and rolls every worker onto the (possibly new)
/// worker command, one at a time. What only a start applies is kept, with a
/// warning that names it.
async fn reload(daemon: &Daemon, sources: &Sources) {
    match Settings::load(sources) {
        Ok(new) => apply(daemon, new).await,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; keeping the current configuration");
        }
    }
}

/// What a reload applies of the `new` settings (see [`reload`]); `status`
/// shows the worker command the pool runs: the previous one again when the
/// roll onto the new one was aborted (its workers could not start) or
/// refused (another roll was running).
async fn apply(daemon: &Daemon, mut new: Settings) {
    let old = daemon.setting(Clone::clone);
    if old.paths != new.paths
        || old.transport != new.transport
        || old.metrics_addr != new.metrics_addr
    {
        tracing::warn!("file locations, transport and metrics_addr change at the next start only");
    }
    let opened = |s: &Settings| {
        (
            s.store.path.clone(),
            s.store.durability,
            s.store.memory_bytes,
            s.queue.clone(),
        )
    };
    if opened(&old) != opened(&new) {
        tracing::warn!(
            "store, durability, store_memory_mb and the queue's keys change at the next start only"
        );
    }
    if old.max_connections != new.max_connections {
        tracing::warn!("max_connections changes at the next start only");
    }
    if old.policy != new.policy {
        tracing::warn!("policy changes at the next start only");
    }
    let asked = new.pool.clone();
    keep_until_restart(&old, &mut new);
    let waiting = changed_pool_keys(&new.pool, &asked);
    if !waiting.is_empty() {
        tracing::warn!(
            keys = %waiting.join(", "),
            "these pool keys change at the next start only (a reload applies pool_size, \
             worker, max_queue_len and the retry keys)"
        );
    }
    if new.pool.initial_size() != old.pool.initial_size() {
        if let Err(e) = daemon.pool.scale_to(new.pool.initial_size()).await {
            tracing::warn!(error = %e, "reload: cannot apply pool_size");
            // What `status` shows is the size the pool keeps.
            new.pool.pool_size = old.pool.pool_size;
        }
    }
    let command = new.worker.clone();
    if let Ok(mut current) = daemon.settings.write() {
        *current = new;
    }
    tracing::info!("reloaded; rolling the workers");
    match daemon.pool.roll_workers(Some(command)).await {
        Ok(n) => tracing::info!(workers = n, "rolling restart done"),
        Err(e) => {
            tracing::warn!(error = %e, "rolling restart did not finish");
            // Aborted (its workers could not start: the pool runs the
            // previous command again), or refused (another roll runs, onto
            // the command the settings held): `status` shows what runs.
            if let Ok(mut current) = daemon.settings.write() {
                current.worker = old.worker;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[&str]) -> Settings {
        Sources {
            overrides: pairs.iter().map(|p| (*p).to_owned()).collect(),
            ..Sources::default()
        }
        .load_with(|_| None)
        .and_then(super::super::config::Raw::resolve)
        .expect("valid settings")
    }

    /// A reload whose worker command cannot start workers: the roll is
    /// aborted, the pool runs the previous command, and the settings `status`
    /// shows say so.
    #[tokio::test(start_paused = true)]
    async fn an_aborted_roll_keeps_the_previous_worker_in_the_settings() {
        let (daemon, recorder) = super::super::test_daemon::daemon_recorded().await;
        let program = || daemon.setting(|s| s.worker.program.clone());
        let before = program();
        recorder.fail_next_launches(1_000_000);
        let mut new = daemon.setting(Clone::clone);
        new.worker = pool_core::WorkerCommand::new("no-such-worker");
        apply(&daemon, new).await;
        assert_eq!(program(), before, "the command the pool runs");
        assert_ne!(before, std::path::Path::new("no-such-worker"));
    }

    /// A reload keeps what only a start applies, so that `status` does not
    /// report a durability or a socket the daemon does not use; what applies
    /// at once (retention, the pool) comes from the new file.
    #[test]
    fn a_reload_keeps_what_only_a_start_applies() {
        let old = settings(&[
            "durability=memory",
            "socket=/tmp/old.sock",
            "max_connections=4",
            "policy=round-robin",
        ]);
        let mut new = settings(&[
            "policy=least-loaded",
            "durability=fsync",
            "socket=/tmp/new.sock",
            "max_connections=9",
            "result_ttl=90m",
            "pool_size=3",
        ]);
        keep_until_restart(&old, &mut new);
        assert_eq!(new.store.durability, old.store.durability);
        assert_eq!(new.paths, old.paths);
        assert_eq!(new.max_connections, 4);
        assert_eq!(new.policy, "round-robin");
        assert_eq!(
            new.store.result_ttl,
            std::time::Duration::from_secs(90 * 60)
        );
        assert_eq!(new.pool.initial_size(), 3);
    }

    /// Of the pool's keys a reload applies the size, the retry keys and
    /// `max_queue_len`; the others stay as the pool runs them, and the
    /// warning names each of them as the configuration spells it.
    #[test]
    fn a_reload_keeps_the_pool_keys_only_a_start_applies_and_names_them() {
        let old = settings(&["pool_size=2", "min_workers=1", "max_workers=4"]);
        let new = settings(&[
            "pool_size=3",
            "min_workers=1",
            "max_workers=4",
            "max_retries=7",
            "max_queue_len=50",
            "task_timeout_ms=300",
            "max_tasks_per_worker=1",
            "worker_concurrency=2",
        ]);
        let mut applied = new.pool.clone();
        keep_pool_until_restart(&old.pool, &mut applied);
        assert_eq!(
            changed_pool_keys(&applied, &new.pool),
            [
                "worker_concurrency",
                "task_timeout_ms",
                "max_tasks_per_worker"
            ]
        );
        let mut reloaded = new.clone();
        keep_until_restart(&old, &mut reloaded);
        assert_eq!(reloaded.pool.initial_size(), 3);
        assert_eq!(reloaded.pool.retry.max_retries(), 7);
        assert_eq!(reloaded.pool.max_queue_len, 50);
        assert_eq!(reloaded.pool.task_timeout, old.pool.task_timeout);
        assert_eq!(reloaded.pool.max_tasks_per_worker, None);
        assert_eq!(
            reloaded.pool.worker_concurrency,
            old.pool.worker_concurrency
        );
    }
}
