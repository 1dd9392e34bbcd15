//! The listings: `tasks` (recent tasks, newest first) and `dlq list` (the
//! dead letters, oldest first), read from the task source [`READ_AT_ONCE`]
//! tasks at a time ([`Pager`]) and answered in one JSON array, or in pages
//! ([`Pages`]) to a client that asks for them.

use serde_json::Value;
use task_source::{Filter, ListOrder, Pager, SourceError, TaskRecord, TaskState};
use tokio::sync::mpsc;

use super::lines;
use super::pages::Pages;
use crate::daemon::protocol::{Reply, MAX_REPLY};
use crate::daemon::state::Daemon;

type Closed = mpsc::error::SendError<Reply>;

/// How a listing is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One `Json` array (refused as `too_large` past the reply limit): what
    /// a client from before pages asks for.
    Whole,
    /// Pages of at most this many bytes each, then `Done`.
    Pages(usize),
}

impl Shape {
    /// Pages within the largest reply a client reads when `paged`, else
    /// the whole.
    pub(crate) fn asked(paged: bool) -> Self {
        if paged {
            Self::Pages(MAX_REPLY)
        } else {
            Self::Whole
        }
    }
}

/// The task state a `tasks` listing's status filter names: the check of
/// `tasks --status` as it is read (a usage error, before connecting) and of
/// the daemon's `tasks` request.
///
/// # Errors
/// `name` is no state ([`TaskState::ALL`]): the message names it and every
/// state.
pub(crate) fn status_named(name: &str) -> Result<TaskState, String> {
    TaskState::parse(name).ok_or_else(|| {
        let states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "unknown status {name:?}: expected one of {}",
            states.join(", ")
        )
    })
}

/// `tasks`: recent tasks as entries, newest first.
pub(crate) async fn tasks(
    daemon: &Daemon,
    status: Option<String>,
    task_type: Option<String>,
    limit: usize,
    shape: Shape,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let state = match status.as_deref().map(status_named).transpose() {
        Ok(state) => state,
        Err(why) => return out.send(Reply::error("invalid", why)).await,
    };
    let filter = Filter {
        state,
        task_type,
        limit,
    };
    let pager = Pager::new(filter, ListOrder::NewestFirst, READ_AT_ONCE);
    send(daemon, pager, lines::entry, shape, out).await
}

/// `dlq list`: the dead letters, oldest first.
pub(crate) async fn dlq_list(
    daemon: &Daemon,
    shape: Shape,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let filter = Filter {
        state: Some(TaskState::DeadLetter),
        ..Filter::default()
    };
    let pager = Pager::new(filter, ListOrder::OldestFirst, READ_AT_ONCE);
    send(daemon, pager, lines::dead_letter, shape, out).await
}

/// Tasks read from the source at once: each read is a job of its own on a
/// store's one thread, so a listing of every task holds up the commits of
/// submissions and settlements for no longer than one read.
const READ_AT_ONCE: usize = 1024;

/// Sends the entries `entry` makes of the tasks `pager` reads, as `shape`
/// says; a source that cannot be read ends the listing with its error.
async fn send(
    daemon: &Daemon,
    mut pager: Pager,
    entry: fn(&TaskRecord) -> Value,
    shape: Shape,
    out: &mpsc::Sender<Reply>,
) -> Result<(), Closed> {
    let store_error = |e: SourceError| Reply::error("store", e.to_string());
    let Shape::Pages(limit) = shape else {
        return out.send(whole(daemon, pager, entry).await).await;
    };
    let mut pages = Pages::new(limit);
    let mut ready = Vec::new();
    let failed = loop {
        let records = match pager.next(&*daemon.source).await {
            Ok(Some(records)) => records,
            Ok(None) => break None,
            Err(e) => break Some(store_error(e)),
        };
        for record in &records {
            pages.push(&record.task.id, entry(record).to_string(), &mut ready);
            for reply in ready.drain(..) {
                out.send(reply).await?;
            }
        }
    };
    match failed {
        None => pages.end(&mut ready),
        // What was read goes out; the error says the listing stops there.
        Some(error) => pages.fail(error, &mut ready),
    }
    for reply in ready {
        out.send(reply).await?;
    }
    Ok(())
}

