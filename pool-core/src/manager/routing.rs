//! Routing by task type: a worker that lists its task types in `ready` is sent
//! only tasks of those types; a worker that lists none takes every task.
//!
//! Pools whose workers state no types pay nothing per task: while building the
//! candidate list, dispatch notes whether any candidate stated its types, and
//! only then (or while tasks are held) routes. When every candidate stated the
//! same types (one worker program: the usual case with an SDK), a task costs one
//! look-up in that sorted list ([`Actor::dispatch_uniform`]); mixed pools take the
//! general routed pass ([`Actor::dispatch_routed`]).
//!
//! On the routed path a task that no candidate takes is *held* (set aside by type)
//! instead of blocking the tasks behind it, and is served from there, by
//! priority, as soon as a candidate that takes its type has room. A held task
//! ends with the failure `unroutable`:
//! - at once when no worker will ever take it: every live worker (ready or
//!   suspect) stated its types, none lists this one, and no worker is starting,
//!   due to restart, or being rolled in;
//! - when it waited longer than its own timeout while no live worker took its
//!   type (only workers still starting might).
//!
//! A task whose type a live worker takes waits like any queued task, however
//! long that worker stays busy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::actor::{Actor, Pending, Phase};
use super::dispatch::{Assigned, Source};
use super::failure::Failure;
use super::handle::FinalStatus;
use crate::queue::PriorityQueue;

/// The task types a worker stated in `ready`, sorted; `None` when it stated
/// none (it takes every task). Shared, so a dispatch pass copies it cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskTypes(Option<Arc<[Box<str>]>>);

impl TaskTypes {
    /// From a `ready` frame's list (empty: not stated).
    pub(crate) fn from_ready(types: &[&str]) -> Self {
        if types.is_empty() {
            return Self(None);
        }
        let mut list: Vec<Box<str>> = types.iter().map(|t| Box::from(*t)).collect();
        list.sort_unstable();
        list.dedup();
        Self(Some(list.into()))
    }

    /// Whether the worker stated its types.
    pub(crate) fn stated(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a worker with these types takes a task of `task_type`.
    pub(crate) fn accepts(&self, task_type: &str) -> bool {
        match &self.0 {
            None => true,
            Some(list) => list.binary_search_by(|t| (**t).cmp(task_type)).is_ok(),
        }
    }

    /// The stated types (none when not stated).
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().flat_map(|list| list.iter().map(|t| &**t))
    }
}

/// Task types a lane or the desk takes from the queue, and the last type found
/// taken: the queue shares one allocation of a type's name between tasks, so
/// the next task of that type is told by its pointer, and a task handed over
/// without being queued (its own allocation) by a comparison with that name,
/// neither looking through the list.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeFilter {
    types: TaskTypes,
    last: Option<Arc<str>>,
}

impl TypeFilter {
    pub(crate) fn new(types: TaskTypes) -> Self {
        Self { types, last: None }
    }

    /// Whether a task of `task_type` is taken (every task, by a worker that
    /// stated no types).
    #[inline]
    pub(crate) fn takes(&mut self, task_type: &Arc<str>) -> bool {
        if !self.types.stated() {
            return true;
        }
        if let Some(last) = &self.last {
            if Arc::ptr_eq(last, task_type) || **last == **task_type {
                return true;
            }
        }
        let taken = self.types.accepts(task_type);
        if taken {
            self.last = Some(task_type.clone());
        }
        taken
    }
}

/// Tasks set aside because no candidate took their type when their turn came.
#[derive(Default)]
pub(crate) struct Held {
    by_type: HashMap<Arc<str>, PriorityQueue<Pending>>,
    len: usize,
}

impl Held {
    /// How many tasks are held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, pending: Pending) {
        let priority = pending.task.priority;
        self.by_type
            .entry(pending.task.task_type.clone())
            .or_default()
            .push(priority, pending);
        self.len += 1;
    }

    fn pop(&mut self, task_type: &str) -> Option<Pending> {
        let queue = self.by_type.get_mut(task_type)?;
        let pending = queue.pop()?;
        if queue.is_empty() {
            self.by_type.remove(task_type);
        }
        self.len -= 1;
        Some(pending)
    }

    /// Removes task `id` (a caller cancelled it).
    pub(crate) fn remove(&mut self, id: u64) -> Option<Pending> {
        let (task_type, pending) = self
            .by_type
            .iter_mut()
            .find_map(|(t, q)| q.remove_first(|p| p.id == id).map(|p| (t.clone(), p)))?;
        if self
            .by_type
            .get(&task_type)
            .is_some_and(PriorityQueue::is_empty)
        {
            self.by_type.remove(&task_type);
        }
        self.len -= 1;
        Some(pending)
    }

    /// Takes every held task out (shutdown).
    pub(crate) fn take_all(&mut self) -> Vec<Pending> {
        self.len = 0;
        self.by_type
            .drain()
            .flat_map(|(_, mut q)| q.drain().collect::<Vec<_>>())
            .collect()
    }

    /// Takes out every held task of `task_type`.
    fn take_type(&mut self, task_type: &str) -> Vec<Pending> {
        let Some(mut queue) = self.by_type.remove(task_type) else {
            return Vec::new();
        };
        self.len -= queue.len();
        queue.drain().collect()
    }

    /// Takes out the held tasks of `task_type` that `expired` says are due.
    fn take_if(
        &mut self,
        task_type: &str,
        mut expired: impl FnMut(&Pending) -> bool,
    ) -> Vec<Pending> {
        let Some(queue) = self.by_type.get_mut(task_type) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        while let Some(p) = queue.remove_first(&mut expired) {
            taken.push(p);
        }
        if queue.is_empty() {
            self.by_type.remove(task_type);
        }
        self.len -= taken.len();
        taken
    }
}

