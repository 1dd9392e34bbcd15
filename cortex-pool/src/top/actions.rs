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
    let read = async {
        client
            .send(&Request::DlqList { paged: true })
            .await
            .map_err(|e| e.to_string())?;
        let mut bad = None;
        read_listing(
            client,
            &mut |text| match serde_json::from_str::<DeadLetter>(text) {
                Ok(entry) => listed.take(entry),
                Err(e) => {
                    bad = Some(format!("unexpected entry {text}: {e}"));
                    false
                }
            },
        )
        .await?;
        bad.map_or(Ok(()), Err)
    };
    let read = read.await;
    Outcome::DeadLetters(
        read.map(|()| listed)
            .map_err(|e| format!("cannot list the dead letters: {e}")),
    )
}

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
    use serde_json::json;

    use super::*;
    use crate::top::source::DLQ_SHOWN;

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
