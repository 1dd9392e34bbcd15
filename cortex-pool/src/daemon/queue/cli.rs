//! The client commands with `--queue URL`: they act on the shared queue
//! directly (no daemon needed), printing what the local commands print.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use source_nats::{NatsConfig, NatsSource};
use task_source::{Filter, TaskSource, TaskState};

use crate::daemon::commands::{emit_text, emit_value, Answer, Lines};
use crate::daemon::config::Settings;
use crate::daemon::doc::Doc;
use crate::daemon::durable::{answers, lines};
use crate::daemon::protocol::Request;

/// How often `wait --queue`, and a daemon's `wait` on the shared queue, look
/// at the bucket again.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Ids looked up at once.
const LOOKUP_CHUNK: usize = 512;

/// Connects to `url` with the configuration's other `queue*` keys.
pub(crate) async fn connect(settings: &Settings, url: &str) -> Result<NatsSource, String> {
    let mut config = settings
        .queue
        .as_ref()
        .map_or_else(|| NatsConfig::new(url), |q| q.config.clone());
    url.clone_into(&mut config.url);
    config.result_ttl = settings.store.result_ttl;
    NatsSource::connect(config).await.map_err(|e| e.to_string())
}

/// `submit --queue`: publishes each line (an id generated where it has none)
/// and emits `{"id", "status": "accepted"}` or `{"id", "status": "refused",
/// "error"}` per line, in order ([`answers`]); returns the accepted ids and the
/// refusals.
pub(crate) async fn submit(
    source: &NatsSource,
    text_lines: &[String],
    emit: &mut dyn FnMut(&Answer<'_>),
) -> Result<(Vec<String>, u64), String> {
    let (tasks, submitted) = answers::Submitted::parse(text_lines, 1);
    let admissions = source.accept(tasks).await.map_err(|e| e.to_string())?;
    let answers = submitted.answer(&admissions);
    for line in &answers.lines {
        emit_text(line, emit);
    }
    let accepted = submitted.held(&admissions).map(|(id, _)| id.clone());
    Ok((accepted.collect(), answers.refused))
}

/// `result --queue` (`wait` = `None`) and `wait --queue` (`Some(timeout)`):
/// one line per id, from the results bucket, in the given order for `result`
/// and as they settle for `wait`; true when every task settled ok. An id with
/// no outcome in the bucket reads `unknown` (not yet settled, or never
/// submitted: the queue does not say which).
pub(crate) async fn lines_for(
    source: &NatsSource,
    ids: Vec<String>,
    wait: Option<Option<Duration>>,
    sink: &mut dyn Lines,
) -> Result<bool, String> {
    // A timeout past what the clock can count waits without one.
    let deadline = wait.flatten().and_then(|t| Instant::now().checked_add(t));
    let mut pending: Vec<String> = {
        let mut seen = HashSet::new();
        ids.into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect()
    };
    let mut all_ok = true;
    loop {
        let mut still = Vec::new();
        for chunk in pending.chunks(LOOKUP_CHUNK) {
            let records = source
                .get(chunk.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            for (id, record) in chunk.iter().zip(records) {
                let settled = record.as_ref().is_some_and(|r| r.state.is_settled());
                if wait.is_some() && !settled && deadline.is_none_or(|d| Instant::now() < d) {
                    still.push(id.clone());
                    continue;
                }
                all_ok &= lines::settled_ok(record.as_ref());
                let line = &mut |answer: &Answer<'_>| sink.line(answer);
                match lines::lookup(id, record.as_ref()) {
                    Doc::Text(text) => emit_text(&text, line),
                    Doc::Value(value) => emit_value(&value, line),
                }
            }
            sink.idle();
        }
        if still.is_empty() {
            return Ok(all_ok);
        }
        pending = still;
        tokio::time::sleep(POLL).await;
    }
}

/// `dlq list` and `dlq retry` with `--queue`: the same JSON answer the daemon
/// gives for the request.
pub(crate) async fn dlq(source: &NatsSource, request: Request) -> Result<Value, String> {
    match request {
        Request::DlqList { .. } => {
            let records = source
                .list(Filter {
                    state: Some(TaskState::DeadLetter),
                    ..Filter::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok(Value::Array(
                records.iter().rev().map(lines::dead_letter).collect(),
            ))
        }
        Request::DlqRetry { ids } => {
            let results = source.requeue_dead(ids).await.map_err(|e| e.to_string())?;
            Ok(crate::daemon::durable::api::requeue_summary(results))
        }
        Request::DlqPurge => {
            let ids = source.purge_dead().await.map_err(|e| e.to_string())?;
            Ok(json!(ids))
        }
        other => Err(format!("{other:?} is not a queue command")),
    }
}