/// What a routed dispatch step assigns next.
enum Next {
    /// A held task, taken out of the held ones.
    Held(Pending),
    /// The queue's head, of this type (some candidate takes it), still queued.
    Head(Arc<str>),
}

/// What a routed dispatch step found at the head of the queue.
enum Queued {
    Empty,
    /// A task of a type some candidate takes, left in place.
    Wanted(Arc<str>),
    /// A task of a type no candidate takes, taken out to be held.
    NoTaker(Pending),
}

/// Whether a task type can be served.
enum Route {
    /// A live worker takes it: it waits for room like any task.
    Live,
    /// Only a worker still to come might: it waits at most its timeout.
    Starting,
    /// No worker will: these are the types the live workers take.
    Never(Vec<String>),
}

impl Actor {
    /// Dispatch when every candidate takes exactly `types` and nothing is held:
    /// the queue's head goes to the policy's pick if its type is listed, else it
    /// is held (or fails `unroutable`) and the next one is looked at.
    pub(crate) fn dispatch_uniform(&mut self, types: &TaskTypes, capacity: u32, by_policy: bool) {
        while !self.candidates.is_empty() {
            // A head no worker takes is held at once; one they take is taken
            // once the pick's book is locked (`Source::Head`).
            let unaccepted = {
                let mut waiting = self.queue.lock();
                match waiting.peek() {
                    None => break,
                    Some(head) if !types.accepts(&head.task.task_type) => waiting.pop(),
                    Some(_) => None,
                }
            };
            if let Some(pending) = unaccepted {
                self.hold(pending);
                continue;
            }
            let picked = if by_policy {
                self.policy_pick()
            } else {
                Some(super::dispatch::least_filled(&self.candidates))
            };
            let Some(index) = picked else {
                break;
            };
            let num = self.candidates[index].id;
            let accepts = |p: &Pending| types.accepts(&p.task.task_type);
            let assigned = self.assign(num, Source::Head(&accepts));
            if matches!(assigned, Assigned::QueueEmpty) {
                break;
            }
            self.after_assign(index, num, capacity, assigned);
        }
    }

    /// The routed dispatch pass (see the module docs): the candidate list is
    /// built; each step serves the most urgent task some candidate takes.
    pub(crate) fn dispatch_routed(&mut self, capacity: u32, by_policy: bool) {
        self.settle_unroutable();
        while !self.candidates.is_empty() {
            let Some(next) = self.next_routable() else {
                break;
            };
            let task_type = match &next {
                Next::Held(pending) => Arc::clone(&pending.task.task_type),
                Next::Head(task_type) => Arc::clone(task_type),
            };
            let Some(index) = self.pick_for(&task_type, by_policy) else {
                // The desk is held by a caller (the pass runs again shortly;
                // `next_routable` only names a task a candidate takes).
                if let Next::Held(pending) = next {
                    self.keep_held(pending);
                }
                break;
            };
            let num = self.candidates[index].id;
            let assigned = match next {
                Next::Held(pending) => self.assign(num, Source::InHand(pending)),
                // The head it looked at, if it still leads the queue.
                Next::Head(_) => {
                    let same_type = |p: &Pending| p.task.task_type == task_type;
                    self.assign(num, Source::Head(&same_type))
                }
            };
            if !matches!(assigned, Assigned::QueueEmpty) {
                self.after_assign(index, num, capacity, assigned);
            }
        }
    }

    /// Whether worker `num` takes tasks of `task_type`.
    fn takes(&self, num: u64, task_type: &str) -> bool {
        self.workers
            .get(&num)
            .is_some_and(|w| w.task_types.accepts(task_type))
    }

    /// Whether some candidate takes tasks of `task_type`.
    fn candidate_takes(&self, task_type: &str) -> bool {
        self.candidates.iter().any(|c| self.takes(c.id, task_type))
    }

