//! [`Delivery`]: one delivery of a message, and the order of what the
//! source tells the server about it: in-progress acks while it is held, then
//! one final answer (ack, NAK or TERM), after which nothing. A delivery
//! superseded by a newer one of its message tells the server nothing more:
//! the server redelivered the message, and a NAK of the old delivery could
//! give back the new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use tokio::sync::Mutex;

/// Whether a delivery's final answer went to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Not yet: in-progress acks keep it.
    Pending,
    /// Sent: an in-progress ack now would move a NAK's due time, or keep a
    /// message that is done.
    Sent,
}

/// A delivered message and whether it was answered. The in-progress acks
/// and the final answer take turns on its lock, so the keep-alive that read
/// the message before its settlement answered it sends nothing after.
#[derive(Debug)]
pub(crate) struct Delivery {
    message: Message,
    answer: Mutex<Answer>,
    /// A newer delivery of the message replaced it (`HeldSet::insert`).
    superseded: AtomicBool,
}

impl Delivery {
    /// `message`, not answered yet.
    pub(crate) fn new(message: Message) -> Arc<Self> {
        Arc::new(Self {
            message,
            answer: Mutex::new(Answer::Pending),
            superseded: AtomicBool::new(false),
        })
    }

    /// A newer delivery of its message replaced it: from now on it tells
    /// the server nothing (what is sent already went).
    pub(crate) fn supersede(&self) {
        self.superseded.store(true, Ordering::Release);
    }

    /// Whether a newer delivery of its message replaced it.
    fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// The message.
    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

    /// Tells the server its attempt is still running, unless it was answered
    /// or superseded: `Ok(true)` when the in-progress ack was sent.
    pub(crate) async fn in_progress(&self) -> Result<bool, async_nats::Error> {
        let answer = self.answer.lock().await;
        if *answer == Answer::Sent || self.is_superseded() {
            return Ok(false);
        }
        self.message.ack_with(AckKind::Progress).await?;
        Ok(true)
    }

    /// The final answer, `kind` (an ack, a NAK or a TERM); sent once: one
    /// tried again after it went sends nothing, and neither does one of a
    /// superseded delivery.
    pub(crate) async fn answer(&self, kind: AckKind) -> Result<(), async_nats::Error> {
        let mut answer = self.answer.lock().await;
        if *answer == Answer::Pending && !self.is_superseded() {
            self.message.ack_with(kind).await?;
            *answer = Answer::Sent;
        }
        Ok(())
    }
}

/// For tests: an echo task published on a queue, and its next delivery.
#[cfg(all(test, feature = "test-server"))]
pub(crate) mod rig {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::Delivery;
    use crate::connect::Queue;
    use crate::message::{subject, Band};

    /// Publishes an echo task `id` at normal priority, and waits for the
    /// server to have it.
    pub(crate) async fn publish_echo(queue: &Queue, id: &str) {
        let body = format!(r#"{{"id":"{id}","type":"echo"}}"#);
        let sent = queue
            .js
            .publish(subject(Band::Normal, "cortex.tasks"), body.into());
        sent.await.unwrap().await.unwrap();
    }

    /// The next delivery of the normal band (10 s at most).
    pub(crate) async fn next_delivery(queue: &Queue) -> Arc<Delivery> {
        let consumer = &queue.consumers[1].1;
        let batch = consumer.batch().max_messages(1);
        let batch = batch.expires(Duration::from_secs(10)).messages().await;
        let message = batch.unwrap().next().await.expect("a delivery");
        Delivery::new(message.unwrap())
    }
}

#[cfg(all(test, feature = "test-server"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::NatsConfig;
    use crate::connect::connect;
    use crate::test_server::{told, NatsServer};

    /// The queue on `server`, a subscription to what it tells the server of
    /// messages (`$JS.ACK.>`), and the delivery of task `id`, published then
    /// fetched.
    async fn one_delivery(
        server: &NatsServer,
        id: &str,
    ) -> (crate::connect::Queue, async_nats::Subscriber, Arc<Delivery>) {
        let queue = connect(&NatsConfig::new(server.url())).await.unwrap();
        let acks = queue.client.subscribe("$JS.ACK.>").await.unwrap();
        queue.client.flush().await.unwrap();
        super::rig::publish_echo(&queue, id).await;
        let delivery = super::rig::next_delivery(&queue).await;
        (queue, acks, delivery)
    }

    /// An in-progress ack started from a copy taken before the final answer
    /// (the keep-alive's, racing a settlement) sends nothing once the answer
    /// went: a NAK's due time stays the NAK's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_in_progress_ack_follows_the_final_answer() {
        let server = NatsServer::start();
        let (queue, mut acks, delivery) = one_delivery(&server, "n").await;
        let keep_alive_copy = Arc::clone(&delivery);

        assert!(keep_alive_copy.in_progress().await.unwrap());
        let nak = AckKind::Nak(Some(Duration::from_secs(30)));
        delivery.answer(nak).await.unwrap();
        assert!(
            !keep_alive_copy.in_progress().await.unwrap(),
            "sent after the NAK"
        );
        delivery.answer(AckKind::Ack).await.unwrap();

        let told = told(&queue.client, &mut acks).await;
        assert_eq!(told, ["+WPI", r#"-NAK {"delay":30000000000}"#]);
    }

    /// A superseded delivery (a newer one of its message replaced it) tells
    /// the server nothing: neither an in-progress ack nor a final answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superseded_delivery_tells_the_server_nothing() {
        let server = NatsServer::start();
        let (queue, mut acks, delivery) = one_delivery(&server, "s").await;

        delivery.supersede();
        assert!(!delivery.in_progress().await.unwrap(), "in progress");
        delivery.answer(AckKind::Nak(None)).await.unwrap();

        assert!(told(&queue.client, &mut acks).await.is_empty());
    }
}
