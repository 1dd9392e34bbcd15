use std::time::Duration;

use super::*;
use crate::manager::actor::Pending;
use crate::manager::clock::{Moment, PoolClock};
use crate::manager::ledger::Answer;
use crate::task::Task;

fn pending(id: u64, priority: u8, queued_at: Moment) -> Pending {
    let (answer, _outcome) = Answer::new();
    let task = Task::new("echo", Vec::new()).with_priority(priority);
    Pending {
        queued_at,
        ..Pending::new(id, task, answer)
    }
}

/// Queues a new task (its record not yet stamped: `push_new` stamps it).
fn push(queue: &SharedQueue, shard: usize, id: u64, priority: u8, queued_at: Moment) {
    let (answer, _outcome) = Answer::new();
    let task = Task::new("echo", Vec::new()).with_priority(priority);
    queue
        .shard(shard)
        .push_new(Pending::new(id, task, answer), queued_at);
}

#[test]
fn the_whole_queue_pops_by_priority_then_by_queueing_time_across_shards() {
    let queue = SharedQueue::new(3);
    let t = PoolClock::new().now().moment;
    push(&queue, 0, 1, 20, t);
    push(&queue, 1, 2, 10, t + Duration::from_millis(2));
    push(&queue, 2, 3, 10, t + Duration::from_millis(1));
    push(&queue, 2, 4, 5, t + Duration::from_millis(3));
    let mut whole = queue.lock();
    assert_eq!(whole.len(), 4);
    assert_eq!(whole.peek().map(|p| p.id), Some(4));
    let order: Vec<u64> = std::iter::from_fn(|| whole.pop()).map(|p| p.id).collect();
    assert_eq!(order, [4, 3, 2, 1]);
    assert!(whole.is_empty());
}

#[test]
fn each_shard_leaves_its_head_behind_and_lanes_pick_the_first_head_given_one_first_among_equals() {
    let queue = SharedQueue::new(4);
    let t = PoolClock::new().now().moment;
    assert!(queue.looks_empty());
    assert_eq!(queue.best_shard(2), None);
    push(&queue, 1, 1, 10, t);
    push(&queue, 3, 2, 10, t);
    assert!(!queue.looks_empty());
    // Equal heads: the one asked for first, else the next one after it.
    assert_eq!(queue.best_shard(3), Some(3));
    assert_eq!(queue.best_shard(2), Some(3));
    assert_eq!(queue.best_shard(0), Some(1));
    // A higher priority elsewhere comes first.
    push(&queue, 0, 3, 0, t);
    assert_eq!(queue.best_shard(3), Some(0));
    // Taking it leaves shard 0 empty again.
    assert!(matches!(queue.shard(0).pop_if(|_| true), Head::Taken(p) if p.id == 3));
    assert_eq!(queue.best_shard(0), Some(1));
    let drained: Vec<u64> = queue.lock().drain().into_iter().map(|p| p.id).collect();
    assert_eq!(drained.len(), 2);
    assert!(queue.looks_empty());
}

#[test]
fn requeued_tasks_go_back_in_front_of_their_own_shard_and_cancels_find_tasks_in_any() {
    let queue = SharedQueue::new(2);
    let t = PoolClock::new().now().moment;
    push(&queue, 1, 1, 10, t);
    push(&queue, 1, 2, 10, t + Duration::from_millis(2));
    push(&queue, 0, 4, 10, t + Duration::from_millis(3));
    // Task 3 was queued in shard 1 before 2, taken out, and goes back.
    let mut taken = pending(3, 10, t + Duration::from_millis(1));
    taken.shard = 1;
    let mut whole = queue.lock();
    whole.push_front(taken);
    assert_eq!(whole.remove_first(|p| p.id == 4).map(|p| p.id), Some(4));
    assert!(whole.remove_first(|p| p.id == 4).is_none());
    let depth = whole.depth();
    assert_eq!((depth.len, depth.by_band, depth.shards), (3, [3, 0, 0], 2));
    drop(whole);
    assert!(matches!(queue.shard(1).pop_if(|_| true), Head::Taken(p) if p.id == 3));
    push(&queue, 0, 5, 10, t + Duration::from_millis(1));
    assert_eq!(
        queue
            .lock()
            .drain()
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>(),
        [1, 5, 2],
        "by priority, then by queueing time"
    );
}

#[test]
fn flags_change_only_under_every_lock_and_say_what_is_left() {
    let queue = SharedQueue::new(2);
    assert_eq!(
        queue.left(),
        Left::Unknown,
        "lanes may not take before the actor says so"
    );
    queue.lock().set_lanes_may_take(true);
    assert_eq!(queue.left(), Left::Nothing);
    push(&queue, 1, 1, 10, PoolClock::new().now().moment);
    assert_eq!(queue.left(), Left::Tasks);
    assert!(queue.shard(1).lanes_may_take() && !queue.shard(0).closed());
    queue.lock().close_to_callers();
    assert!(queue.shard(0).closed());
    assert_eq!(queue.left(), Left::Unknown);
}

#[test]
fn a_thread_keeps_its_callers_shard_and_threads_are_dealt_different_ones() {
    let queue = SharedQueue::new(4);
    let mine = queue.callers_shard();
    assert_eq!(queue.callers_shard(), mine);
    let others: Vec<usize> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || queue.callers_shard())
                .join()
                .expect("thread")
        })
        .collect();
    assert!(
        others.iter().any(|&shard| shard != mine),
        "{mine} {others:?}"
    );
    assert_eq!(SharedQueue::new(1).callers_shard(), 0);
}

#[test]
fn one_shard_when_strict_order_is_asked_for() {
    assert_eq!(auto_shards(0, 64), 1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(auto_shards(64, 64), (cores.min(64) / 2).clamp(1, 16));
    assert_eq!(auto_shards(64, 1), 1);
}

#[tokio::test]
async fn rings_before_the_actor_listens_are_heard_once_and_a_later_one_wakes_it() {
    let queue = SharedQueue::new(1);
    queue.ring();
    queue.ring();
    tokio::time::timeout(Duration::from_secs(5), queue.rung())
        .await
        .expect("a ring before listening is heard");
    let mut listening = std::pin::pin!(queue.rung());
    assert!(
        futures_util::poll!(listening.as_mut()).is_pending(),
        "two rings were heard as two"
    );
    let ringer = queue.clone();
    tokio::spawn(async move { ringer.ring() });
    tokio::time::timeout(Duration::from_secs(5), listening)
        .await
        .expect("a ring while listening wakes the listener");
}
