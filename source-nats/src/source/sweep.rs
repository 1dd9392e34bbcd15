//! The sweep for messages the client cannot hand over (`unreadable.rs`):
//! such a message's delivery ends the connection, so the fetch that met it
//! is cut short (its end lost), and the server delivers it again every
//! `ack_wait`, for ever. After a fetch cut
//! short, every band's messages delivered and not acked yet (from the
//! consumer's ack floor to its last delivery) are read again through the
//! stream's message API, which hands over the stored header block as
//! bytes; each one the client cannot read is dead-lettered (`invalid_input`,
//! as a body that is no task) and deleted from the stream, so that it is
//! never delivered again. A message the client can read is left as it is.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::consumer::PullConsumer;
use task_source::SourceError;

use super::{backend, exactly, NatsSource};
use crate::message::{id_unfit, Band, Body};
use crate::records::Listed;
use crate::stored::{self, Stored};
use crate::unreadable::{unreadable, Unreadable};

/// Whether a sweep was asked for, and the one running: one at a time, and
/// one asked for while another runs is run after it.
#[derive(Debug, Default)]
pub(super) struct Sweeps {
    asked: AtomicBool,
    running: tokio::sync::Mutex<()>,
}

impl NatsSource {
    /// Sweeps the queue in the background, after the sweep that runs now
    /// if one does.
    pub(super) fn sweep_soon(&self) {
        self.inner.sweeps.asked.store(true, Ordering::Release);
        let source = self.clone();
        tokio::spawn(async move { source.sweep_while_asked().await });
    }

    /// Sweeps while a sweep is asked for, unless another task does.
    async fn sweep_while_asked(&self) {
        let sweeps = &self.inner.sweeps;
        // One asked for after the running sweep's last look, but before it
        // let go, is seen here after it let go.
        while sweeps.asked.load(Ordering::Acquire) {
            let Ok(_running) = sweeps.running.try_lock() else {
                return;
            };
            while sweeps.asked.swap(false, Ordering::AcqRel) {
                self.sweep().await;
            }
        }
    }

    /// Every band's messages in flight, looked at once each.
    async fn sweep(&self) {
        for (band, consumer) in &self.inner.queue.consumers {
            if let Err(e) = self.sweep_band(*band, consumer).await {
                tracing::warn!(
                    error = %e,
                    band = band.name(),
                    "cannot look for messages the NATS client cannot read"
                );
            }
        }
    }

    /// The messages of `band` that `consumer` delivered and that are not
    /// acked yet: each one the client cannot read is dead-lettered.
    async fn sweep_band(&self, band: Band, consumer: &PullConsumer) -> Result<(), SourceError> {
        let mut consumer = consumer.clone();
        let info = consumer.info().await.map_err(backend)?;
        let last = info.delivered.stream_sequence;
        let mut from = info.ack_floor.stream_sequence.saturating_add(1);
        let subject = self.inner.subjects.bands[band.index()].as_str();
        while from <= last {
            let Some(message) = self.next_stored(subject, from).await? else {
                break;
            };
            if message.sequence > last {
                break;
            }
            from = message.sequence.saturating_add(1);
            if let Some(why) = message.headers.as_deref().and_then(unreadable) {
                self.letter_unreadable(subject, message, why).await?;
            }
        }
        Ok(())
    }

    /// The task stream's first message on `subject` from sequence `from` on,
    /// as stored; a request the server denies is named as such at once.
    async fn next_stored(&self, subject: &str, from: u64) -> Result<Option<Stored>, SourceError> {
        let queue = &self.inner.queue;
        let stream = self.inner.config.stream.as_str();
        let api = format!("$JS.API.STREAM.MSG.GET.{stream}");
        let then = "messages the client cannot read are not looked for";
        let read = stored::next_on(&queue.js, stream, subject, from);
        let denials = &queue.denials;
        denials
            .race(denials.mark(), exactly(&api), read)
            .await
            .map_err(|refused| self.refused(refused, then))
    }

    /// Dead-letters `message`, which the client cannot read (`why`), and
    /// deletes it from the stream (on `subject`). Its task id is its body's
    /// when that is a task whose id a header can carry, else
    /// `unreadable-SEQUENCE`: the same for every daemon that sweeps it, so
    /// it is lettered once, and one deleted by another daemon meanwhile is
    /// done.
    async fn letter_unreadable(
        &self,
        subject: &str,
        message: Stored,
        why: Unreadable,
    ) -> Result<(), SourceError> {
        let stream = &self.inner.config.stream;
        let sequence = message.sequence;
        let body = serde_json::from_slice::<Body>(&message.payload).ok();
        // A task's line says its type and priority, as a task run does.
        let listed = body.as_ref().map(Listed::of_body);
        let id = body
            .map(|body| body.id)
            .filter(|id| id_unfit(id).is_none())
            .unwrap_or_else(|| format!("unreadable-{sequence}"));
        let reason = format!(
            "the NATS client cannot read the message's headers ({why}): message {sequence} of \
             stream {stream}"
        );
        tracing::warn!(%id, %reason, "dead-lettering a message the NATS client cannot read");
        self.letter_unfit(&id, (sequence, &message.payload), reason, listed.as_ref())
            .await?;
        let api = format!("$JS.API.STREAM.MSG.DELETE.{stream}");
        let then = format!("message {sequence} is delivered again, and dead-lettered again");
        let delete = self.inner.queue.tasks.delete_message(sequence);
        let denials = &self.inner.queue.denials;
        let Err(refused) = denials.race(denials.mark(), exactly(&api), delete).await else {
            return Ok(());
        };
        match self.next_stored(subject, sequence).await? {
            Some(still) if still.sequence == sequence => Err(self.refused(refused, &then)),
            _ => Ok(()),
        }
    }
}

#[cfg(all(test, feature = "test-server"))]
mod tests {
    use super::*;
    use crate::config::NatsConfig;
    use crate::test_server::NatsServer;

    /// Two daemons may sweep one message: the second finds it deleted by
    /// the first, which is done, not a failure, and it is lettered once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_another_sweep_deleted_meanwhile_is_done() {
        let server = NatsServer::start();
        let source = NatsSource::connect(NatsConfig::new(server.url()))
            .await
            .unwrap();
        let subject = source.inner.subjects.bands[Band::Normal.index()].to_string();
        let body = r#"{"id":"twice","type":"echo"}"#;
        let sent = source.inner.queue.js.publish(subject.clone(), body.into());
        let sequence = sent.await.unwrap().await.unwrap().sequence;
        let stored = source.next_stored(&subject, sequence).await.unwrap();
        let stored = stored.expect("the message");
        let why = Unreadable::NoColon("x".into());

        for _ in 0..2 {
            let swept = source.letter_unreadable(&subject, stored.clone(), why.clone());
            swept.await.unwrap();
        }
        assert_eq!(source.next_stored(&subject, sequence).await.unwrap(), None);
        let letters = source.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].record.task.id, "twice");
    }
}
