//! The control requests a key asks for, each on its own connection in the
//! background (a rolling restart answers only when it is over), with the same
//! requests and authorisation as `cortex-pool scale`, `roll` and `dlq`.

use std::path::PathBuf;
use std::sync::mpsc;

use serde_json::Value;

use super::queue_watch::QueueWatch;
use super::source::{connect, json_reply, DeadLetter, DeadLetters};
use crate::daemon::client::Client;
use crate::daemon::commands::listing::read_listing;
use crate::daemon::protocol::{Reply, Request};

/// What a key asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Set the pool's size.
    Scale(usize),
    /// Replace every worker, one at a time.
    Roll,
    /// List the dead-letter queue.
    DlqList,
    /// Resubmit one dead letter.
    DlqRetry(String),
}

/// What came back.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It worked: a line for the log.
    Done(String),
    /// It failed: why.
    Failed(String),
    /// The dead-letter queue's entries, or why they cannot be listed.
    DeadLetters(Result<DeadLetters, String>),
}

/// Whom the actions go to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The daemon listening on this control socket.
    Daemon(PathBuf),
    /// The shared queue.
    Queue(QueueWatch),
}

/// Runs actions on a runtime and collects their outcomes.
#[derive(Debug)]
pub(crate) struct Actions {
    target: Target,
    runtime: tokio::runtime::Handle,
    sender: mpsc::Sender<Outcome>,
    outcomes: mpsc::Receiver<Outcome>,
}

impl Actions {
    /// Actions against `target`, run on `runtime`.
    pub(crate) fn new(target: Target, runtime: tokio::runtime::Handle) -> Self {
        let (sender, outcomes) = mpsc::channel();
        Self {
            target,
            runtime,
            sender,
            outcomes,
        }
    }

    /// Starts `action`; its outcome arrives through [`next`](Self::next).
    pub(crate) fn start(&self, action: Action) {
        let target = self.target.clone();
        let sender = self.sender.clone();
        self.runtime.spawn(async move {
            let outcomes = match &target {
                Target::Daemon(socket) => perform(socket, action).await,
                Target::Queue(queue) => queue.perform(action).await,
            };
            for outcome in outcomes {
                let _ = sender.send(outcome);
            }
        });
    }

    /// An outcome that arrived, if any.
    pub(crate) fn next(&self) -> Option<Outcome> {
        self.outcomes.try_recv().ok()
    }
}

async fn perform(socket: &std::path::Path, action: Action) -> Vec<Outcome> {
    let mut client = match connect(socket).await {
        Ok(client) => client,
        Err(e) => return vec![Outcome::Failed(e)],
    };
    match action {
        Action::Scale(size) => vec![match call(&mut client, Request::Scale { size })
            .await
            .and_then(json_reply::<Value>)
        {
            Ok(v) => Outcome::Done(format!("scale: target size {}", v["size"])),
            Err(e) => Outcome::Failed(format!("scale to {size} refused: {e}")),
        }],
        Action::Roll => vec![match call(&mut client, Request::Roll)
            .await
            .and_then(json_reply::<Value>)
        {
            Ok(v) => Outcome::Done(format!(
                "rolling restart done: {} worker(s) replaced",
                v["replaced"]
            )),
            Err(e) => Outcome::Failed(format!("rolling restart failed: {e}")),
        }],
        Action::DlqList => vec![dead_letters(&mut client).await],
        Action::DlqRetry(id) => {
            let request = Request::DlqRetry {
                ids: Some(vec![id.clone()]),
            };
            let retried = retried(&id, dlq(&mut client, request).await);
            vec![retried, dead_letters(&mut client).await]
        }
    }
}

async fn call(client: &mut Client, request: Request) -> Result<Reply, String> {
    client.call(&request).await.map_err(|e| e.to_string())
}

/// A `dlq` request's document.
async fn dlq(client: &mut Client, request: Request) -> Result<Value, String> {
    call(client, request).await.and_then(json_reply::<Value>)
}

/// The outcome of `dlq retry ID` from its reply (the daemon's and the shared
/// queue's alike).
pub(crate) fn retried(id: &str, reply: Result<Value, String>) -> Outcome {
    match reply {
        Ok(v) if v["requeued"].as_array().is_some_and(|r| !r.is_empty()) => {
            Outcome::Done(format!("dead letter {id} resubmitted"))
        }
        Ok(_) => Outcome::Failed(format!("dead letter {id} is no longer in the queue")),
        Err(e) => Outcome::Failed(format!("retry of dead letter {id} failed: {e}")),
    }
}

