//! The registered handlers by task type, and the dispatcher's lookup of them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::handler::ErasedHandler;
use crate::wire::TaskType;

/// The handlers by task type. Task types come from the manager, not from strangers,
/// so a cheap FNV-1a hash serves the lookup of every task (SipHash cost more than the
/// rest of the lookup).
pub(crate) type Handlers = HashMap<String, Registered, BuildHasherDefault<Fnv>>;

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The handlers, looked up by the dispatcher: the last one found is kept at hand,
/// since a run of tasks of one type is the common case.
pub(crate) struct Lookup {
    handlers: Handlers,
    last: Option<Registered>,
    /// How each type's tasks started, at [`Registered::pace`].
    paces: Box<[Pace]>,
    /// How many of them count as blocking: while none does (the common case),
    /// a task's start does not look at its own.
    blocking: AtomicUsize,
}

impl Lookup {
    pub(crate) fn new(mut handlers: Handlers) -> Self {
        for (at, registered) in handlers.values_mut().enumerate() {
            registered.pace = at;
        }
        let paces = handlers.values().map(|_| Pace::default()).collect();
        Self {
            handlers,
            last: None,
            paces,
            blocking: AtomicUsize::new(0),
        }
    }

    /// Whether a task of the type with [`Registered::pace`] `at` that starts
    /// now, after held replies, counts as blocking ([`Pace::starts`]).
    #[inline]
    pub(crate) fn starts(&self, at: usize) -> bool {
        self.blocking.load(Ordering::Relaxed) != 0 && self.paces[at].starts(&self.blocking)
    }

    /// Notes that a task of the type with [`Registered::pace`] `at` held the
    /// thread for longer than the hold as it started ([`Pace::slow`]).
    pub(crate) fn slow(&self, at: usize) {
        self.paces[at].slow(&self.blocking);
    }

    /// The type of the last handler found, if any: a frame of this type need not
    /// have it read again ([`TaskType::Known`]).
    #[inline]
    pub(crate) fn last_type(&self) -> Option<&str> {
        self.last.as_ref().map(|last| &*last.task_type)
    }

    /// The handler for tasks of `task_type`; the type's name when there is none.
    #[inline]
    pub(crate) fn get<'a>(&mut self, task_type: &TaskType<'a>) -> Result<&Registered, &'a str> {
        if let TaskType::Named(name) = *task_type {
            self.last = Some(self.handlers.get(name).ok_or(name)?.clone());
        }
        // `Known` comes only from a frame decoded with `last_type`, which then was
        // `Some`: this is that handler.
        self.last.as_ref().ok_or("")
    }
}

/// A handler with its task type, shared (not copied) by every task's context.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) task_type: Arc<str>,
    pub(crate) handler: ErasedHandler,
    /// Where the type's [`Pace`] is in the [`Lookup`] (set by [`Lookup::new`]).
    pub(crate) pace: usize,
}

/// With batched replies, a task type counts as blocking once a task of it held
/// the thread for longer than the hold as it started, until this many of its
/// tasks in a row did not (the same number as the Node SDK's).
pub(crate) const QUICK_RUNS_TO_FORGIVE: u32 = 100;

/// Whether a task type counts as blocking: a task of it held the dispatcher's
/// thread for longer than the hold as it started (until its first poll
/// returned), and fewer than [`QUICK_RUNS_TO_FORGIVE`] of its tasks in a row did
/// not since. The dispatcher writes the replies it holds before it starts a
/// task of a blocking type (see `dispatch`), so that the task does not delay
/// them; a pause that was not the handler's (the thread was preempted) costs
/// the type's next tasks their batching for a while, not for good.
///
/// Only the dispatcher reads and writes it (relaxed atomics: plain loads and
/// stores, and the dispatcher stays `Sync`).
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// How many quick starts in a row until the type is quick again; 0: quick.
    quick_to_go: AtomicU32,
}

impl Pace {
    /// Whether a task of this type that starts now, after held replies, counts
    /// as blocking; counts its start toward [`QUICK_RUNS_TO_FORGIVE`] (a start
    /// found slow later, [`slow`](Self::slow), starts the count again).
    /// `blocking`: how many types count as blocking, kept up to date.
    #[inline]
    fn starts(&self, blocking: &AtomicUsize) -> bool {
        let left = self.quick_to_go.load(Ordering::Relaxed);
        if left == 0 {
            return false;
        }
        self.quick_to_go.store(left - 1, Ordering::Relaxed);
        if left == 1 {
            let types = blocking.load(Ordering::Relaxed);
            blocking.store(types - 1, Ordering::Relaxed);
        }
        true
    }

