//! The subjects the server denied this connection ([`Denials`]), as its
//! `-ERR 'Permissions Violation for Publish to "SUBJECT"'` said. A denied
//! JetStream request gets no answer, only that error on the side: without
//! it a missing permission reads as a request that timed out.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Denials kept, at most (the latest ones).
const KEPT: usize = 64;

/// The subjects the server denied, the latest last, each with its number
/// (how many came before it); shared by the connection's event callback
/// and whoever waits on the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Denials {
    noted: Arc<Mutex<Noted>>,
    told: Arc<Notify>,
}

/// The denials kept, and how many came in all.
#[derive(Debug, Default)]
struct Noted {
    subjects: VecDeque<(u64, String)>,
    count: u64,
}

/// Why a request [`Denials::race`] ran did not succeed.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// The server denied this subject.
    Denied(String),
    /// The request failed on its own.
    Failed(E),
}

/// Where the denials stood: those noted after it are new to whoever took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark(u64);

impl Denials {
    /// Notes the subject a server error names, when it is a permissions
    /// violation.
    pub(crate) fn note(&self, server_error: &str) {
        let Some(subject) = denied_subject(server_error) else {
            return;
        };
        {
            let mut noted = self.lock();
            if noted.subjects.len() == KEPT {
                noted.subjects.pop_front();
            }
            let n = noted.count;
            noted.subjects.push_back((n, subject));
            noted.count += 1;
        }
        self.told.notify_waiters();
    }

    /// Where the denials stand now: a request sent after it is denied by
    /// those noted since (an older one, the server's permissions since
    /// changed, is not its).
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.lock().count)
    }

    /// The latest subject denied since `since` that `which` picks.
    pub(crate) fn matching(&self, since: Mark, which: impl Fn(&str) -> bool) -> Option<String> {
        self.lock()
            .subjects
            .iter()
            .rev()
            .take_while(|(n, _)| *n >= since.0)
            .find(|(_, subject)| which(subject))
            .map(|(_, subject)| subject.clone())
    }

    /// Resolves with a subject denied since `since` that `which` picks,
    /// noted before or after the call.
    pub(crate) async fn denied(&self, since: Mark, which: impl Fn(&str) -> bool) -> String {
        loop {
            let told = self.told.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if let Some(subject) = self.matching(since, &which) {
                return subject;
            }
            told.await;
        }
    }

    /// Runs `request`, sent after `since`, to its end, or until the server
    /// denies a subject `which` picks as the request's: a denied request
    /// gets no answer, so it ends then; a request that failed otherwise is
    /// named as denied when such a denial came meanwhile.
    pub(crate) async fn race<T, E>(
        &self,
        since: Mark,
        which: impl Fn(&str) -> bool,
        request: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, Refused<E>> {
        tokio::select! {
            biased;
            done = request.into_future() => done.map_err(|e| match self.matching(since, &which) {
                Some(subject) => Refused::Denied(subject),
                None => Refused::Failed(e),
            }),
            subject = self.denied(since, &which) => Err(Refused::Denied(subject)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Noted> {
        match self.noted.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The subject of a permissions violation: `Permissions Violation for
/// Publish to "SUBJECT"` (or `for Subscription to`), quoted or not.
fn denied_subject(server_error: &str) -> Option<String> {
    let lower = server_error.to_ascii_lowercase();
    let at = lower.find("permissions violation for ")?;
    let rest = &server_error[at..];
    let to = rest.find(" to ")?;
    let subject = rest[to + 4..]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .split(['"', '\'', ' '])
        .next()?;
    (!subject.is_empty()).then(|| subject.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permissions_violation_names_its_subject() {
        for (said, subject) in [
            (
                r#"Permissions Violation for Publish to "$JS.API.STREAM.CREATE.CORTEX_TASKS""#,
                Some("$JS.API.STREAM.CREATE.CORTEX_TASKS"),
            ),
            (
                "permissions violation for subscription to _INBOX.abc.*",
                Some("_INBOX.abc.*"),
            ),
            (
                "'Permissions Violation for Publish to \"x.y\"'",
                Some("x.y"),
            ),
            (
                r#"Permissions Violation for Subscription to "a.b" using queue "q""#,
                Some("a.b"),
            ),
            ("maximum payload exceeded", None),
            ("Permissions Violation for Publish to \"\"", None),
        ] {
            assert_eq!(denied_subject(said).as_deref(), subject, "{said}");
        }
    }

    #[tokio::test]
    async fn a_denial_is_found_before_or_after_the_wait() {
        let denials = Denials::default();
        let start = denials.mark();
        denials.note(r#"Permissions Violation for Publish to "$JS.API.STREAM.INFO.TASKS""#);
        let tasks = |subject: &str| subject.ends_with(".TASKS");
        assert_eq!(
            denials.matching(start, tasks).as_deref(),
            Some("$JS.API.STREAM.INFO.TASKS")
        );
        assert_eq!(
            denials.matching(denials.mark(), tasks),
            None,
            "an older one"
        );
        assert_eq!(denials.matching(start, |s: &str| s.ends_with(".DLQ")), None);
        let waiting = tokio::spawn({
            let denials = denials.clone();
            async move { denials.denied(start, |s: &str| s.ends_with(".DLQ")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "parked until a denial comes");
        denials.note(r#"Permissions Violation for Publish to "$JS.API.STREAM.CREATE.DLQ""#);
        let subject = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("told")
            .unwrap();
        assert_eq!(subject, "$JS.API.STREAM.CREATE.DLQ");
    }
}
