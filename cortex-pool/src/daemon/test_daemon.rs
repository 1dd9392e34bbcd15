//! A daemon for tests: the default settings, a pool of mock workers that echo,
//! and a task source in memory (or one with faults a test injects).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use pool_core::testing::{MockAction, MockRecorder, MockTransport};
use pool_core::{Pool, WorkerCommand};
use task_source::{
    Admission, Claimed, Filter, ListFrom, ListOrder, ListPage, MemorySource, NewTask, Requeue,
    Settlement, SourceError, SourceStats, TaskRecord, TaskSource, TaskStatus,
};

use super::config::Sources;
use super::state::Daemon;

/// A daemon with the default settings, mock workers that echo, and a
/// [`MemorySource`](task_source::MemorySource).
pub(crate) async fn daemon() -> Arc<Daemon> {
    daemon_with(Arc::new(task_source::MemorySource::new())).await
}

/// [`daemon`] on `source`.
pub(crate) async fn daemon_with(source: Arc<dyn task_source::TaskSource>) -> Arc<Daemon> {
    daemon_set(source, |_| {}).await
}

/// [`daemon`], with the recorder of its mock workers (to fail their
/// launches, say).
pub(crate) async fn daemon_recorded() -> (Arc<Daemon>, Arc<MockRecorder>) {
    recorded(Arc::new(task_source::MemorySource::new()), |_| {}).await
}

/// [`daemon_with`], its default settings changed by `change` first.
pub(crate) async fn daemon_set(
    source: Arc<dyn task_source::TaskSource>,
    change: impl FnOnce(&mut super::config::Settings),
) -> Arc<Daemon> {
    recorded(source, change).await.0
}

/// [`daemon_set`], with the recorder of its mock workers.
async fn recorded(
    source: Arc<dyn task_source::TaskSource>,
    change: impl FnOnce(&mut super::config::Settings),
) -> (Arc<Daemon>, Arc<MockRecorder>) {
    let mut settings = Sources::default()
        .load_with(|_| None)
        .and_then(super::config::Raw::resolve)
        .expect("default settings");
    change(&mut settings);
    let (transport, recorder) = MockTransport::new(|_| MockAction::Echo);
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(settings.pool.clone())
        .start()
        .await
        .expect("pool starts");
    let daemon = Arc::new(Daemon::new(pool, Arc::new(RwLock::new(settings)), source));
    (daemon, recorder)
}

/// An echo task named `id` (payload `1`, priority 10).
pub(crate) fn task(id: &str) -> NewTask {
    NewTask {
        id: id.to_owned(),
        task_type: "echo".to_owned(),
        payload: "1".to_owned(),
        priority: 10,
        timeout_ms: None,
    }
}

/// Whether a [`TestSource`] refuses a settlement on its own.
pub(crate) type Refuses = dyn Fn(&Settlement) -> bool + Send + Sync;

/// A memory source with faults and steps a test injects: `status` reads that
/// fail, or settle a task first, or run a step after the first; settlements
/// that fail while a test says so; recoveries that fail a number of times.
#[derive(Default)]
pub(crate) struct TestSource {
    pub(crate) inner: MemorySource,
    /// Every `status` read fails.
    pub(crate) status_fails: bool,
    /// How many ids each `status` read asked for, in order.
    pub(crate) status_reads: Mutex<Vec<usize>>,
    /// Committed just before the first `status` read (no waiter told).
    pub(crate) settles_on_read: Mutex<Option<Settlement>>,
    /// Run once the first `status` read has read.
    pub(crate) after_read: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Run once the first `accept` has stored its tasks.
    pub(crate) after_accept: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Asked at each `settle`: `true` fails it, recording nothing.
    pub(crate) settle_fails: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Asked of each settlement a `settle_each` call records: `true`
    /// refuses it on its own, the call's others recorded (a broker).
    pub(crate) refuses: Option<Box<Refuses>>,
    /// How many `recover` calls still fail.
    pub(crate) recover_failures: AtomicU32,
    /// How many claims were made through this source.
    pub(crate) claims: AtomicU32,
    /// How many claims had been made when a `recover` first succeeded.
    pub(crate) claims_before_recovery: Mutex<Option<u32>>,
    /// How many pages of listings were read.
    pub(crate) pages_read: AtomicU32,
    /// Pages read before every later one fails (`None`: none fails).
    pub(crate) pages_before_failing: Option<u32>,
}

