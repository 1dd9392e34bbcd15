//! The control requests about tasks: `submit`, `result`, `wait`, `dlq retry`
//! and `dlq purge`, answered from the task source (the listings, `tasks` and
//! `dlq list`, are [`listing`](super::listing)'s).

use foldhash::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use task_source::{Admission, NewTask, Requeue, SourceHealth, TaskState, TaskStatus};
use tokio::sync::mpsc;

use super::answers;
use super::lines;
use super::waiters::{Registration, Settled};
use crate::daemon::doc::Doc;
use crate::daemon::protocol::{LineStatus, Reply};
use crate::daemon::state::Daemon;

type Closed = mpsc::error::SendError<Reply>;

/// Stores each line's task (answered once committed); one line per task:
/// `{"id", "status": "accepted"}` or `{"id", "status": "refused", "error"}`
/// ([`answers`]). With `wait`, then one result line per accepted task as it
/// settles.
pub(crate) async fn submit(
    text_lines: Vec<String>,
    wait: bool,
    first_line: u64,
    text: bool,
    daemon: &Arc<Daemon>,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let (tasks, submitted) = answers::Submitted::parse(&text_lines, first_line);
    // Registered before the tasks are stored, a waiter hears of every new
    // task's settlement: the new ones are not read back (the store's one
    // thread would read each one, to find it waiting).
    let registration = wait.then(|| daemon.waiters.register_all(submitted.ids()));
    let admissions = admit(daemon, tasks).await;
    if admissions.iter().any(|a| matches!(a, Admission::Accepted)) {
        daemon.wake.notify_one();
    }
    let answers = submitted.answer(&admissions);
    let lines = if text {
        Reply::LinesText {
            lines: answers.lines,
        }
    } else {
        Reply::Lines {
            lines: answers
                .lines
                .iter()
                .map(|line| serde_json::from_str(line).unwrap_or(Value::Null))
                .collect(),
        }
    };
    out.send(lines).await?;
    out.send(Reply::Done {
        accepted: answers.accepted,
        refused: answers.refused,
    })
    .await?;
    let Some(registration) = registration else {
        return Ok(());
    };
    let mut new = HashSet::default();
    new.reserve(usize::try_from(answers.accepted).unwrap_or(0));
    let mut known = Vec::new();
    for (id, duplicate) in submitted.held(&admissions) {
        if duplicate {
            known.push(id.clone());
        } else {
            new.insert(id.as_str());
        }
    }
    // A repeat of a new id is answered with it, wherever the source named it.
    known.retain(|id| !new.contains(id.as_str()));
    let known = super::ids::first_of_each(known);
    let waiting = Waiting {
        registration,
        deadline: None,
    };
    answer(new, &known, Some(waiting), text, daemon, out).await
}

/// Stores the tasks, refusing them with the reason when the pool stopped
/// working, the store cannot take them or the queue is full (`max_queue_len`
/// unsettled tasks, counted by the source as it stores:
/// [`TaskSource::accept_within`](task_source::TaskSource::accept_within)).
async fn admit(daemon: &Daemon, tasks: Vec<NewTask>) -> Vec<Admission> {
    if tasks.is_empty() {
        return Vec::new();
    }
    let all = tasks.len();
    let refuse_all = |reason: String| vec![Admission::Refused(reason); all];
    if let Some(failure) = daemon.pool.failure() {
        return refuse_all(format!(
            "pool_failed: the pool stopped working ({failure}); restart the daemon"
        ));
    }
    let max = daemon.setting(|s| s.pool.max_queue_len) as u64;
    match daemon.source.accept_within(tasks, max).await {
        Ok(admissions) => admissions,
        Err(e) => refuse_all(e.to_string()),
    }
}

/// One line per id (in order for `result`; as they settle for `wait`), then
/// `Done` with `accepted` = settled ok and `refused` = the others. `wait`:
/// `None` answers at once, `Some(timeout)` waits for every id to settle.
///
/// Waiters are woken by this daemon's feeder. On the shared queue (`queue =
/// "nats://…"`) another daemon may run a task, and the queue finds a task only
/// once it settled or while this daemon holds it: there an id not found is
/// waited for too (as `wait --queue` does: not yet settled, or never
/// submitted, the queue does not say which), and the results bucket is read
/// again every [`POLL`](crate::daemon::queue::cli::POLL) (less often when
/// many wait: [`poll_period`]).
pub(crate) async fn lookup(
    mut ids: Vec<String>,
    wait: Option<Option<Duration>>,
    text: bool,
    daemon: &Arc<Daemon>,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    if wait.is_some() {
        // A wait answers each task once, when it settles: an id named twice
        // (a line submitted twice in one batch) is waited for once, whether
        // it settled before the read or after.
        ids = super::ids::first_of_each(ids);
    }
    // To wait, the ids are registered before they are read: a task that
    // settles after the read is heard of in the inbox, and each id is read
    // once. A wait's time counts from its request, reads included.
    let waiting = wait.map(|timeout| Waiting {
        registration: daemon.waiters.register_all(&ids),
        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
    });
    answer(HashSet::default(), &ids, waiting, text, daemon, out).await
}

