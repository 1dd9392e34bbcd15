//! The subjects the server denied this connection ([`Denials`]), as its
//! `-ERR 'Permissions Violation for Publish to "SUBJECT"'` said. A denied
//! JetStream request gets no answer, only that error on the side: without
//! it a missing permission reads as a request that timed out.

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Denials kept, at most (the latest ones): twice what one settle call can
/// meet at once (4 096 result puts, and as many dead letters), so a flood
/// of them does not push a request's own denial out before it looks (reads
/// of the results bucket, as many again at most per call, may share them:
/// a read whose denial was pushed out waits out its timeout, as before).
const KEPT: usize = 8192;

/// The subjects the server denied, the latest last, each with its number
/// (how many came before it); shared by the connection's event callback
/// and whoever waits on the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Denials {
    noted: Arc<Mutex<Noted>>,
    /// Told of every denial: the requests that look for theirs among
    /// them all ([`Own::Matching`]).
    told: Arc<Notify>,
}

/// The denials kept, and how many came in all.
#[derive(Debug, Default)]
struct Noted {
    /// Each denial kept, with its number, oldest first.
    subjects: VecDeque<(u64, Arc<str>)>,
    /// The number of the latest denial kept of each subject: a request that
    /// knows its subject looks it up here, not through every denial (one
    /// copy of each subject, shared with `subjects`).
    latest: HashMap<Arc<str>, u64>,
    count: u64,
    /// The requests waiting for a denial of one subject
    /// ([`Own::Subject`]), by subject: each is told only of its own, so a
    /// flood of denials wakes each request once, not every request at each.
    watched: HashMap<Arc<str>, Watched>,
    /// The latest denied ack (`$JS.ACK.…`), and when it came: an ack is
    /// published without an answer, so no request waits for its denial.
    ack: Option<(Instant, String)>,
    /// When a denied ack was last logged (at most once a minute).
    ack_logged: Option<Instant>,
}

/// Who waits for a denial of one subject.
#[derive(Debug)]
struct Watched {
    /// The subject (the map's key, shared).
    subject: Arc<str>,
    told: Arc<Notify>,
    /// The requests waiting.
    requests: usize,
}

/// A request's watch on one subject's denials, given up when dropped.
struct Watch<'a> {
    denials: &'a Denials,
    subject: Arc<str>,
    told: Arc<Notify>,
}

