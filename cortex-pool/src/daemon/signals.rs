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
/// Puts back in `new` what only a start applies (the files, the transport,
/// the metrics address, how the store was opened, the queue, the connection
/// slots), so that what the daemon reports (`status`: its paths, its store's
/// durability) is what it uses until then.
fn keep_until_restart(old: &Settings, new: &mut Settings) {
    new.paths = old.paths.clone();
    new.transport = old.transport;
    new.metrics_addr = old.metrics_addr;
    new.store.path = old.store.path.clone();
    new.store.durability = old.store.durability;
    new.store.memory_bytes = old.store.memory_bytes;
    new.queue = old.queue.clone();
    new.max_connections = old.max_connections;
}

async fn reload(daemon: &Daemon, sources: &Sources) {
    let mut new = match Settings::load(sources) {
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
    if old.max_connections != new.max_connections {
        tracing::warn!("max_connections changes at the next start only");
    }
    keep_until_restart(&old, &mut new);
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

    /// A reload keeps what only a start applies, so that `status` does not
    /// report a durability or a socket the daemon does not use; what applies
    /// at once (retention, the pool) comes from the new file.
    #[test]
    fn a_reload_keeps_what_only_a_start_applies() {
        let old = settings(&[
            "durability=memory",
            "socket=/tmp/old.sock",
            "max_connections=4",
        ]);
        let mut new = settings(&[
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
        assert_eq!(
            new.store.result_ttl,
            std::time::Duration::from_secs(90 * 60)
        );
        assert_eq!(new.pool.initial_size(), 3);
    }
}