/// A request's wait: its registration with the waiters, and when it gives up.
struct Waiting<'a> {
    registration: Registration<'a>,
    deadline: Option<tokio::time::Instant>,
}

/// Answers the ids in `new` (with `waiting`: not settled when it was
/// registered) as they settle, and `read_ids` (none of them in `new`, each
/// named once when it waits) from where the source says they stand, then as
/// they settle while it waits; then `Done`.
///
/// One that settles between the registration and the read arrives both
/// ways; the inbox's copy is skipped. An id read settled keeps its entry
/// in the waiters until the request ends: a map entry on this side costs
/// less than a second read on the store's one thread.
async fn answer<'a>(
    mut left: HashSet<&'a str>,
    read_ids: &'a [String],
    mut waiting: Option<Waiting<'_>>,
    text: bool,
    daemon: &Arc<Daemon>,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let shared = daemon.queue.get().is_some();
    let mut tally = Tally {
        text,
        ..Tally::default()
    };
    // Waited for: a task that has not settled (on the shared queue, one not
    // found either).
    let waits = |record: &Option<TaskStatus>| {
        let settled = record.as_ref().is_some_and(|r| r.state.is_settled());
        waiting.is_some() && !settled && (record.is_some() || shared)
    };
    // A failed read of `read_ids` ends the request, after the new ids'
    // lines when it waits for any (their settlements need no read).
    let mut unread = None;
    match read(daemon, read_ids).await {
        Ok(records) => {
            for (id, record) in read_ids.iter().zip(records) {
                if waits(&record) {
                    left.insert(id);
                    continue;
                }
                tally.send(id, record, out).await?;
            }
        }
        Err(failed) if waiting.is_some() && !left.is_empty() => unread = Some(failed),
        Err(failed) => return out.send(failed).await,
    }
    if let Some(waiting) = waiting.as_mut().filter(|_| !left.is_empty()) {
        let deadline = waiting.deadline;
        let inbox = &mut waiting.registration;
        let mut next_poll = tokio::time::Instant::now() + poll_period(left.len());
        let mut batch = Vec::new();
        while !left.is_empty() {
            let received = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, inbox.recv_many(&mut batch, INBOX_BATCH))
                        .await
                        .unwrap_or(0),
                    None => inbox.recv_many(&mut batch, INBOX_BATCH).await,
                }
            };
            let received = tokio::select! {
                n = received => n,
                () = tokio::time::sleep_until(next_poll), if shared => {
                    settled_elsewhere(&mut left, &mut tally, daemon, out).await?;
                    next_poll = tokio::time::Instant::now() + poll_period(left.len());
                    continue;
                }
            };
            // Timed out (the inbox ends only once every id it waits for was
            // sent, and those have left `left`).
            if received == 0 {
                break;
            }
            for settled in batch.drain(..) {
                // Answered already: from the read, from the shared
                // queue's bucket, or named twice.
                if !left.remove(settled.id.as_str()) {
                    continue;
                }
                tally.send_settled(settled, out).await?;
            }
        }
        // Timed out: the rest as they are now.
        let rest: Vec<String> = left.into_iter().map(str::to_owned).collect();
        if !rest.is_empty() {
            match read(daemon, &rest).await {
                Ok(records) => {
                    for (id, record) in rest.iter().zip(records) {
                        tally.send(id, record, out).await?;
                    }
                }
                Err(failed) => return out.send(failed).await,
            }
        }
    }
    if let Some(failed) = unread {
        return out.send(failed).await;
    }
    out.send(Reply::Done {
        accepted: tally.ok,
        refused: tally.not_ok,
    })
    .await
}

/// Where the source says `ids` stand, read [`READ_AT_ONCE`] at a time; the
/// reply that ends the request when a read fails (the client asks again).
async fn read(daemon: &Daemon, ids: &[String]) -> Result<Vec<Option<TaskStatus>>, Reply> {
    let mut records = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(READ_AT_ONCE) {
        match daemon.source.status(chunk.to_vec()).await {
            Ok(read) => records.extend(read),
            Err(e) => return Err(Reply::error("store", e.to_string())),
        }
    }
    Ok(records)
}

