//! The queue's metrics: `metrics` JSON's `queue` object gains the shared
//! queue's figures, the Prometheus
//! text `cortex_pool_queue_*` series (lag, redeliveries, fetch batch sizes, …).

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use source_nats::QueueStats;

use crate::daemon::prometheus::{counter, gauge, within};
use crate::daemon::state::Daemon;

/// Whether the connection is up (known without the server), and the queue's
/// figures, or why they cannot be read: the connection is down, or the server
/// did not answer within [`STATS_TIMEOUT`](crate::daemon::prometheus::STATS_TIMEOUT)
/// (a stalled server must not hold up the whole scrape).
async fn stats(daemon: &Daemon) -> Option<(bool, Result<QueueStats, String>)> {
    let nats = daemon.queue.get()?;
    let what = format!("the queue at {}", nats.config().url);
    let stats = within(&what, nats.queue_stats()).await;
    Some((nats.connected(), stats))
}

/// `daemon status`'s `queue` object when the daemon runs on one: the URL,
/// whether the connection is up (`connection`: `connected` or
/// `disconnected`), and how many claimed tasks it holds. Asks the server
/// nothing, so it answers while the connection is down.
pub(crate) fn status(daemon: &Daemon) -> Option<Value> {
    let nats = daemon.queue.get()?;
    Some(json!({
        "url": nats.config().url,
        "connection": if nats.connected() { "connected" } else { "disconnected" },
        "held": nats.held_count(),
    }))
}

/// `metrics` (JSON): the pool's figures, with the shared queue's added to its
/// `queue` object when the daemon runs on one (their keys differ from the
/// pool's `queueDepth`, `byPriority`, `retrying`, `dlqSize`, …, which stay).
pub(crate) async fn with_queue(mut metrics: Value, daemon: &Daemon) -> Value {
    if let Some((connected, stats)) = stats(daemon).await {
        let shared = match stats {
            Ok(s) => json!(s),
            Err(e) => json!({"connected": connected, "error": e}),
        };
        merge(&mut metrics["queue"], shared);
    }
    metrics
}

/// Adds the keys of `more` (an object) to `into`, which becomes an object if
/// it was not one.
fn merge(into: &mut Value, more: Value) {
    let Value::Object(more) = more else {
        return;
    };
    match into {
        Value::Object(into) => into.extend(more),
        other => *other = Value::Object(more),
    }
}

/// The Prometheus text `base` plus the queue's series, before the final `# EOF`.
/// When the server's figures cannot be read (disconnected, or no answer within
/// [`STATS_TIMEOUT`](crate::daemon::prometheus::STATS_TIMEOUT)) only
/// `connected` and `held` are added — the client knows them — and the rest is
/// left out rather than reported as 0.
pub(crate) async fn prometheus(base: String, daemon: &Daemon) -> String {
    let Some((connected, stats)) = stats(daemon).await else {
        return base;
    };
    let mut registry = Registry::with_prefix("cortex_pool_queue");
    let held = daemon
        .queue
        .get()
        .map_or(0, |nats| nats.held_count() as u64);
    gauge(
        &mut registry,
        "connected",
        "1 when connected to NATS",
        u64::from(connected),
    );
    gauge(&mut registry, "held", "Messages this daemon holds", held);
    let s = match stats {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "metrics: the queue's figures are left out");
            return append(base, registry);
        }
    };
    gauge(
        &mut registry,
        "lag",
        "Messages waiting in the stream, not yet delivered",
        s.lag,
    );
    gauge(
        &mut registry,
        "ack_pending",
        "Messages delivered and not yet acked (every daemon)",
        s.ack_pending,
    );
    gauge(
        &mut registry,
        "dead_letters",
        "Messages in the dead-letter stream",
        s.dead_letters,
    );
    counter(
        &mut registry,
        "redeliveries",
        "Messages received again (delivery count above 1)",
        s.redeliveries,
    );
    counter(&mut registry, "fetches", "Fetches made", s.fetches);
    counter(&mut registry, "fetched", "Messages fetched", s.fetched);
    gauge(
        &mut registry,
        "fetch_batch_last",
        "The last fetch's batch size",
        s.fetch_batch_last,
    );
    gauge(
        &mut registry,
        "fetch_batch_max",
        "The largest fetch batch",
        s.fetch_batch_max,
    );
    append(base, registry)
}

/// `base` with `registry`'s series added before its final `# EOF`.
fn append(base: String, registry: Registry) -> String {
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        return base;
    }
    let strip = |t: &str| t.trim_end().trim_end_matches("# EOF").to_owned();
    format!("{}{}# EOF\n", strip(&base), strip(&text))
}
