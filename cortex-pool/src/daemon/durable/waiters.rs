//! Who waits for which task id: `wait`, `submit --wait`. The feeder hands an
//! id's waiters its final line once the settlement is committed, so a waiter
//! answers without reading the task back from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// A receiver that gets `id`'s final line when it settles.
    pub(crate) fn register(&self, id: &str) -> oneshot::Receiver<Arc<Settled>> {
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

    /// Hands each settled task's line to its waiters (built only for an id
    /// someone waits for).
    pub(crate) fn settled<'a>(
        &self,
        done: impl IntoIterator<Item = (&'a str, TaskState, &'a str)>,
    ) {
        let mut map = match self.by_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiter_of_an_id_gets_its_line_and_others_wait_on() {
        let waiters = Waiters::default();
        let mut a1 = waiters.register("a");
        let mut a2 = waiters.register("a");
        let mut b = waiters.register("b");
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
    fn a_waiter_that_gave_up_is_dropped_at_the_next_registration() {
        let waiters = Waiters::default();
        drop(waiters.register("a"));
        let mut again = waiters.register("a");
        let held = |w: &Waiters| w.by_id.lock().unwrap().get("a").map_or(0, Vec::len);
        assert_eq!(held(&waiters), 1);
        waiters.settled([("a", TaskState::Ok, "{}")]);
        assert!(again.try_recv().is_ok());
        assert_eq!(held(&waiters), 0);
    }
}