/// Ids one read of the source looks up, at most: the store's one thread
/// reads them in a job of its own, and the commits of the tasks running
/// meanwhile wait behind it.
const READ_AT_ONCE: usize = 2048;

/// Settled lines taken from a request's inbox at once, at most.
const INBOX_BATCH: usize = 1024;

/// Ids of the shared queue's results bucket read a second, at most, by one
/// waiting request.
const POLLED_IDS_PER_SECOND: u64 = 2_000;

/// How long until the bucket is read again for `waiting` ids: every
/// [`POLL`](crate::daemon::queue::cli::POLL), or less often when so many wait
/// that reading them all would pass [`POLLED_IDS_PER_SECOND`].
fn poll_period(waiting: usize) -> Duration {
    crate::daemon::queue::cli::POLL.max(Duration::from_millis(
        waiting as u64 * 1000 / POLLED_IDS_PER_SECOND,
    ))
}

/// Answers the ids in `left` that the shared queue shows settled (by any
/// daemon), and takes them out of `left`.
async fn settled_elsewhere(
    left: &mut HashSet<&str>,
    tally: &mut Tally,
    daemon: &Daemon,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let ids: Vec<String> = left.iter().map(|&id| id.to_owned()).collect();
    let records = daemon.source.status(ids.clone()).await.unwrap_or_default();
    for (id, record) in ids.iter().zip(records) {
        if record.as_ref().is_some_and(|r| r.state.is_settled()) {
            left.remove(id.as_str());
            tally.send(id, record, out).await?;
        }
    }
    Ok(())
}

/// The lines a look-up sent, counted as settled ok or not.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    not_ok: u64,
    /// The client asked for each line as its JSON text (`LineText`).
    text: bool,
}

impl Tally {
    /// Sends `id`'s line and counts it.
    ///
    /// A settled task's stored line goes to a client that asked for text as
    /// it was stored, unchecked: the client reads the fields it counts from
    /// it and shows a line that is not a JSON object as `invalid`, naming it
    /// (an ok line sent with its status is read from its beginning and end
    /// only, [`output::written_head`](crate::cli::output::written_head)).
    /// (Checking each line here cost the daemon about 1 000 instructions a
    /// task.) Sent as a map, a line is checked, since it is transcoded.
    async fn send(
        &mut self,
        id: &str,
        status: Option<TaskStatus>,
        out: &mpsc::Sender<Reply>,
    ) -> Result<(), Closed> {
        let ok = lines::status_ok(status.as_ref());
        let (line, written) = match status {
            Some(TaskStatus {
                state,
                line: Some(stored),
                ..
            }) if self.text && state.is_settled() => {
                (Doc::unchecked(stored), lines::written_status(state))
            }
            other => (lines::status(id, other.as_ref()), None),
        };
        self.send_line(ok, line, written, out).await
    }

    /// Sends the line the feeder wrote for a task it settled.
    async fn send_settled(
        &mut self,
        settled: Arc<Settled>,
        out: &mpsc::Sender<Reply>,
    ) -> Result<(), Closed> {
        let ok = settled.state == TaskState::Ok;
        let status = lines::written_status(settled.state);
        // A line only its waiter holds is taken, not copied.
        let text = Arc::try_unwrap(settled).map_or_else(|s| s.line.clone(), |s| s.line);
        // The feeder wrote it (`cli::output`): not checked again.
        self.send_line(ok, Doc::unchecked(text), status, out).await
    }

    /// Sends one line, counted as settled ok or not, with its status when
    /// the feeder `written` it and the client asked for text.
    async fn send_line(
        &mut self,
        ok: bool,
        line: Doc,
        written: Option<LineStatus>,
        out: &mpsc::Sender<Reply>,
    ) -> Result<(), Closed> {
        if ok {
            self.ok += 1;
        } else {
            self.not_ok += 1;
        }
        let reply = if self.text {
            Reply::LineText {
                line: line.into_text(),
                status: written,
            }
        } else {
            Reply::Line { line }
        };
        out.send(reply).await
    }
}

/// `dlq retry`: see [`requeue_summary`].
pub(crate) async fn dlq_retry(daemon: &Daemon, ids: Option<Vec<String>>) -> Reply {
    match daemon.source.requeue_dead(ids).await {
        Ok(results) => {
            daemon.wake.notify_one();
            Reply::Json {
                value: requeue_summary(results),
            }
        }
        Err(e) => Reply::error("store", e.to_string()),
    }
}

