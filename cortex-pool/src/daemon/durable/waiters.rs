//! Who waits for which task id: `wait`, `submit --wait`. The feeder hands an
//! id's waiters its final line once the settlement is committed, so a waiter
//! answers without reading the task back from the store.
//!
//! A request registers all its ids with one inbox, and the lines of the ids
//! that settle together arrive there together: one wake for a batch of them,
//! not a channel and a future per id (a `oneshot` per id, polled through a
//! `FuturesUnordered`, cost the daemon about 7 000 instructions a task in
//! `submit --wait`).

use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::HashMap;

use task_source::TaskState;
use tokio::sync::mpsc;

/// A task's final state and line, as the feeder committed them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    /// The task.
    pub(crate) id: String,
    /// The final state.
    pub(crate) state: TaskState,
    /// Its `run`-format line, JSON text.
    pub(crate) line: String,
}

/// A request's registration: where it receives the lines of its ids as they
/// settle. Dropped, it takes its ids out of the waiters (those not settled
/// yet, and those the request found settled already and never waited for),
/// unless every one of them settled into its inbox (each such id left the
/// waiters as it settled).
pub(crate) struct Registration<'a> {
    waiters: &'a Waiters,
    ids: &'a [String],
    inbox: mpsc::UnboundedReceiver<Arc<Settled>>,
    /// Its ids, each counted once.
    registered: usize,
    /// The lines it received: one per id, each taken out of the waiters.
    received: usize,
}

impl Registration<'_> {
    /// Waits for settled lines and moves up to `limit` of them into `buf`; 0
    /// only when the daemon's waiters are gone.
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<Arc<Settled>>, limit: usize) -> usize {
        let n = self.inbox.recv_many(buf, limit).await;
        self.received += n;
        n
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // Closed, the inbox's senders read as given up.
        self.inbox.close();
        if self.received < self.registered {
            self.waiters.forget(self.ids);
        }
    }
}

type Senders = HashMap<String, Vec<mpsc::UnboundedSender<Arc<Settled>>>>;

/// Waiters by task id.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_id: Mutex<Senders>,
}

impl Waiters {
    /// A registration that receives the final line of each of `ids` when it
    /// settles (once per id, however often it is named).
    pub(crate) fn register_all<'a>(&'a self, ids: &'a [String]) -> Registration<'a> {
        let (tx, inbox) = mpsc::unbounded_channel();
        let mut map = self.lock();
        map.reserve(ids.len());
        let registered = ids.iter().filter(|id| add(&mut map, id, &tx)).count();
        Registration {
            waiters: self,
            ids,
            inbox,
            registered,
            received: 0,
        }
    }

    /// Drops the waiters of `ids` that gave up, and the ids no one waits for.
    fn forget(&self, ids: &[String]) {
        let mut map = self.lock();
        for id in ids {
            if let Some(list) = map.get_mut(id) {
                list.retain(|w| !w.is_closed());
                if list.is_empty() {
                    map.remove(id);
                }
            }
        }
    }

