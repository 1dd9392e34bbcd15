//! Signals: SIGTERM/SIGINT drain gracefully (a second one stops the pool at
//! once, [`pool_core::Pool::shutdown_now`]); SIGHUP reloads the configuration
//! and rolls the workers.
//!
//! The daemon never signals a worker by pid: only the pool does, through the
//! task that owns each worker's process and has not reaped it, so a pid reused
//! by another process can never be hit.

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

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

/// Re-reads the configuration; when valid, applies the pool size and rolls every
/// worker onto the (possibly new) worker command, one at a time.
async fn reload(daemon: &Daemon, sources: &Sources) {
    let new = match Settings::load(sources) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; keeping the current configuration");
            return;
        }
    };
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
    if new.pool.initial_size() != old.pool.initial_size() {
        if let Err(e) = daemon.pool.scale_to(new.pool.initial_size()).await {
            tracing::warn!(error = %e, "reload: cannot apply pool_size");
        }
    }
    let command = new.worker.clone();
    if let Ok(mut current) = daemon.settings.write() {
        *current = new;
    }
    tracing::info!("reloaded; rolling the workers");
    match daemon.pool.roll_workers(Some(command)).await {
        Ok(n) => tracing::info!(workers = n, "rolling restart done"),
        Err(e) => tracing::warn!(error = %e, "rolling restart did not finish"),
    }
}
