//! Who waits for which task id: `wait`, `result`-less `submit --wait`. The
//! feeder wakes an id's waiters once its settlement is committed.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Waiters by task id.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Waiters {
    /// A receiver that fires when `id` settles.
    pub(crate) fn register(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut map = match self.by_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let list = map.entry(id.to_owned()).or_default();
        list.retain(|w| !w.is_closed());
        list.push(tx);
        rx
    }

    /// Wakes every waiter of each id.
    pub(crate) fn settled<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut map = match self.by_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.is_empty() {
            return;
        }
        for id in ids {
            for w in map.remove(id).into_iter().flatten() {
                let _ = w.send(());
            }
        }
    }
}
