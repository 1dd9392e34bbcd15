//! A daemon for tests: the default settings, a pool of mock workers that echo,
//! and a task source in memory.

use std::sync::{Arc, RwLock};

use pool_core::testing::{MockAction, MockTransport};
use pool_core::{Pool, WorkerCommand};

use super::config::Sources;
use super::state::Daemon;

/// A daemon with the default settings, mock workers that echo, and a
/// [`MemorySource`](task_source::MemorySource).
pub(crate) async fn daemon() -> Arc<Daemon> {
    daemon_with(Arc::new(task_source::MemorySource::new())).await
}

/// [`daemon`] on `source`.
pub(crate) async fn daemon_with(source: Arc<dyn task_source::TaskSource>) -> Arc<Daemon> {
    let settings = Sources::default()
        .load_with(|_| None)
        .and_then(super::config::Raw::resolve)
        .expect("default settings");
    let (transport, _recorder) = MockTransport::new(|_| MockAction::Echo);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(settings.pool.clone())
        .start()
        .await
        .expect("pool starts");
    Arc::new(Daemon::new(pool, Arc::new(RwLock::new(settings)), source))
}