    /// How many ids someone waits for.
    #[cfg(test)]
    pub(crate) fn waited_for(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Senders> {
        match self.by_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Hands each settled task's line to its waiters (built only for an id
    /// someone waits for).
    pub(crate) fn settled(&self, done: impl IntoIterator<Item = (String, TaskState, String)>) {
        let mut map = self.lock();
        if map.is_empty() {
            return;
        }
        for (id, state, line) in done {
            let Some(waiting) = map.remove(&id) else {
                continue;
            };
            let settled = Arc::new(Settled { id, state, line });
            for w in waiting {
                let _ = w.send(settled.clone());
            }
        }
    }
}

/// Adds `inbox` as a waiter for `id` (once), dropping the waiters that gave
/// up; `false` when it was one already.
fn add(map: &mut Senders, id: &str, inbox: &mpsc::UnboundedSender<Arc<Settled>>) -> bool {
    // The id is copied only for a new entry.
    let Some(list) = map.get_mut(id) else {
        map.insert(id.to_owned(), vec![inbox.clone()]);
        return true;
    };
    list.retain(|w| !w.is_closed());
    let new = !list.iter().any(|w| w.same_channel(inbox));
    if new {
        list.push(inbox.clone());
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|&id| id.to_owned()).collect()
    }

    /// Settled tasks as the feeder hands them over.
    fn done(items: &[(&str, TaskState, &str)]) -> Vec<(String, TaskState, String)> {
        items
            .iter()
            .map(|&(id, state, line)| (id.to_owned(), state, line.to_owned()))
            .collect()
    }

    fn held(waiters: &Waiters, id: &str) -> usize {
        waiters.lock().get(id).map_or(0, Vec::len)
    }

    #[test]
    fn every_waiter_of_an_id_gets_its_line_and_others_wait_on() {
        let waiters = Waiters::default();
        let (a, b) = (ids(&["a"]), ids(&["b"]));
        let (mut a1, mut a2, mut b1) = (
            waiters.register_all(&a),
            waiters.register_all(&a),
            waiters.register_all(&b),
        );
        waiters.settled(done(&[
            ("a", TaskState::Ok, r#"{"id":"a"}"#),
            ("c", TaskState::Failed, "{}"),
        ]));
        let want = Settled {
            id: "a".to_owned(),
            state: TaskState::Ok,
            line: r#"{"id":"a"}"#.to_owned(),
        };
        assert_eq!(*a1.inbox.try_recv().unwrap(), want);
        assert_eq!(*a2.inbox.try_recv().unwrap(), want);
        assert!(a1.inbox.try_recv().is_err());
        assert!(b1.inbox.try_recv().is_err());
        waiters.settled(done(&[("b", TaskState::DeadLetter, "{}")]));
        assert_eq!(b1.inbox.try_recv().unwrap().state, TaskState::DeadLetter);
    }

    /// A registration counts each of its ids once, and one that received a
    /// line for each leaves none behind when it ends (it has nothing to
    /// take out of the waiters).
    #[tokio::test]
    async fn a_registration_that_received_every_line_leaves_nothing_behind() {
        let waiters = Waiters::default();
        let named = ids(&["a", "b", "a"]);
        let mut rx = waiters.register_all(&named);
        assert_eq!(rx.registered, 2);
        waiters.settled(done(&[
            ("b", TaskState::Ok, "1"),
            ("a", TaskState::Ok, "2"),
        ]));
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 8).await, 2);
        assert_eq!(rx.received, rx.registered);
        drop(rx);
        assert_eq!(waiters.waited_for(), 0);
    }

    #[test]
    fn a_registration_gets_each_of_its_ids_once_as_they_settle() {
        let waiters = Waiters::default();
        let named = ids(&["a", "b", "a"]);
        let mut rx = waiters.register_all(&named);
        waiters.settled(done(&[("a", TaskState::Ok, "1")]));
        let got = rx.inbox.try_recv().unwrap();
        assert_eq!((got.id.as_str(), got.line.as_str()), ("a", "1"));
        assert!(rx.inbox.try_recv().is_err(), "a named twice is sent once");
        waiters.settled(done(&[("b", TaskState::Failed, "2")]));
        let got = rx.inbox.try_recv().unwrap();
        assert_eq!((got.id.as_str(), got.state), ("b", TaskState::Failed));
    }

    #[test]
    fn a_dropped_registration_leaves_no_id_behind_and_spares_the_others() {
        let waiters = Waiters::default();
        let (ab, a) = (ids(&["a", "b"]), ids(&["a"]));
        let mut stays = waiters.register_all(&a);
        drop(waiters.register_all(&ab));
        assert_eq!(
            held(&waiters, "a"),
            1,
            "the other request still waits for a"
        );
        assert_eq!(held(&waiters, "b"), 0);
        assert!(!waiters.lock().contains_key("b"));
        waiters.settled(done(&[("a", TaskState::Ok, "{}")]));
        assert!(stays.inbox.try_recv().is_ok());
        drop(stays);
        assert!(waiters.lock().is_empty());
    }

    #[tokio::test]
    async fn a_registration_reads_batches_of_lines() {
        let waiters = Waiters::default();
        let named = ids(&["a", "b", "c"]);
        let mut rx = waiters.register_all(&named);
        waiters.settled(done(&[
            ("a", TaskState::Ok, "1"),
            ("b", TaskState::Ok, "2"),
        ]));
        waiters.settled(done(&[("c", TaskState::Ok, "3")]));
        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 2).await, 2);
        assert_eq!(rx.recv_many(&mut batch, 2).await, 1);
        let got: Vec<&str> = batch.iter().map(|s| s.line.as_str()).collect();
        assert_eq!(got, ["1", "2", "3"]);
    }
}