/// What `dlq retry` answers (the daemon's and `--queue`'s alike):
/// `{"requeued": [ids], "unknown": [ids], "not_dead": [{id, status}],
/// "not_a_task": [ids]}`.
pub(crate) fn requeue_summary(results: Vec<(String, Requeue)>) -> Value {
    let (mut requeued, mut unknown, mut not_dead, mut not_a_task) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, r) in results {
        match r {
            Requeue::Requeued => requeued.push(json!(id)),
            Requeue::Unknown => unknown.push(json!(id)),
            Requeue::NotDeadLettered(s) => {
                not_dead.push(json!({"id": id, "status": s.as_str()}));
            }
            Requeue::NotATask => not_a_task.push(json!(id)),
        }
    }
    json!({"requeued": requeued, "unknown": unknown, "not_dead": not_dead, "not_a_task": not_a_task})
}

/// `dlq purge`: the ids removed.
pub(crate) async fn dlq_purge(daemon: &Daemon) -> Reply {
    match daemon.source.purge_dead().await {
        Ok(ids) => Reply::Json { value: json!(ids) },
        Err(e) => Reply::error("store", e.to_string()),
    }
}

/// The pool's metrics with `tasks.dlq` and `queue.dlqSize` taken from the
/// store: the daemon's dead letters live there, not in the pool's own
/// dead-letter queue.
pub(crate) fn with_store_dlq(mut metrics: Value, store: &Value) -> Value {
    if let Some(dead) = store["rows"]["dead_letter"].as_u64() {
        metrics["tasks"]["dlq"] = Value::from(dead);
        metrics["queue"]["dlqSize"] = Value::from(dead);
    }
    metrics
}

