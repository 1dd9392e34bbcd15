//! The registered handlers by task type, and the dispatcher's lookup of them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
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
}

impl Lookup {
    pub(crate) fn new(handlers: Handlers) -> Self {
        Self {
            handlers,
            last: None,
        }
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
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::handler::erase_raw;
    use crate::TaskContext;

    #[test]
    fn the_last_handler_found_answers_for_the_known_type() {
        let mut handlers = Handlers::default();
        for name in ["a", "b"] {
            let registered = Registered {
                task_type: Arc::from(name),
                handler: erase_raw(|_ctx: TaskContext, payload: Bytes| async move { Ok(payload) }),
            };
            handlers.insert(name.to_owned(), registered);
        }
        let mut lookup = Lookup::new(handlers);
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
