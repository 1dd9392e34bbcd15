//! The names of the task types callers queued, shared between their tasks.

use std::collections::HashSet;
use std::sync::Arc;

/// Distinct task types whose names are shared between queued tasks.
const MAX_SHARED_NAMES: usize = 1024;

/// The names of the task types callers queued in one shard: every task of a
/// type gets one allocation of its name (up to [`MAX_SHARED_NAMES`] distinct
/// types; beyond, tasks keep their own), so tasks made on many threads hold
/// one copy, and a lane tells the next task's type by its pointer. The last
/// name is compared first: a batch is often of one type.
#[derive(Default)]
pub(super) struct TypeNames {
    known: HashSet<Arc<str>>,
    last: Option<Arc<str>>,
}

impl TypeNames {
    pub(super) fn share(&mut self, name: &mut Arc<str>) {
        if let Some(last) = &self.last {
            if Arc::ptr_eq(last, name) {
                return;
            }
            if **last == **name {
                *name = last.clone();
                return;
            }
        }
        if let Some(known) = self.known.get(name) {
            *name = known.clone();
            self.last = Some(known.clone());
        } else if self.known.len() < MAX_SHARED_NAMES {
            self.known.insert(name.clone());
            self.last = Some(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_of_one_type_share_its_name_whichever_allocation_they_came_with() {
        let mut names = TypeNames::default();
        let mut first: Arc<str> = Arc::from("resize");
        names.share(&mut first);
        for other in ["thumb", "resize", "thumb", "resize"] {
            let mut name: Arc<str> = Arc::from(other);
            names.share(&mut name);
            assert_eq!(&*name, other);
            if other == "resize" {
                assert!(Arc::ptr_eq(&name, &first), "a second copy of {other}");
            }
        }
        assert_eq!(names.known.len(), 2);
    }
}
