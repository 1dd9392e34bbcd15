//! Who waits for which task id: `wait`, `submit --wait`. The feeder hands an
//! id's waiters its final line once the settlement is committed, so a waiter
//! answers without reading the task back from the store.

use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::HashMap;

use task_source::TaskState;
use tokio::sync::oneshot;

/// A task's final state and line, as the feeder committed them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Settled {
    /// The final state.
    pub(crate) state: TaskState,
    /// Its `run`-format line, JSON text.
    pub(crate) line: String,
}

/// Waiters by task id.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<String, Vec<oneshot::Sender<Arc<Settled>>>>>,
}

impl Waiters {
    /// A receiver for each of `ids`, in order, that gets the id's final line
    /// when it settles.
    pub(crate) fn register_all(&self, ids: &[String]) -> Vec<oneshot::Receiver<Arc<Settled>>> {
        let mut map = self.lock();
        map.reserve(ids.len());
        ids.iter().map(|id| add(&mut map, id)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Arc<Settled>>>>> {
        match self.by_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Hands each settled task's line to its waiters (built only for an id
    /// someone waits for).
    pub(crate) fn settled<'a>(
        &self,
        done: impl IntoIterator<Item = (&'a str, TaskState, &'a str)>,
    ) {
        let mut map = self.lock();
        if map.is_empty() {
            return;
        }
        for (id, state, line) in done {
            let Some(waiting) = map.remove(id) else {
                continue;
            };
            let settled = Arc::new(Settled {
                state,
                line: line.to_owned(),
            });
            for w in waiting {
                let _ = w.send(settled.clone());
            }
        }
    }
}

/// Adds a waiter for `id`, dropping the ones that gave up.
fn add(
    map: &mut HashMap<String, Vec<oneshot::Sender<Arc<Settled>>>>,
    id: &str,
) -> oneshot::Receiver<Arc<Settled>> {
    let (tx, rx) = oneshot::channel();
    if let Some(list) = map.get_mut(id) {
        list.retain(|w| !w.is_closed());
        list.push(tx);
    } else {
        map.insert(id.to_owned(), vec![tx]);
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver for each id, registered one call each.
    fn one_each<const N: usize>(
        waiters: &Waiters,
        ids: [&str; N],
    ) -> [oneshot::Receiver<Arc<Settled>>; N] {
        ids.map(|id| waiters.register_all(&[id.to_owned()]).remove(0))
    }

    #[test]
    fn every_waiter_of_an_id_gets_its_line_and_others_wait_on() {
        let waiters = Waiters::default();
        let [mut a1, mut a2, mut b] = one_each(&waiters, ["a", "a", "b"]);
        waiters.settled([
            ("a", TaskState::Ok, r#"{"id":"a"}"#),
            ("c", TaskState::Failed, "{}"),
        ]);
        let want = Settled {
            state: TaskState::Ok,
            line: r#"{"id":"a"}"#.to_owned(),
        };
        assert_eq!(*a1.try_recv().unwrap(), want);
        assert_eq!(*a2.try_recv().unwrap(), want);
        assert!(matches!(
            b.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        waiters.settled([("b", TaskState::DeadLetter, "{}")]);
        assert_eq!(b.try_recv().unwrap().state, TaskState::DeadLetter);
    }

    #[test]
    fn waiters_registered_together_get_their_own_ids_lines() {
        let waiters = Waiters::default();
        let ids = ["a".to_owned(), "b".to_owned(), "a".to_owned()];
        let mut rx = waiters.register_all(&ids);
        assert_eq!(rx.len(), 3);
        waiters.settled([("a", TaskState::Ok, "1")]);
        assert_eq!(rx[0].try_recv().unwrap().line, "1");
        assert_eq!(rx[2].try_recv().unwrap().line, "1");
        assert!(rx[1].try_recv().is_err());
        waiters.settled([("b", TaskState::Failed, "2")]);
        assert_eq!(rx[1].try_recv().unwrap().state, TaskState::Failed);
    }

    #[test]
    fn a_waiter_that_gave_up_is_dropped_at_the_next_registration() {
        let waiters = Waiters::default();
        drop(one_each(&waiters, ["a"]));
        let [mut again] = one_each(&waiters, ["a"]);
        let held = |w: &Waiters| w.lock().get("a").map_or(0, Vec::len);
        assert_eq!(held(&waiters), 1);
        waiters.settled([("a", TaskState::Ok, "{}")]);
        assert!(again.try_recv().is_ok());
        assert_eq!(held(&waiters), 0);
    }
}