impl std::fmt::Debug for TestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSource")
            .field("status_fails", &self.status_fails)
            .finish_non_exhaustive()
    }
}

/// The error a [`TestSource`] fails with.
fn busy() -> SourceError {
    SourceError::Backend("busy".to_owned())
}

#[async_trait::async_trait]
impl TaskSource for TestSource {
    async fn accept(&self, tasks: Vec<NewTask>) -> Result<Vec<Admission>, SourceError> {
        let stored = self.inner.accept(tasks).await;
        let after = self.after_accept.lock().unwrap().take();
        if let Some(step) = after {
            step();
        }
        stored
    }
    async fn claim(&self, max: usize, now_ms: u64) -> Result<Vec<Claimed>, SourceError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(max, now_ms).await
    }
    async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), SourceError> {
        if self.settle_fails.as_ref().is_some_and(|fails| fails()) {
            return Err(busy());
        }
        self.inner.settle(settlements).await
    }
    async fn settle_each(
        &self,
        settlements: Vec<Settlement>,
    ) -> Result<Vec<(usize, SourceError)>, SourceError> {
        let Some(refuses) = &self.refuses else {
            return self.settle(settlements).await.map(|()| Vec::new());
        };
        let mut refused = Vec::new();
        let mut taken = Vec::new();
        for (at, settlement) in settlements.into_iter().enumerate() {
            if refuses(&settlement) {
                refused.push((at, SourceError::Backend("denied".to_owned())));
            } else {
                taken.push(settlement);
            }
        }
        self.settle(taken).await?;
        Ok(refused)
    }
    async fn recover(&self) -> Result<u64, SourceError> {
        let failing = self
            .recover_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(busy());
        }
        let claims = self.claims.load(Ordering::SeqCst);
        self.claims_before_recovery
            .lock()
            .unwrap()
            .get_or_insert(claims);
        self.inner.recover().await
    }
    async fn get(&self, ids: Vec<String>) -> Result<Vec<Option<TaskRecord>>, SourceError> {
        self.inner.get(ids).await
    }
    async fn status(&self, ids: Vec<String>) -> Result<Vec<Option<TaskStatus>>, SourceError> {
        if self.status_fails {
            return Err(busy());
        }
        self.status_reads.lock().unwrap().push(ids.len());
        let settles = self.settles_on_read.lock().unwrap().take();
        if let Some(settlement) = settles {
            self.inner.settle(vec![settlement]).await?;
        }
        let read = self.inner.status(ids).await;
        let after = self.after_read.lock().unwrap().take();
        if let Some(step) = after {
            step();
        }
        read
    }
    async fn list(&self, filter: Filter) -> Result<Vec<TaskRecord>, SourceError> {
        self.inner.list(filter).await
    }
    async fn list_page(
        &self,
        filter: Filter,
        order: ListOrder,
        from: Option<ListFrom>,
        page: usize,
    ) -> Result<ListPage, SourceError> {
        let read = self.pages_read.fetch_add(1, Ordering::SeqCst);
        if self.pages_before_failing.is_some_and(|ok| read >= ok) {
            return Err(busy());
        }
        self.inner.list_page(filter, order, from, page).await
    }
    async fn requeue_dead(
        &self,
        ids: Option<Vec<String>>,
    ) -> Result<Vec<(String, Requeue)>, SourceError> {
        self.inner.requeue_dead(ids).await
    }
    async fn purge_dead(&self) -> Result<Vec<String>, SourceError> {
        self.inner.purge_dead().await
    }
    async fn prune(
        &self,
        settled_before_ms: u64,
        max_bytes: Option<u64>,
    ) -> Result<u64, SourceError> {
        self.inner.prune(settled_before_ms, max_bytes).await
    }
    async fn unsettled(&self) -> Result<u64, SourceError> {
        self.inner.unsettled().await
    }
    async fn stats(&self) -> Result<SourceStats, SourceError> {
        self.inner.stats().await
    }
}