    /// Notes that a task of this type held the thread for longer than the
    /// hold as it started. `blocking`: as for [`starts`](Self::starts).
    fn slow(&self, blocking: &AtomicUsize) {
        if self.quick_to_go.load(Ordering::Relaxed) == 0 {
            let types = blocking.load(Ordering::Relaxed);
            blocking.store(types + 1, Ordering::Relaxed);
        }
        self.quick_to_go
            .store(QUICK_RUNS_TO_FORGIVE, Ordering::Relaxed);
    }

    /// Whether tasks of this type count as blocking.
    #[cfg(test)]
    fn blocks(&self) -> bool {
        self.quick_to_go.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::handler::erase_raw;
    use crate::TaskContext;

    #[test]
    fn a_type_blocks_from_a_slow_start_until_enough_quick_ones_in_a_row() {
        let pace = Pace::default();
        let blocking = AtomicUsize::new(0);
        let types = || blocking.load(Ordering::Relaxed);
        assert!(!pace.starts(&blocking), "a type never seen slow is quick");
        assert!(!pace.blocks());
        pace.slow(&blocking);
        assert_eq!(types(), 1);
        for _ in 1..QUICK_RUNS_TO_FORGIVE {
            assert!(pace.starts(&blocking));
            assert!(pace.blocks());
        }
        // The 100th start in a row blocks too, and was slow.
        assert!(pace.starts(&blocking));
        assert_eq!(types(), 0);
        pace.slow(&blocking);
        assert!(pace.blocks(), "a slow start counts from the start again");
        pace.slow(&blocking);
        assert_eq!(types(), 1, "counted once");
        for _ in 0..QUICK_RUNS_TO_FORGIVE {
            assert!(pace.starts(&blocking));
        }
        assert!(!pace.blocks(), "quick again after 100 quick starts");
        assert_eq!(types(), 0);
        assert!(!pace.starts(&blocking));
    }

    /// A lookup of two echo handlers, types `a` and `b`.
    fn echoes_a_and_b() -> Lookup {
        let mut handlers = Handlers::default();
        for name in ["a", "b"] {
            let registered = Registered {
                task_type: Arc::from(name),
                handler: erase_raw(|_ctx: TaskContext, payload: Bytes| async move { Ok(payload) }),
                pace: 0,
            };
            handlers.insert(name.to_owned(), registered);
        }
        Lookup::new(handlers)
    }

    #[test]
    fn each_type_has_a_pace_of_its_own() {
        let mut lookup = echoes_a_and_b();
        let a = lookup.get(&TaskType::Named("a")).map(|r| r.pace);
        let b = lookup.get(&TaskType::Named("b")).map(|r| r.pace);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("both are registered");
        };
        assert_ne!(a, b);
        assert!(!lookup.starts(a) && !lookup.starts(b));
        lookup.slow(a);
        assert!(lookup.starts(a), "a counts as blocking");
        assert!(!lookup.starts(b), "b does not");
    }

    #[test]
    fn the_last_handler_found_answers_for_the_known_type() {
        let mut lookup = echoes_a_and_b();
        let found = |lookup: &mut Lookup, task_type| {
            lookup
                .get(&task_type)
                .map(|registered| registered.task_type.to_string())
        };
        assert_eq!(lookup.last_type(), None);
        assert_eq!(found(&mut lookup, TaskType::Named("a")), Ok("a".into()));
        assert_eq!(lookup.last_type(), Some("a"));
        assert_eq!(found(&mut lookup, TaskType::Known), Ok("a".into()));
        assert_eq!(found(&mut lookup, TaskType::Named("b")), Ok("b".into()));
        assert_eq!(found(&mut lookup, TaskType::Named("zz")), Err("zz"));
        assert_eq!(lookup.last_type(), Some("b"), "a miss keeps the last one");
        assert_eq!(found(&mut lookup, TaskType::Known), Ok("b".into()));
    }
}
