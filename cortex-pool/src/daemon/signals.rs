//! Signals: SIGTERM/SIGINT drain gracefully (a second one forces a fast stop);
//! SIGHUP reloads the configuration and rolls the workers.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::config::{Settings, Sources};
use super::state::Daemon;

/// Serves signals until the pool has shut down (gracefully or forced).
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
    let pool = daemon.pool.clone();
    let mut drain = tokio::spawn(async move { pool.shutdown().await });
    tokio::select! {
        _ = &mut drain => {}
        () = second(&mut term, &mut int) => {
            tracing::warn!("second stop signal: stopping now");
            force(daemon).await;
            let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
        }
    }
}

async fn second(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Kills every worker's process group at once.
async fn force(daemon: &Daemon) {
    let workers = tokio::time::timeout(Duration::from_secs(1), daemon.pool.workers())
        .await
        .unwrap_or_default();
    for w in workers {
        let pid = i32::try_from(w.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
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