/// The daemon's dead letters, read a page at a time (one reply of a long
/// queue would pass the largest reply), the oldest [`DLQ_SHOWN`] of them.
///
/// [`DLQ_SHOWN`]: super::source::DLQ_SHOWN
async fn dead_letters(client: &mut Client) -> Outcome {
    let mut listed = DeadLetters::default();
    let mut bad = None;
    let sent = client.send(&Request::DlqList { paged: true }).await;
    let read = read_listing(
        client,
        sent,
        &mut |text| match serde_json::from_str::<DeadLetter>(text) {
            Ok(entry) => listed.take(entry),
            Err(e) => {
                let shown: String = text.chars().take(SHOWN_OF_A_BAD_ENTRY).collect();
                bad = Some(format!("unexpected entry {shown}: {e}"));
                false
            }
        },
    )
    .await;
    let read = read
        .map_err(|e| e.to_string())
        .and_then(|end| bad.map_or(Ok(end), Err));
    Outcome::DeadLetters(
        read.map(|end| {
            listed.more |= !end.whole;
            listed.left_out = end.left_out;
            listed
        })
        .map_err(|e| format!("cannot list the dead letters: {e}")),
    )
}

/// Characters of an entry that could not be read that its error shows.
const SHOWN_OF_A_BAD_ENTRY: usize = 200;