/// The listing in one `Json` array; `too_large` as soon as its entries
/// encode past the largest reply, reading no further (a listing of a large
/// store is not built whole in memory only to be refused).
async fn whole(daemon: &Daemon, mut pager: Pager, entry: fn(&TaskRecord) -> Value) -> Reply {
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    loop {
        let records = match pager.next(&*daemon.source).await {
            Ok(Some(records)) => records,
            Ok(None) => {
                return Reply::Json {
                    value: Value::Array(entries),
                }
            }
            Err(e) => return Reply::error("store", e.to_string()),
        };
        for record in &records {
            let value = entry(record);
            bytes = bytes.saturating_add(encoded_len(&value));
            if bytes > MAX_REPLY {
                return Reply::error(
                    "too_large",
                    format!(
                        "the listing is larger than {MAX_REPLY} bytes, the most one reply \
                         holds; ask for it in pages (`paged: true`)"
                    ),
                );
            }
            entries.push(value);
        }
    }
}

/// The bytes `value` takes as MessagePack.
fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that could not be encoded
    // counts as the largest, refused rather than sent.
    match rmp_serde::encode::write(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::daemon::protocol::frame_reply;
    use crate::daemon::test_daemon::{daemon, daemon_with, task, TestSource};
    use bytes::BytesMut;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use task_source::TaskSource;
    use task_source::{ErrorInfo, Outcome, Settlement};

    /// A daemon holding `n` dead letters, `d0` first, each with an error
    /// message of 100 bytes.
    pub(crate) async fn with_dead_letters(n: usize) -> Arc<Daemon> {
        let daemon = daemon().await;
        let ids: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        for id in &ids {
            daemon.source.accept(vec![task(id)]).await.unwrap();
            let claimed = daemon.source.claim(1, 0).await.unwrap();
            assert_eq!(claimed.len(), 1);
            let error = ErrorInfo {
                kind: "boom".to_owned(),
                message: "m".repeat(100),
            };
            let line = serde_json::json!({"id": id, "status": "dead_letter"}).to_string();
            let settled = Settlement {
                id: id.clone(),
                attempt: claimed[0].attempt,
                outcome: Outcome::Settled {
                    state: TaskState::DeadLetter,
                    line,
                    error: Some(error),
                },
            };
            daemon.source.settle(vec![settled]).await.unwrap();
        }
        daemon
    }

    /// The replies to a listing, as `list` answers it in `shape`.
    pub(crate) async fn answered<F>(shape: Shape, list: F) -> Vec<Reply>
    where
        F: AsyncFnOnce(Shape, &mpsc::Sender<Reply>) -> Result<(), Closed>,
    {
        let (tx, mut rx) = mpsc::channel(1024);
        list(shape, &tx).await.unwrap();
        drop(tx);
        let mut replies = Vec::new();
        while let Some(reply) = rx.recv().await {
            replies.push(reply);
        }
        replies
    }

    /// The entries of a whole answer, as JSON text.
    fn whole(replies: &[Reply]) -> Vec<String> {
        let [Reply::Json {
            value: Value::Array(entries),
        }] = replies
        else {
            panic!("one array: {replies:?}");
        };
        entries.iter().map(Value::to_string).collect()
    }

    /// The entries of an answer in pages, each page checked to fit `limit`,
    /// and its `Done`.
    fn paged(replies: &[Reply], limit: usize) -> (Vec<String>, Option<&Reply>) {
        let mut entries = Vec::new();
        for reply in replies {
            assert!(
                frame_reply(reply, &mut BytesMut::new(), limit).is_ok(),
                "a reply over {limit} bytes"
            );
            if let Reply::LinesText { lines } = reply {
                entries.extend(lines.iter().cloned());
            }
        }
        (entries, replies.last())
    }

    /// A whole listing past the largest reply is refused as `too_large` as
    /// soon as its entries pass it, the rest of the store not read (it was
    /// built whole in memory first: 300 MB for a 100 000-task store).
    #[tokio::test]
    async fn a_whole_listing_past_one_reply_is_refused_without_reading_the_rest() {
        let n = 5 * READ_AT_ONCE;
        let long_type = "k".repeat(4000);
        let source = Arc::new(TestSource::default());
        let many = (0..n).map(|i| task_source::NewTask {
            task_type: long_type.clone(),
            ..task(&format!("t{i}"))
        });
        source.inner.accept(many.collect()).await.unwrap();
        let daemon = daemon_with(source.clone()).await;
        let list = async |shape, out: &mpsc::Sender<Reply>| {
            tasks(&daemon, None, None, 0, shape, out).await
        };
        let replies = answered(Shape::Whole, list).await;
        let kinds: Vec<&str> = replies
            .iter()
            .map(|r| match r {
                Reply::Error { kind, .. } => kind.as_str(),
                _ => "not an error",
            })
            .collect();
        assert_eq!(kinds, ["too_large"]);
        let read = source.pages_read.load(Ordering::SeqCst);
        assert!(read < 5, "{read} reads of {n} tasks");
    }

    /// A listing longer than one read of the source comes from several, each
    /// of at most [`READ_AT_ONCE`] tasks, whole and in order; a read that
    /// fails partway ends it with the store's error after the pages sent.
    #[tokio::test]
    async fn a_listing_past_one_read_is_read_in_parts_and_a_failing_read_ends_it() {
        let n = 2 * READ_AT_ONCE + 10;
        let ids: Vec<String> = (0..n).map(|i| format!("t{i:05}")).collect();
        let newest: Vec<String> = ids.iter().rev().cloned().collect();
        for fails_after in [None, Some(1)] {
            let source = Arc::new(TestSource {
                pages_before_failing: fails_after,
                ..TestSource::default()
            });
            source
                .inner
                .accept(ids.iter().map(|id| task(id)).collect())
                .await
                .unwrap();
            let daemon = daemon_with(source.clone()).await;
            let list = async |shape, out: &mpsc::Sender<Reply>| {
                tasks(&daemon, None, None, 0, shape, out).await
            };
            let replies = answered(Shape::Pages(MAX_REPLY), list).await;
            let (entries, last) = paged(&replies, MAX_REPLY);
            let listed: Vec<String> = entries
                .iter()
                .map(|e| serde_json::from_str::<Value>(e).unwrap()["id"].to_string())
                .map(|id| id.trim_matches('"').to_owned())
                .collect();
            match fails_after {
                None => {
                    assert_eq!(listed, newest);
                    assert_eq!(source.pages_read.load(Ordering::SeqCst), 3);
                    assert!(
                        matches!(last, Some(Reply::Done { accepted, .. }) if *accepted == n as u64)
                    );
                }
                Some(_) => {
                    assert_eq!(listed, newest[..READ_AT_ONCE]);
                    assert!(
                        matches!(last, Some(Reply::Error { kind, .. }) if kind == "store"),
                        "{last:?}"
                    );
                }
            }
        }
    }

    /// A dead-letter queue too long for one reply (the whole array does not
    /// frame within the limit) comes in pages that each do, with every entry
    /// of the whole, in its order (oldest first), and `Done` counting them.
    #[tokio::test]
    async fn a_dead_letter_queue_past_one_reply_comes_in_pages_that_each_fit() {
        let limit = 1000;
        let daemon = with_dead_letters(40).await;
        let list = async |shape, out: &mpsc::Sender<Reply>| dlq_list(&daemon, shape, out).await;
        let all = answered(Shape::Whole, list).await;
        assert!(
            frame_reply(&all[0], &mut BytesMut::new(), limit).is_err(),
            "the whole listing fits one reply: no test"
        );
        let replies = answered(Shape::Pages(limit), list).await;
        let (entries, done) = paged(&replies, limit);
        assert_eq!(entries, whole(&all));
        let first: Value = serde_json::from_str(&entries[0]).unwrap();
        assert_eq!(first["id"], "d0", "oldest first");
        assert_eq!(first["error"]["message"], "m".repeat(100));
        assert_eq!(
            done,
            Some(&Reply::Done {
                accepted: 40,
                refused: 0
            })
        );
    }

    /// `tasks` with no limit (`--limit 0`) comes in pages just as well, newest
    /// first, and its filters and refusals are as before.
    #[tokio::test]
    async fn every_task_comes_in_pages_that_each_fit() {
        let limit = 1000;
        let daemon = with_dead_letters(30).await;
        let all = |status: Option<&str>| {
            let daemon = &daemon;
            let status = status.map(str::to_owned);
            async move |shape, out: &mpsc::Sender<Reply>| {
                tasks(daemon, status, None, 0, shape, out).await
            }
        };
        let whole_answer = answered(Shape::Whole, all(None)).await;
        let replies = answered(Shape::Pages(limit), all(None)).await;
        let (entries, done) = paged(&replies, limit);
        assert_eq!(entries, whole(&whole_answer));
        let first: Value = serde_json::from_str(&entries[0]).unwrap();
        assert_eq!(first["id"], "d29", "newest first");
        assert!(replies.len() > 2, "one page only: {}", replies.len());
        assert_eq!(
            done,
            Some(&Reply::Done {
                accepted: 30,
                refused: 0
            })
        );
        let none = answered(Shape::Pages(limit), all(Some("ok"))).await;
        assert_eq!(
            none,
            [Reply::Done {
                accepted: 0,
                refused: 0
            }]
        );
        let refused = answered(Shape::Pages(limit), all(Some("nonsense"))).await;
        assert!(
            matches!(&refused[..], [Reply::Error { kind, .. }] if kind == "invalid"),
            "{refused:?}"
        );
    }
}
