//! One of the pool's event streams: a broadcast channel, and whether anyone
//! ever subscribed to it. Asking the channel how many receivers it has takes
//! its lock; a pool nobody ever listened to (the common case, and the one
//! whose task path is measured) answers from the flag, so the routine events
//! of each task cost one relaxed load.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio::sync::broadcast;

use super::events::PoolEvent;

/// A broadcast channel of [`PoolEvent`]s that knows whether it was ever
/// subscribed to.
#[derive(Debug)]
pub(crate) struct EventStream {
    sender: broadcast::Sender<PoolEvent>,
    /// Set by the first subscription and never cleared: after it, whether
    /// someone listens is asked of the channel.
    subscribed: AtomicBool,
}

impl EventStream {
    /// The stream of `sender`, or of a new channel of `capacity` events.
    /// A given sender counts as subscribed to (its receivers were made before
    /// the pool started).
    pub(crate) fn new(sender: Option<broadcast::Sender<PoolEvent>>, capacity: usize) -> Self {
        let subscribed = sender.is_some();
        Self {
            sender: sender.unwrap_or_else(|| broadcast::channel(capacity.max(1)).0),
            subscribed: AtomicBool::new(subscribed),
        }
    }

    /// A receiver of every event sent from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.subscribed.store(true, Relaxed);
        self.sender.subscribe()
    }

    /// Whether an event sent now has a receiver (a subscription made while
    /// this is asked may miss the event, as it would miss one sent just
    /// before it subscribed).
    #[inline]
    pub(crate) fn listened(&self) -> bool {
        self.subscribed.load(Relaxed) && self.sender.receiver_count() > 0
    }

    /// Sends `event` to every receiver (none is no error).
    pub(crate) fn send(&self, event: PoolEvent) {
        let _ = self.sender.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> PoolEvent {
        PoolEvent::TaskQueued {
            task: 1,
            priority: 0,
        }
    }

    #[test]
    fn a_stream_nobody_subscribed_to_is_not_listened() {
        let stream = EventStream::new(None, 4);
        assert!(!stream.listened());
    }

    #[test]
    fn a_subscriber_is_heard_until_it_leaves() {
        let stream = EventStream::new(None, 4);
        let mut rx = stream.subscribe();
        assert!(stream.listened());
        stream.send(event());
        assert!(matches!(
            rx.try_recv(),
            Ok(PoolEvent::TaskQueued { task: 1, .. })
        ));
        drop(rx);
        assert!(!stream.listened(), "a receiver that left still counts");
    }

    #[test]
    fn receivers_made_before_the_pool_started_are_listened() {
        let (sender, mut rx) = broadcast::channel(4);
        let stream = EventStream::new(Some(sender), 4);
        assert!(stream.listened());
        stream.send(event());
        assert!(rx.try_recv().is_ok());
    }
}
