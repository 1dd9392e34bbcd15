//! The subjects the server denied this connection ([`Denials`]), as its
//! `-ERR 'Permissions Violation for Publish to "SUBJECT"'` said. A denied
//! JetStream request gets no answer, only that error on the side: without
//! it a missing permission reads as a request that timed out.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Denials kept, at most (the latest ones).
const KEPT: usize = 64;

/// The subjects the server denied, the latest last; shared by the
/// connection's event callback and whoever waits on the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Denials {
    subjects: Arc<Mutex<Vec<String>>>,
    noted: Arc<Notify>,
}

impl Denials {
    /// Notes the subject a server error names, when it is a permissions
    /// violation.
    pub(crate) fn note(&self, server_error: &str) {
        let Some(subject) = denied_subject(server_error) else {
            return;
        };
        {
            let mut subjects = self.lock();
            if subjects.len() == KEPT {
                subjects.remove(0);
            }
            subjects.push(subject);
        }
        self.noted.notify_waiters();
    }

    /// The latest denied subject `which` picks.
    pub(crate) fn matching(&self, which: impl Fn(&str) -> bool) -> Option<String> {
        self.lock()
            .iter()
            .rev()
            .find(|subject| which(subject))
            .cloned()
    }

    /// Resolves with a denied subject `which` picks, noted before or after
    /// the call.
    pub(crate) async fn denied(&self, which: impl Fn(&str) -> bool) -> String {
        loop {
            let noted = self.noted.notified();
            tokio::pin!(noted);
            noted.as_mut().enable();
            if let Some(subject) = self.matching(&which) {
                return subject;
            }
            noted.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        match self.subjects.lock() {
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
        denials.note(r#"Permissions Violation for Publish to "$JS.API.STREAM.INFO.TASKS""#);
        let tasks = |subject: &str| subject.ends_with(".TASKS");
        assert_eq!(
            denials.matching(tasks).as_deref(),
            Some("$JS.API.STREAM.INFO.TASKS")
        );
        assert_eq!(denials.matching(|s: &str| s.ends_with(".DLQ")), None);
        let waiting = tokio::spawn({
            let denials = denials.clone();
            async move { denials.denied(|s: &str| s.ends_with(".DLQ")).await }
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