/// The store's part of `daemon status` and the metrics.
pub(crate) async fn store_status(daemon: &Daemon) -> Value {
    let durability = daemon.setting(|s| s.store.durability.as_str());
    match daemon.source.stats().await {
        Ok(stats) => {
            let mut v = json!(stats);
            v["durability"] = json!(durability);
            v["accepting"] = json!(stats.health == SourceHealth::Ok);
            v
        }
        Err(e) => json!({
            "durability": durability,
            "health": {"state": "failing", "reason": e.to_string()},
            "accepting": false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::commands::{emit_line, Answer};
    use crate::daemon::test_daemon::{task, TestSource};
    use task_source::TaskSource;

    #[test]
    fn the_bucket_is_read_at_most_so_many_ids_a_second() {
        let poll = crate::daemon::queue::cli::POLL;
        assert_eq!(poll_period(0), poll);
        assert_eq!(poll_period(100), poll);
        assert_eq!(poll_period(8_000), Duration::from_secs(4));
        for waiting in [1, 200, 1_000, 10_000, 100_000] {
            let per_second = waiting as f64 / poll_period(waiting).as_secs_f64();
            assert!(per_second <= POLLED_IDS_PER_SECOND as f64, "{waiting}");
        }
    }

    /// The replies a look-up of `ids` sends, text or maps.
    async fn looked_up(daemon: &Arc<Daemon>, ids: &[&str], text: bool) -> Vec<Reply> {
        let (tx, mut rx) = mpsc::channel(16);
        let ids = ids.iter().map(|id| (*id).to_owned()).collect();
        let answering = async move {
            assert!(lookup(ids, None, text, daemon, &tx).await.is_ok());
        };
        let collecting = async {
            let mut replies = Vec::new();
            while let Some(reply) = rx.recv().await {
                replies.push(reply);
            }
            replies
        };
        tokio::join!(answering, collecting).1
    }

    /// A stored line goes to a client that asked for text as it was stored,
    /// even one that is not JSON (the client names it); one sent as a map is
    /// checked, and a broken one replaced by the task's id and status.
    #[tokio::test]
    async fn stored_lines_go_out_as_stored_to_text_and_checked_as_maps() {
        let daemon = crate::daemon::test_daemon::daemon().await;
        // Stored without a feeder: the daemon's own is not started here.
        let source = &daemon.source;
        source
            .accept(vec![task("good"), task("broken")])
            .await
            .unwrap();
        assert_eq!(source.claim(2, 0).await.unwrap().len(), 2);
        let settled = |id: &str, line: &str| task_source::Settlement {
            id: id.to_owned(),
            attempt: 1,
            outcome: task_source::Outcome::Settled {
                state: TaskState::Ok,
                line: line.to_owned(),
                error: None,
            },
        };
        let good = r#"{"id":"good","status":"ok","result":1}"#;
        source
            .settle(vec![settled("good", good), settled("broken", "{not json")])
            .await
            .unwrap();

        let text = looked_up(&daemon, &["good", "broken"], true).await;
        assert_eq!(
            &text[..2],
            &[
                Reply::LineText {
                    line: good.to_owned(),
                    status: Some(LineStatus::Ok),
                },
                Reply::LineText {
                    line: "{not json".to_owned(),
                    status: Some(LineStatus::Ok),
                },
            ]
        );
        assert!(
            matches!(
                text[2],
                Reply::Done {
                    accepted: 2,
                    refused: 0
                }
            ),
            "{text:?}"
        );

        let maps = looked_up(&daemon, &["good", "broken"], false).await;
        assert_eq!(
            &maps[..2],
            &[
                Reply::Line {
                    line: serde_json::json!({"id": "good", "status": "ok", "result": 1}).into()
                },
                Reply::Line {
                    line: serde_json::json!({"id": "broken", "status": "ok"}).into()
                },
            ]
        );
    }

    /// A line the feeder wrote goes to a client that asked for text with its
    /// status beside it; the client reads the rest it counts from the line's
    /// beginning, the same as parsing the line gives. Other lines, and lines
    /// sent as maps, go without.
    #[tokio::test]
    async fn a_line_the_feeder_wrote_goes_with_its_status() {
        let daemon = crate::daemon::test_daemon::daemon().await;
        let ids = ["ok", "failed", "dead", "cancelled"];
        let source = &daemon.source;
        source.accept(ids.map(task).to_vec()).await.unwrap();
        assert_eq!(source.claim(4, 0).await.unwrap().len(), 4);
        // As the feeder writes them.
        use crate::cli::output::{written, Status};
        let written = [
            (TaskState::Ok, written::ok("ok", 1.25)),
            (
                TaskState::Failed,
                written::failed("failed", Status::Failed, 0.0),
            ),
            (
                TaskState::DeadLetter,
                written::failed("dead", Status::DeadLetter, 31.5),
            ),
            (
                TaskState::Cancelled,
                r#"{"attempts":1,"duration_ms":2.0,"id":"cancelled","status":"cancelled"}"#
                    .to_owned(),
            ),
        ];
        let settlements = ids
            .iter()
            .zip(&written)
            .map(|(id, (state, line))| task_source::Settlement {
                id: (*id).to_owned(),
                attempt: 1,
                outcome: task_source::Outcome::Settled {
                    state: *state,
                    line: line.clone(),
                    error: None,
                },
            })
            .collect();
        source.settle(settlements).await.unwrap();

        let replies = looked_up(&daemon, &ids, true).await;
        let mut statuses = Vec::new();
        for reply in &replies[..4] {
            let Reply::LineText { line, status } = reply else {
                panic!("not a text line: {reply:?}");
            };
            statuses.push(*status);
            let mut sent = None;
            emit_line(line, *status, &mut |a| {
                sent = Some((
                    a.id.as_deref().map(str::to_owned),
                    a.status.to_string(),
                    a.duration_ms,
                ));
            });
            let parsed = Answer::parse(line).unwrap();
            let parsed = (
                parsed.id.as_deref().map(str::to_owned),
                parsed.status.to_string(),
                parsed.duration_ms,
            );
            assert_eq!(sent, Some(parsed), "{line}");
        }
        assert_eq!(
            statuses,
            [
                Some(LineStatus::Ok),
                Some(LineStatus::Failed),
                Some(LineStatus::DeadLetter),
                // Not a state the feeder writes a line for: read whole.
                None,
            ]
        );
        let maps = looked_up(&daemon, &ids, false).await;
        assert!(maps[..4].iter().all(|r| matches!(r, Reply::Line { .. })));
    }

    /// A settlement the feeder committed while the look-up registered, and
    /// told the waiters of after the look-up's read: the read answers it,
    /// and its line arriving in the inbox too is not sent again.
    #[tokio::test]
    async fn a_task_heard_of_both_ways_is_answered_once() {
        let source = Arc::new(TestSource {
            settles_on_read: std::sync::Mutex::new(Some(ok("racing"))),
            ..TestSource::default()
        });
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        source
            .accept(vec![task("racing"), task("later")])
            .await
            .unwrap();
        assert_eq!(source.claim(2, 0).await.unwrap().len(), 2);
        let (tx, mut rx) = mpsc::channel(16);
        let ids = vec!["racing".to_owned(), "later".to_owned()];
        let look = tokio::spawn({
            let daemon = daemon.clone();
            async move { lookup(ids, Some(None), true, &daemon, &tx).await }
        });
        let first = rx.recv().await;
        assert!(
            matches!(&first, Some(Reply::LineText { line, .. }) if line.contains("racing")),
            "{first:?}"
        );
        // The feeder's late word on `racing`, then `later` settles.
        let line = ok_line;
        daemon.waiters.settled([
            ("racing".to_owned(), TaskState::Ok, line("racing")),
            ("later".to_owned(), TaskState::Ok, line("later")),
        ]);
        let mut lines = Vec::new();
        let accepted = loop {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("answered, not waited for")
            {
                Some(Reply::LineText { line, .. }) => lines.push(line),
                Some(Reply::Done { accepted, .. }) => break accepted,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(lines, [line("later")], "racing is not sent twice");
        assert_eq!(accepted, 2);
        assert!(look.await.unwrap().is_ok());
    }

    /// A task read as running that settles at once, its waiters told before
    /// the look-up could have registered had it registered after its read, is
    /// heard of: the look-up registered first.
    #[tokio::test]
    async fn a_task_that_settles_right_after_the_read_is_heard_of() {
        let source = Arc::new(TestSource::default());
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        source.accept(vec![task("quick")]).await.unwrap();
        assert_eq!(source.claim(1, 0).await.unwrap().len(), 1);
        let feeder = daemon.clone();
        *source.after_read.lock().unwrap() = Some(Box::new(move || {
            // What the feeder does: commit, then tell the waiters.
            let settled = ok("quick");
            let line = ok_line("quick");
            futures_util::FutureExt::now_or_never(feeder.source.settle(vec![settled]))
                .expect("the memory source settles at once")
                .unwrap();
            feeder
                .waiters
                .settled([("quick".to_owned(), TaskState::Ok, line)]);
        }));
        let mut rx = wait_on(&daemon, "quick").await;
        let reply = rx.recv().await;
        assert!(
            matches!(&reply, Some(Reply::LineText { line, .. }) if line.contains("quick")),
            "{reply:?}"
        );
        assert!(matches!(
            rx.recv().await,
            Some(Reply::Done { accepted: 1, .. })
        ));
    }

    /// The replies of a look-up that waits for `id`, once it ended (within a
    /// minute: not waited for in vain).
    async fn wait_on(daemon: &Arc<Daemon>, id: &str) -> mpsc::Receiver<Reply> {
        let (tx, rx) = mpsc::channel(16);
        let look = lookup(vec![id.to_owned()], Some(None), true, daemon, &tx);
        let looked = tokio::time::timeout(Duration::from_secs(60), look)
            .await
            .expect("answered, not waited for");
        assert!(looked.is_ok());
        rx
    }

    /// The line of task `id` settled ok.
    fn ok_line(id: &str) -> String {
        format!(r#"{{"id":"{id}","status":"ok"}}"#)
    }

    /// The settlement of `id`'s first attempt, ok.
    fn ok(id: &str) -> task_source::Settlement {
        task_source::Settlement {
            id: id.to_owned(),
            attempt: 1,
            outcome: task_source::Outcome::Settled {
                state: TaskState::Ok,
                line: ok_line(id),
                error: None,
            },
        }
    }

    /// A look-up of more ids than one read takes reads them a chunk at a
    /// time (the store's thread serves the commits between the chunks) and
    /// answers every id once, in order.
    #[tokio::test]
    async fn a_long_look_up_reads_the_store_a_chunk_at_a_time() {
        let source = Arc::new(TestSource::default());
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        let n = 2 * READ_AT_ONCE + 3;
        let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        source
            .accept(ids.iter().map(|id| task(id)).collect())
            .await
            .unwrap();
        assert_eq!(source.claim(n, 0).await.unwrap().len(), n);
        let settled = ids.iter().step_by(2).map(|id| ok(id)).collect();
        source.settle(settled).await.unwrap();

        let named: Vec<&str> = ids.iter().map(String::as_str).collect();
        let replies = looked_up(&daemon, &named, true).await;
        assert_eq!(
            *source.status_reads.lock().unwrap(),
            [READ_AT_ONCE, READ_AT_ONCE, 3]
        );
        assert_eq!(replies.len(), n + 1);
        for (i, reply) in replies[..n].iter().enumerate() {
            let Reply::LineText { line, .. } = reply else {
                panic!("reply {i}: {reply:?}");
            };
            let line: Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["id"], ids[i], "in the order asked");
            let status = if i % 2 == 0 { "ok" } else { "running" };
            assert_eq!(line["status"], status, "{line}");
        }
        assert!(
            matches!(replies[n], Reply::Done { accepted, .. } if accepted as usize == n.div_ceil(2)),
            "{:?}",
            replies[n]
        );
    }

    /// The provided two-step admission (the shared queue's): past the room,
    /// only new ids take it (known ones are answered with their state, not
    /// counted), a repeat of an id in the batch follows its first, and the
    /// refusal counts the tasks as they stand after this batch's.
    #[tokio::test]
    async fn past_the_room_only_new_ids_take_it_and_the_count_is_current() {
        let source = TestSource::default();
        let eight: Vec<_> = (0..8).map(|i| task(&format!("k{i}"))).collect();
        source.accept(eight).await.unwrap();
        let batch = vec![
            task("k0"),
            task("k1"),
            task("new"),
            task("new"),
            task("more"),
            task("last"),
        ];
        let admissions = source.accept_within(batch, 10).await.unwrap();
        assert_eq!(
            admissions,
            vec![
                Admission::Known(TaskState::Queued),
                Admission::Known(TaskState::Queued),
                Admission::Accepted,
                Admission::Known(TaskState::Queued),
                Admission::Accepted,
                Admission::queue_full(10, 10),
            ]
        );
    }

    /// Over `max_queue_len`, an id whose state the store cannot read is
    /// refused saying so, not only as if the queue were full.
    #[tokio::test]
    async fn a_refusal_over_the_limit_says_when_the_store_could_not_be_read() {
        let source = Arc::new(TestSource {
            status_fails: true,
            ..TestSource::default()
        });
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        daemon.settings.write().unwrap().pool.max_queue_len = 1;
        let admissions = admit(&daemon, vec![task("a"), task("b")]).await;
        assert_eq!(admissions[0], Admission::Accepted);
        assert!(
            matches!(&admissions[1], Admission::Refused(why)
                if why.starts_with("queue_full") && why.contains("could not say") && why.contains("busy")),
            "{admissions:?}"
        );
    }

    /// A wait that names a settled id twice (a line submitted twice in one
    /// `submit --wait`) answers it once, as it would an unsettled one.
    #[tokio::test]
    async fn a_wait_answers_an_id_named_twice_once() {
        let source = Arc::new(TestSource::default());
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        source.accept(vec![task("x")]).await.unwrap();
        assert_eq!(source.claim(1, 0).await.unwrap().len(), 1);
        source.settle(vec![ok("x")]).await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let ids = vec!["x".to_owned(), "x".to_owned()];
        lookup(ids, Some(None), true, &daemon, &tx).await.unwrap();
        drop(tx);
        let mut lines = 0;
        while let Some(reply) = rx.recv().await {
            if let Reply::Line { .. } | Reply::LineText { .. } = reply {
                lines += 1;
            }
        }
        assert_eq!(lines, 1, "one line for the task");
    }

    /// `submit --wait` reads back only the ids the store knew: a new task is
    /// heard of as it settles (its waiter registered before it was stored),
    /// and a new id named twice is answered once.
    #[tokio::test]
    async fn a_submit_that_waits_reads_back_only_the_ids_the_store_knew() {
        let source = Arc::new(TestSource::default());
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        source.accept(vec![task("old")]).await.unwrap();
        assert_eq!(source.claim(1, 0).await.unwrap().len(), 1);
        source.settle(vec![ok("old")]).await.unwrap();
        let line = |id: &str| format!(r#"{{"id":"{id}","type":"echo","payload":1}}"#);
        let lines = vec![line("a"), line("old"), line("a"), line("c")];
        let (tx, mut rx) = mpsc::channel(16);
        let submitting = tokio::spawn({
            let daemon = daemon.clone();
            async move { submit(lines, true, 1, true, &daemon, &tx).await }
        });
        let mut settled_lines = Vec::new();
        let mut dones = 0;
        let accepted = loop {
            let reply = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("answered, not waited for");
            match reply {
                Some(Reply::Done { accepted, .. }) if dones == 1 => break accepted,
                Some(Reply::Done { accepted, .. }) => {
                    assert_eq!(accepted, 4, "every line's task is held");
                    dones += 1;
                    // What the feeder does with the new tasks.
                    assert_eq!(source.claim(8, 0).await.unwrap().len(), 2);
                    source.settle(vec![ok("a"), ok("c")]).await.unwrap();
                    daemon
                        .waiters
                        .settled(["a", "c"].map(|id| (id.to_owned(), TaskState::Ok, ok_line(id))));
                }
                Some(Reply::LineText { line, .. }) => settled_lines.push(line),
                Some(Reply::LinesText { .. }) => {}
                other => panic!("{other:?}"),
            }
        };
        settled_lines.sort();
        assert_eq!(settled_lines, ["a", "c", "old"].map(ok_line));
        assert_eq!(accepted, 3);
        assert_eq!(
            *source.status_reads.lock().unwrap(),
            [1],
            "only old is read"
        );
        assert!(submitting.await.unwrap().is_ok());
        assert_eq!(daemon.waiters.waited_for(), 0, "no waiter is left");
    }

    /// A new task that settles while `submit --wait` is still storing the
    /// batch (its waiters told before the answer lines went out) is heard
    /// of: its waiter registered before the task was stored.
    #[tokio::test]
    async fn a_task_that_settles_while_its_batch_is_stored_is_heard_of() {
        let source = Arc::new(TestSource::default());
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        let feeder = daemon.clone();
        *source.after_accept.lock().unwrap() = Some(Box::new(move || {
            // What the feeder does: claim, commit the settlement, then
            // tell the waiters.
            use futures_util::FutureExt;
            let claimed = feeder.source.claim(1, 0).now_or_never();
            assert_eq!(claimed.expect("at once").unwrap().len(), 1);
            feeder
                .source
                .settle(vec![ok("quick")])
                .now_or_never()
                .expect("the memory source settles at once")
                .unwrap();
            feeder
                .waiters
                .settled([("quick".to_owned(), TaskState::Ok, ok_line("quick"))]);
        }));
        let line = r#"{"id":"quick","type":"echo","payload":1}"#.to_owned();
        let (tx, mut rx) = mpsc::channel(16);
        let submitted = submit(vec![line], true, 1, true, &daemon, &tx);
        tokio::time::timeout(Duration::from_secs(60), submitted)
            .await
            .expect("answered, not waited for")
            .unwrap();
        drop(tx);
        let mut lines = Vec::new();
        while let Some(reply) = rx.recv().await {
            if let Reply::LineText { line, .. } = reply {
                lines.push(line);
            }
        }
        assert_eq!(lines, [ok_line("quick")]);
        assert!(
            source.status_reads.lock().unwrap().is_empty(),
            "nothing read"
        );
    }

    /// A `submit` that waits, whose read of the ids the store knew fails,
    /// still answers its new tasks as they settle (they need no read), then
    /// ends with the store's error instead of `Done`: the client asks again
    /// for the ids it has no line for.
    #[tokio::test]
    async fn a_submit_whose_read_of_known_ids_fails_still_answers_the_new_ones() {
        let source = Arc::new(TestSource {
            status_fails: true,
            ..TestSource::default()
        });
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        source.accept(vec![task("old")]).await.unwrap();
        let line = |id: &str| format!(r#"{{"id":"{id}","type":"echo","payload":1}}"#);
        let (tx, mut rx) = mpsc::channel(16);
        let submitting = tokio::spawn({
            let daemon = daemon.clone();
            async move { submit(vec![line("old"), line("new")], true, 1, true, &daemon, &tx).await }
        });
        let mut replies = Vec::new();
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("answered, not waited for");
            match reply {
                Some(Reply::Done { .. }) => {
                    // The batch's answer lines are out: the feeder settles the
                    // new task and tells its waiters.
                    assert_eq!(source.claim(8, 0).await.unwrap().len(), 2);
                    source.settle(vec![ok("new")]).await.unwrap();
                    daemon
                        .waiters
                        .settled([("new".to_owned(), TaskState::Ok, ok_line("new"))]);
                }
                Some(Reply::LinesText { .. }) => {}
                Some(other) => replies.push(other),
                None => break,
            }
        }
        assert!(submitting.await.unwrap().is_ok());
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert!(
            matches!(&replies[0], Reply::LineText { line, .. } if *line == ok_line("new")),
            "{replies:?}"
        );
        assert!(
            matches!(&replies[1], Reply::Error { kind, .. } if kind == "store"),
            "{replies:?}"
        );
    }

    /// A waited-for task the look-up cannot read (where it stands is not
    /// known) is not waited for in vain: the client is told of the store's
    /// error, and asks again.
    #[tokio::test]
    async fn a_failed_read_is_reported_not_waited_on() {
        let source = Arc::new(TestSource {
            status_fails: true,
            ..TestSource::default()
        });
        let daemon = crate::daemon::test_daemon::daemon_with(source.clone()).await;
        source.accept(vec![task("running")]).await.unwrap();
        assert_eq!(source.claim(1, 0).await.unwrap().len(), 1);
        let mut rx = wait_on(&daemon, "running").await;
        let reply = rx.recv().await;
        assert!(
            matches!(&reply, Some(Reply::Error { kind, .. }) if kind == "store"),
            "{reply:?}"
        );
        assert!(rx.recv().await.is_none(), "nothing after the error");
    }
}