    /// The next task to assign: the most urgent of the queue's head and the held
    /// tasks some candidate takes (held first among equals: they were there
    /// first). Queue heads no candidate takes are held on the way; a head one
    /// takes stays in the queue, named by its type, until a worker's book is
    /// locked to take it (`Source::Head`).
    fn next_routable(&mut self) -> Option<Next> {
        loop {
            let held_best = self
                .held
                .by_type
                .iter()
                .filter_map(|(t, q)| Some((q.peek()?.task.priority, t)))
                .filter(|(_, t)| self.candidate_takes(t))
                .min_by_key(|(priority, _)| *priority)
                .map(|(priority, t)| (priority, t.clone()));
            // The head is looked at, and taken when no candidate takes it,
            // under one lock, so no lane takes it in between.
            let queued = {
                let mut waiting = self.queue.lock();
                let head = waiting
                    .peek()
                    .map(|p| (p.task.priority, Arc::clone(&p.task.task_type)));
                match (&held_best, head) {
                    (Some((held, _)), head) if head.as_ref().is_none_or(|q| *held <= q.0) => None,
                    (_, None) => Some(Queued::Empty),
                    (_, Some((_, task_type))) if self.candidate_takes(&task_type) => {
                        Some(Queued::Wanted(task_type))
                    }
                    (_, Some(_)) => waiting.pop().map(Queued::NoTaker),
                }
            };
            match (held_best, queued) {
                (Some((_, task_type)), None) => {
                    return self.held.pop(&task_type).map(Next::Held);
                }
                (_, Some(Queued::Wanted(task_type))) => return Some(Next::Head(task_type)),
                (_, Some(Queued::NoTaker(pending))) => self.hold(pending),
                _ => return None,
            }
        }
    }

    /// The candidate for a task of `task_type`: the policy's pick among the
    /// candidates that take it (the least filled when not `by_policy`).
    fn pick_for(&mut self, task_type: &str, by_policy: bool) -> Option<usize> {
        let mut eligible = std::mem::take(&mut self.eligible);
        let mut positions = std::mem::take(&mut self.eligible_at);
        eligible.clear();
        positions.clear();
        for (i, c) in self.candidates.iter().enumerate() {
            if self.takes(c.id, task_type) {
                eligible.push(*c);
                positions.push(i);
            }
        }
        let picked = if eligible.is_empty() {
            None
        } else if by_policy {
            let picked = self.shared.desk.try_pick(&eligible);
            if picked.is_none() {
                self.desk_busy();
            }
            picked
        } else {
            Some(super::dispatch::least_filled(&eligible))
        };
        let index = picked.map(|p| positions[p]);
        self.eligible = eligible;
        self.eligible_at = positions;
        index
    }

    /// Holds a task no candidate takes now, or fails it when no worker ever will.
    fn hold(&mut self, pending: Pending) {
        match self.route(&pending.task.task_type) {
            Route::Never(offered) => self.fail_unroutable(pending, &offered, None),
            Route::Live | Route::Starting => self.keep_held(pending),
        }
    }

    /// Adds `pending` to the held tasks. Lanes stop taking from the queue at
    /// once (the actor alone weighs held tasks against queued ones); they may
    /// again when nothing is held (`after_change`).
    fn keep_held(&mut self, pending: Pending) {
        if self.queue.lanes_may_take() {
            self.queue.lock().set_lanes_may_take(false);
        }
        self.held.push(pending);
    }

    /// Fails the held tasks that no worker will take, and those that waited past
    /// their timeout while only a worker yet to start might take them.
    fn settle_unroutable(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let types: Vec<Arc<str>> = self.held.by_type.keys().cloned().collect();
        let now = self.shared.clock.now().moment;
        let default_timeout = self.config.task_timeout;
        for task_type in types {
            let (offered, due): (Vec<String>, Vec<Pending>) = match self.route(&task_type) {
                Route::Live => continue,
                Route::Never(offered) => (offered, self.held.take_type(&task_type)),
                Route::Starting => {
                    let due = self.held.take_if(&task_type, |p| {
                        let timeout = p.task.timeout().unwrap_or(default_timeout);
                        now.since(p.queued_at) >= timeout
                    });
                    (self.offered_types(), due)
                }
            };
            for pending in due {
                let waited = pending.task.timeout().unwrap_or(default_timeout);
                self.fail_unroutable(pending, &offered, Some(waited));
            }
        }
    }

    /// Whether, and by whom, tasks of `task_type` can be served.
    fn route(&self, task_type: &str) -> Route {
        let mut live = false;
        for w in self.workers.values() {
            if !w.life.is_serving() {
                continue;
            }
            if w.task_types.accepts(task_type) {
                return Route::Live;
            }
            live = true;
        }
        let coming = !self.launching.is_empty()
            || self.respawns_pending > 0
            || self.roll.is_some()
            || self.phase == Phase::Starting;
        if coming || !live {
            Route::Starting
        } else {
            Route::Never(self.offered_types())
        }
    }

    /// The task types the live workers take, sorted, without duplicates.
    fn offered_types(&self) -> Vec<String> {
        let mut offered: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.life.is_serving())
            .flat_map(|w| w.task_types.names().map(str::to_owned))
            .collect();
        offered.sort_unstable();
        offered.dedup();
        offered
    }

    fn fail_unroutable(&mut self, pending: Pending, offered: &[String], waited: Option<Duration>) {
        let failure = Failure::Unroutable {
            task_type: pending.task.task_type.to_string(),
            offered: offered.to_vec(),
            waited,
        };
        self.settle_error(pending, FinalStatus::Failed, failure);
    }
}
