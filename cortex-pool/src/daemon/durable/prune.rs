//! Retention: every minute, settled tasks older than `result_ttl` are removed,
//! and the oldest settled ones while the store is above `store_max_mb`. It runs
//! in transactions of its own on the store's thread (each walks at most
//! 50 000 task numbers and deletes at most 10 000 tasks), between dispatch
//! batches.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::daemon::state::Daemon;

/// How often pruning runs.
const EVERY: Duration = Duration::from_secs(60);

/// Prunes until `stop`.
pub(crate) async fn run(daemon: Arc<Daemon>, stop: CancellationToken) {
    loop {
        let (ttl, max_bytes) = daemon.setting(|s| (s.store.result_ttl, s.store.max_bytes));
        let before = task_source::now_ms().saturating_sub(ttl.as_millis() as u64);
        match daemon.source.prune(before, max_bytes).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned settled tasks past their retention"),
            Err(e) => tracing::warn!(error = %e, "pruning the task store failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