/// The outcome of `dlq list` from its reply, one array (the shared
/// queue's): its oldest [`DLQ_SHOWN`](super::source::DLQ_SHOWN) entries.
pub(crate) fn listed(reply: Result<Value, String>) -> Outcome {
    let entries = reply.and_then(|v| {
        serde_json::from_value::<Vec<DeadLetter>>(v).map_err(|e| format!("unexpected reply: {e}"))
    });
    Outcome::DeadLetters(
        entries
            .map(|entries| {
                let mut listed = DeadLetters::default();
                for entry in entries {
                    if !listed.take(entry) {
                        break;
                    }
                }
                listed
            })
            .map_err(|e| format!("cannot list the dead letters: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
    use serde_json::json;
    use task_source::{ErrorInfo, Outcome as Ended, Settlement, TaskState};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::daemon::durable::listing::tests::with_dead_letters;
    use crate::daemon::state::Daemon;
    use crate::daemon::test_daemon;
    use crate::top::source::DLQ_SHOWN;

    /// A daemon's control socket, served until dropped (then removed).
    struct Served {
        socket: PathBuf,
        stop: CancellationToken,
    }

    impl Served {
        fn new(daemon: Arc<Daemon>, name: &str) -> Self {
            let socket =
                std::env::temp_dir().join(format!("cortex-top-{name}-{}.sock", std::process::id()));
            let _ = std::fs::remove_file(&socket);
            let listener = ListenerOptions::new()
                .name(socket.as_path().to_fs_name::<GenericFilePath>().unwrap())
                .create_tokio()
                .unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(crate::daemon::server::serve(listener, daemon, stop.clone()));
            Self { socket, stop }
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.stop.cancel();
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    /// Makes task `id` a dead letter whose error message is `message`.
    async fn dead_letter(daemon: &Daemon, id: &str, message: String) {
        daemon
            .source
            .accept(vec![test_daemon::task(id)])
            .await
            .unwrap();
        let claimed = daemon.source.claim(1, 0).await.unwrap();
        let settled = Settlement {
            id: id.to_owned(),
            attempt: claimed[0].attempt,
            outcome: Ended::Settled {
                state: TaskState::DeadLetter,
                line: "{}".to_owned(),
                error: Some(ErrorInfo {
                    kind: "boom".to_owned(),
                    message,
                }),
            },
        };
        daemon.source.settle(vec![settled]).await.unwrap();
    }

    /// The box's listing, whatever else came with it.
    fn the_listing(outcomes: &[Outcome]) -> &DeadLetters {
        match outcomes.last() {
            Some(Outcome::DeadLetters(Ok(listed))) => listed,
            other => panic!("a listing: {other:?}"),
        }
    }

    /// A daemon's queue longer than the box holds is read a page at a time
    /// until the box is full: its oldest entries, in order, with more said
    /// to be left; a retry and a listing share a connection, and the daemon
    /// serves on after the box hung up on the rest.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_daemons_long_queue_shows_its_oldest_and_the_daemon_serves_on() {
        let daemon = with_dead_letters(DLQ_SHOWN + 50).await;
        let served = Served::new(daemon, "long");
        let listed = perform(&served.socket, Action::DlqList).await;
        let listed = the_listing(&listed);
        assert!(listed.more);
        assert_eq!(listed.entries.len(), DLQ_SHOWN);
        assert_eq!(listed.entries[0].id, "d0");
        assert_eq!(
            listed.entries[DLQ_SHOWN - 1].id,
            format!("d{}", DLQ_SHOWN - 1)
        );
        let retried = perform(&served.socket, Action::DlqRetry("d0".into())).await;
        assert!(
            matches!(&retried[0], Outcome::Done(text) if text.contains("d0 resubmitted")),
            "{retried:?}"
        );
        assert_eq!(the_listing(&retried).entries[0].id, "d1");
    }

    /// A dead letter too large for a reply is named in the outcome while
    /// the others are shown, instead of failing the whole box.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_letter_too_large_to_send_is_named_and_the_rest_shown() {
        let daemon = test_daemon::daemon().await;
        dead_letter(&daemon, "small", "m".to_owned()).await;
        dead_letter(&daemon, "huge", "x".repeat(17 << 20)).await;
        dead_letter(&daemon, "last", "m".to_owned()).await;
        let served = Served::new(daemon, "huge");
        let listed = perform(&served.socket, Action::DlqList).await;
        let listed = the_listing(&listed);
        let ids: Vec<&str> = listed.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["small", "last"]);
        assert!(!listed.more);
        assert_eq!(listed.left_out.len(), 1, "{:?}", listed.left_out);
        assert!(listed.left_out[0].contains("huge"), "{:?}", listed.left_out);
    }

    /// A daemon that refuses the connection (at `max_connections`) is heard
    /// out: its reason is shown, not the broken pipe of the request it
    /// closed on.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_connection_shows_the_daemons_reason() {
        let source = Arc::new(task_source::MemorySource::new());
        let daemon = test_daemon::daemon_set(source, |s| s.max_connections = 1).await;
        let served = Served::new(daemon, "busy");
        let held = Client::connect(&served.socket).await.unwrap();
        for _ in 0..20 {
            let outcome = perform(&served.socket, Action::DlqList).await;
            let [Outcome::DeadLetters(Err(why))] = &outcome[..] else {
                panic!("a refusal: {outcome:?}");
            };
            assert!(why.contains("busy"), "{why}");
        }
        drop(held);
    }

    fn listed_ids(outcome: &Outcome) -> (Vec<&str>, bool) {
        let Outcome::DeadLetters(Ok(listed)) = outcome else {
            panic!("a listing: {outcome:?}");
        };
        let ids = listed.entries.iter().map(|e| e.id.as_str()).collect();
        (ids, listed.more)
    }

    /// A queue longer than the box holds shows its oldest entries, in
    /// order, and says that more are left; one that fits shows whole.
    #[test]
    fn a_long_dead_letter_queue_shows_its_oldest_and_says_more_are_left() {
        let entries = |n: usize| {
            let all: Vec<Value> = (0..n).map(|i| json!({"id": i.to_string()})).collect();
            Ok(Value::Array(all))
        };
        let long = listed(entries(DLQ_SHOWN + 5));
        let (ids, more) = listed_ids(&long);
        assert!(more);
        assert_eq!(ids.len(), DLQ_SHOWN);
        assert_eq!((ids[0], ids[DLQ_SHOWN - 1]), ("0", "9999"));
        let full = listed(entries(DLQ_SHOWN));
        let (ids, more) = listed_ids(&full);
        assert!(!more, "exactly full is whole");
        assert_eq!(ids.len(), DLQ_SHOWN);
    }

    /// A reply that is no list of dead letters is reported, not shown empty.
    #[test]
    fn a_reply_that_is_no_list_is_a_failure_that_says_so() {
        let Outcome::DeadLetters(Err(why)) = listed(Ok(json!({"no": "list"}))) else {
            panic!("a failure");
        };
        assert!(
            why.starts_with("cannot list the dead letters: unexpected reply"),
            "{why}"
        );
    }
}
