//! Helpers the JetStream tests share: tasks, a source's settings, an ok
//! settlement, claims until enough came back.

use std::time::{Duration, Instant};

use source_nats::test_server::NatsServer;
use source_nats::{NatsConfig, NatsSource};
use task_source::{now_ms, Claimed, NewTask, Outcome, Settlement, TaskSource, TaskState};

/// An echo task `id` of `priority`.
pub(crate) fn task(id: &str, priority: u8) -> NewTask {
    NewTask {
        id: id.into(),
        task_type: "echo".into(),
        payload: format!("{{\"n\":\"{id}\"}}"),
        priority,
        timeout_ms: None,
    }
}

/// The settings of a source on `server` whose consumers wait `ack_wait_ms`
/// for acks.
pub(crate) fn config(server: &NatsServer, ack_wait_ms: u64) -> NatsConfig {
    let mut config = NatsConfig::new(server.url());
    config.ack_wait = Duration::from_millis(ack_wait_ms);
    config.max_in_flight = 100;
    config
}

/// `id`'s attempt `attempt` ended ok.
pub(crate) fn ok(id: &str, attempt: u32) -> Settlement {
    Settlement {
        id: id.into(),
        attempt,
        outcome: Outcome::Settled {
            state: TaskState::Ok,
            line: format!(r#"{{"id":"{id}","status":"ok","result":1,"attempts":{attempt}}}"#),
            error: None,
        },
    }
}

/// Claims until `n` tasks came back or 10 s passed.
pub(crate) async fn claim_n(source: &NatsSource, n: usize) -> Vec<Claimed> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(source.claim(n - out.len(), now_ms()).await.unwrap());
        if out.len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out
}

/// Publishes `body` on the normal band's subject (prefix `cortex.tasks`) of
/// `server` with message id `msg_id`, as another client may: no check of
/// the body or the id.
pub(crate) async fn publish_raw(server: &NatsServer, msg_id: &str, body: impl Into<bytes::Bytes>) {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = source_nats::message::subject(source_nats::message::Band::Normal, "cortex.tasks");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    js.publish_with_headers(subject, headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}