impl<'a> Watch<'a> {
    fn new(denials: &'a Denials, subject: &str) -> Self {
        let mut noted = denials.lock();
        let (subject, told) = match noted.watched.get_mut(subject) {
            Some(watched) => {
                watched.requests += 1;
                (Arc::clone(&watched.subject), Arc::clone(&watched.told))
            }
            None => {
                let watched = Watched {
                    subject: subject.into(),
                    told: Arc::default(),
                    requests: 1,
                };
                let found = (Arc::clone(&watched.subject), Arc::clone(&watched.told));
                noted.watched.insert(Arc::clone(&watched.subject), watched);
                found
            }
        };
        drop(noted);
        Self {
            denials,
            subject,
            told,
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut noted = self.denials.lock();
        if let Some(watched) = noted.watched.get_mut(&self.subject) {
            watched.requests -= 1;
            if watched.requests == 0 {
                noted.watched.remove(&self.subject);
            }
        }
    }
}

/// The denied subjects that are a request's own: its one subject, looked
/// up at once, or those a predicate picks (a set-up step's stream, consumer
/// or bucket), looked for among every denial since the request was sent.
pub(crate) enum Own<'a, F> {
    /// This subject.
    Subject(&'a str),
    /// The subjects this picks.
    Matching(F),
}

impl<F: Fn(&str) -> bool> Own<'_, F> {
    /// The latest subject of these denied since `since`.
    fn find(&self, noted: &Noted, since: Mark) -> Option<String> {
        match self {
            Self::Subject(subject) => noted
                .latest
                .get(*subject)
                .filter(|n| **n >= since.0)
                .map(|_| (*subject).to_owned()),
            Self::Matching(which) => noted
                .subjects
                .iter()
                .rev()
                .take_while(|(n, _)| *n >= since.0)
                .find(|(_, subject)| which(subject))
                .map(|(_, subject)| subject.to_string()),
        }
    }
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
        if subject.starts_with(ACK_PREFIX) {
            // No request waits for an ack's denial (each has a subject of
            // its own): kept apart, it pushes no request's denial out.
            self.note_ack(subject);
            return;
        }
        let watched = {
            let mut noted = self.lock();
            if noted.subjects.len() == KEPT {
                if let Some((n, gone)) = noted.subjects.pop_front() {
                    if noted.latest.get(&gone) == Some(&n) {
                        noted.latest.remove(&gone);
                    }
                }
            }
            let n = noted.count;
            let subject: Arc<str> = subject.into();
            noted.latest.insert(Arc::clone(&subject), n);
            let watched = noted.watched.get(&subject).map(|w| Arc::clone(&w.told));
            noted.subjects.push_back((n, subject));
            noted.count += 1;
            watched
        };
        if let Some(told) = watched {
            told.notify_waiters();
        }
        self.told.notify_waiters();
    }

    /// Notes a denied ack, logging it at most once a minute: the task's
    /// message is delivered again after `ack_wait`, and never leaves the
    /// stream.
    fn note_ack(&self, subject: String) {
        let now = Instant::now();
        let log = {
            let mut noted = self.lock();
            let log = noted
                .ack_logged
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60));
            if log {
                noted.ack_logged = Some(now);
            }
            noted.ack = Some((now, subject.clone()));
            log
        };
        if log {
            tracing::error!(
                %subject,
                "the NATS server denies this connection's acks: {ACK_DENIED}"
            );
        }
    }

    /// The subject of the latest ack the server denied within `window` of
    /// now.
    pub(crate) fn ack_denied_within(&self, window: Duration) -> Option<String> {
        self.ack_denied_at(Instant::now(), window)
    }

    /// The subject of the latest ack the server denied within `window`
    /// before `now`.
    fn ack_denied_at(&self, now: Instant, window: Duration) -> Option<String> {
        self.lock()
            .ack
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= window)
            .map(|(_, subject)| subject.clone())
    }

    /// Where the denials stand now: a request sent after it is denied by
    /// those noted since (an older one, the server's permissions since
    /// changed, is not its).
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.lock().count)
    }

    /// The latest of `own`'s subjects denied since `since`.
    pub(crate) fn matching<F: Fn(&str) -> bool>(
        &self,
        since: Mark,
        own: &Own<'_, F>,
    ) -> Option<String> {
        own.find(&self.lock(), since)
    }

    /// Resolves with one of `own`'s subjects denied since `since`, noted
    /// before or after the call.
    pub(crate) async fn denied<F: Fn(&str) -> bool>(
        &self,
        since: Mark,
        own: &Own<'_, F>,
    ) -> String {
        // Registered before it looks: a denial noted after the look tells it.
        let watch = match own {
            Own::Subject(subject) => Some(Watch::new(self, subject)),
            Own::Matching(_) => None,
        };
        let told = watch.as_ref().map_or(&self.told, |w| &w.told);
        loop {
            let told = told.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if let Some(subject) = self.matching(since, own) {
                return subject;
            }
            told.await;
        }
    }

    /// Runs `request`, sent after `since`, to its end, or until the server
    /// denies one of `own`'s subjects: a denied request gets no answer, so
    /// it ends then; a request that failed otherwise is named as denied
    /// when such a denial came meanwhile.
    pub(crate) async fn race<T, E, F: Fn(&str) -> bool>(
        &self,
        since: Mark,
        own: Own<'_, F>,
        request: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, Refused<E>> {
        tokio::select! {
            biased;
            done = request.into_future() => done.map_err(|e| match self.matching(since, &own) {
                Some(subject) => Refused::Denied(subject),
                None => Refused::Failed(e),
            }),
            subject = self.denied(since, &own) => Err(Refused::Denied(subject)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Noted> {
        match self.noted.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// What a denied ack does, and what to grant.
pub(crate) const ACK_DENIED: &str = "the tasks it runs are delivered again after ack_wait and \
     never leave the stream; grant publish on $JS.ACK.> to its user";

/// The subjects of acks, naks and the like: `$JS.ACK.STREAM.CONSUMER.…`.
const ACK_PREFIX: &str = "$JS.ACK.";

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
        let tasks = Own::Matching(|subject: &str| subject.ends_with(".TASKS"));
        assert_eq!(
            denials.matching(start, &tasks).as_deref(),
            Some("$JS.API.STREAM.INFO.TASKS")
        );
        assert_eq!(
            denials.matching(denials.mark(), &tasks),
            None,
            "an older one"
        );
        let dlq = Own::Matching(|s: &str| s.ends_with(".DLQ"));
        assert_eq!(denials.matching(start, &dlq), None);
        let waiting = tokio::spawn({
            let denials = denials.clone();
            async move {
                let dlq = Own::Matching(|s: &str| s.ends_with(".DLQ"));
                denials.denied(start, &dlq).await
            }
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

    /// A request waiting for its subject's denial is woken by that denial
    /// only: a flood of others' leaves it parked, and its watch is given up
    /// once it resolves.
    #[tokio::test]
    async fn a_request_is_woken_by_its_own_subjects_denial_only() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let denials = Denials::default();
        let said = |subject: &str| format!("Permissions Violation for Publish to \"{subject}\"");
        let start = denials.mark();
        let polls = Arc::new(AtomicUsize::new(0));
        let waiting = tokio::spawn({
            let (denials, polls) = (denials.clone(), polls.clone());
            async move {
                let own = Own::<fn(&str) -> bool>::Subject("$KV.results.a");
                let denied = denials.denied(start, &own);
                tokio::pin!(denied);
                std::future::poll_fn(|cx| {
                    polls.fetch_add(1, Ordering::SeqCst);
                    denied.as_mut().poll(cx)
                })
                .await
            }
        });
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let parked = polls.load(Ordering::SeqCst);
        assert_eq!(parked, 1, "polled once, then parked");
        assert_eq!(denials.lock().watched.len(), 1);
        for i in 0..100 {
            denials.note(&said(&format!("$KV.results.other-{i}")));
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(polls.load(Ordering::SeqCst), parked, "others' denials");
        denials.note(&said("$KV.results.a"));
        let subject = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("told")
            .unwrap();
        assert_eq!(subject, "$KV.results.a");
        assert!(denials.lock().watched.is_empty(), "its watch given up");
    }

    /// A denied ack is kept apart, with when it came; others are not acks.
    #[test]
    fn a_denied_ack_is_kept_with_when_it_came() {
        let denials = Denials::default();
        let said = |subject: &str| format!("Permissions Violation for Publish to \"{subject}\"");
        denials.note(&said("$KV.results.a"));
        assert_eq!(denials.ack_denied_within(Duration::from_secs(60)), None);
        let start = denials.mark();
        let ack = "$JS.ACK.CORTEX_TASKS.cortex-pool-low.1.2.2.1795750553964000000.0";
        denials.note(&said(ack));
        let noted = Instant::now();
        assert_eq!(
            denials
                .ack_denied_within(Duration::from_secs(60))
                .as_deref(),
            Some(ack)
        );
        let later = noted + Duration::from_secs(2);
        assert_eq!(
            denials.ack_denied_at(later, Duration::from_secs(1)),
            None,
            "too old"
        );
        let any = Own::Matching(|_: &str| true);
        assert_eq!(
            denials.matching(start, &any),
            None,
            "kept apart from the denials requests wait for"
        );
    }

    /// A request's own subject is found however many denials came after it
    /// (a settle call meeting thousands at once), until it is no longer
    /// among the latest [`KEPT`]; a denial of it before the request's mark
    /// is not its.
    #[test]
    fn a_subject_is_found_among_a_flood_of_denials_until_it_is_no_longer_kept() {
        let denials = Denials::default();
        let said = |subject: &str| format!("Permissions Violation for Publish to \"{subject}\"");
        denials.note(&said("$KV.results.a"));
        let start = denials.mark();
        denials.note(&said("$KV.results.a"));
        for i in 0..KEPT - 1 {
            denials.note(&said(&format!("$KV.results.other-{i}")));
        }
        let own = |s| Own::<fn(&str) -> bool>::Subject(s);
        assert_eq!(
            denials.matching(start, &own("$KV.results.a")).as_deref(),
            Some("$KV.results.a"),
            "the latest of its denials, after the mark, is kept"
        );
        assert_eq!(denials.matching(start, &own("$KV.results.b")), None);
        denials.note(&said("$KV.results.more"));
        assert_eq!(
            denials.matching(start, &own("$KV.results.a")),
            None,
            "pushed out by newer ones"
        );
        assert_eq!(
            denials.matching(start, &own("$KV.results.more")).as_deref(),
            Some("$KV.results.more")
        );
    }
}
