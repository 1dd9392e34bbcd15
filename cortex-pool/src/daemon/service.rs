//! `cortex-pool daemon run`: the daemon itself. It takes the PID file, binds the
//! control socket, starts the pool and serves until SIGTERM/SIGINT, then drains
//! and removes every file it made.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use pool_core::Pool;
use tokio_util::sync::CancellationToken;

use super::config::{Settings, Sources, TransportKind};
use super::paths::{ensure_parent, ensure_private_dir};
use super::pidfile::{PidFile, PidFileError};
use super::signals;
use super::state::Daemon;
use super::{http, server, DaemonError};

/// Runs the daemon in the foreground until it is told to stop.
///
/// # Errors
/// When it cannot start: another daemon runs, a file cannot be made, the pool
/// does not start.
pub(crate) async fn run(settings: Settings, sources: Sources) -> Result<(), DaemonError> {
    let paths = settings.paths.clone();
    // These name their paths.
    ensure_private_dir(&paths.dir).map_err(DaemonError::Fs)?;
    ensure_parent(&paths.pid).map_err(DaemonError::Fs)?;
    ensure_parent(&paths.socket).map_err(DaemonError::Fs)?;
    let pid_file = PidFile::acquire(&paths.pid).map_err(|e| match e {
        PidFileError::AlreadyRunning { pid } => DaemonError::AlreadyRunning(pid),
        other => DaemonError::Start(other.to_string()),
    })?;
    // We hold the lock, so the store is ours and a socket file left there
    // belongs to a dead daemon.
    let store = settings.store.clone();
    // With `queue = "nats://…"` the tasks live on the shared queue instead.
    let nats = match &settings.queue {
        Some(queue) => match super::queue::open(queue, &settings).await {
            Ok(nats) => Some(nats),
            Err(e) => {
                drop(pid_file);
                return Err(DaemonError::Start(e));
            }
        },
        None => None,
    };
    let opened = match &nats {
        Some(nats) => Ok(Arc::new(nats.clone()) as Arc<dyn task_source::TaskSource>),
        None => super::durable::open(&store),
    };
    let source = match opened {
        Ok(source) => source,
        Err(e) => {
            drop(pid_file);
            return Err(DaemonError::Start(e));
        }
    };
    // Tasks that were running when the last daemon died run again, before
    // anything new is accepted.
    let recovered = match source.recover().await {
        Ok(0) => true,
        Ok(n) => {
            tracing::warn!(
                tasks = n,
                "re-queued tasks interrupted by the last daemon's end"
            );
            true
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot re-queue interrupted tasks; no task is claimed until that works"
            );
            false
        }
    };
    if let Ok(stats) = source.stats().await {
        if let task_source::SourceHealth::Failing { reason } = &stats.health {
            tracing::error!(%reason, "the task store cannot write: new tasks will be refused");
        }
        tracing::info!(
            durability = store.durability.as_str(),
            store = stats.path.as_deref().unwrap_or("memory"),
            queued = stats.rows.get("queued").copied().unwrap_or(0),
            retrying = stats.rows.get("retrying").copied().unwrap_or(0),
            "task store open"
        );
    }
    remove_socket(&paths.socket);
    let name = paths
        .socket
        .as_path()
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| DaemonError::io(&paths.socket, e))?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()
        .map_err(|e| DaemonError::io(&paths.socket, e))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DaemonError::io(&paths.socket, e))?;

    let made_fifo_dir = settings.transport == TransportKind::Fifo && !paths.fifo.exists();
    // The runtime directory's own `fifo/` is made private; a `fifo_dir` the
    // user named (a shared, sticky one too) is left as it is: the transport
    // checks it, and keeps its FIFOs in a private directory of their own.
    if settings.transport == TransportKind::Fifo && paths.owns_fifo_dir() {
        ensure_private_dir(&paths.fifo).map_err(DaemonError::Fs)?;
    }
    let transport = settings
        .transport
        .open(Some(&paths.fifo), settings.pool.start_timeout)
        .map_err(DaemonError::Start)?;
    let mut builder = Pool::builder_arc(transport.clone(), settings.worker.clone())
        .config(settings.pool.clone())
        .boxed_policy(settings.policy());
    let events = builder.subscribe_notable();
    let started = builder.start().await;
    let pool = match started {
        Ok(pool) => pool,
        Err(e) => {
            remove_socket(&paths.socket);
            drop(transport);
            if made_fifo_dir {
                let _ = std::fs::remove_dir(&paths.fifo);
            }
            // The store is closed (its writer ended, what it holds written)
            // before the lock goes: a daemon started next must not open it
            // while this one still writes.
            source.close().await;
            drop(source);
            drop(pid_file);
            return Err(DaemonError::PoolStart(e.to_string()));
        }
    };
    let metrics_addr = settings.metrics_addr;
    let daemon = Arc::new(Daemon::new(
        pool.clone(),
        Arc::new(RwLock::new(settings)),
        source,
    ));
    if let Some(nats) = nats {
        let _ = daemon.queue.set(nats);
    }
    let stop = CancellationToken::new();
    let log_stop = CancellationToken::new();
    let event_log = tokio::spawn(super::event_log::run(
        pool.clone(),
        events,
        log_stop.clone(),
    ));
    let feeder = tokio::spawn(super::durable::feeder::run(daemon.clone(), recovered));
    let pruner = tokio::spawn(super::durable::prune::run(daemon.clone(), stop.clone()));
    let server = tokio::spawn(server::serve(listener, daemon.clone(), stop.clone()));
    let scraper = match metrics_addr {
        Some(addr) => match http::bind(addr).await {
            Ok(listener) => Some(tokio::spawn(http::serve(
                listener,
                daemon.clone(),
                stop.clone(),
            ))),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve metrics_addr; continuing without it");
                None
            }
        },
        None => None,
    };
    tracing::info!(
        pid = std::process::id(),
        socket = %paths.socket.display(),
        workers = pool.metrics().workers.total,
        "daemon ready"
    );

    signals::serve_until_stopped(&daemon, &sources).await;

    daemon.draining.cancel();
    let feeder_abort = feeder.abort_handle();
    if tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .is_err()
    {
        // What it could not record runs again at the next start.
        feeder_abort.abort();
        tracing::warn!("the feeder did not finish recording outcomes in time");
    }
    stop.cancel();
    let _ = server.await;
    let _ = pruner.await;
    if let Some(scraper) = scraper {
        let _ = scraper.await;
    }
    log_stop.cancel();
    let _ = event_log.await;
    // Closed before the lock goes: a connection still winding down holds a
    // clone of the source, and a daemon started once the lock is free must
    // not share the store with this one's last writes.
    daemon.source.close().await;
    drop(pool);
    drop(daemon);
    // The pool's shutdown returned once its actor and every worker task had let
    // go of the transport: this is the last clone, and dropping it removes the
    // transport's FIFO directory.
    drop(transport);
    if made_fifo_dir || paths.owns_fifo_dir() {
        let _ = std::fs::remove_dir(&paths.fifo);
    }
    remove_socket(&paths.socket);
    drop(pid_file);
    tracing::info!("daemon stopped");
    Ok(())
}

/// Removes `path` if it is a socket (never anything else).
pub(crate) fn remove_socket(path: &std::path::Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
}
