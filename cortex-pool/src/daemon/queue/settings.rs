//! The `queue`, `queue_stream`, `queue_subject_prefix`, `queue_credentials`,
//! `queue_ack_wait_ms` and `queue_tls_ca` / `queue_tls_cert` /
//! `queue_tls_key` keys.

use std::path::PathBuf;
use std::time::Duration;

use source_nats::NatsConfig;

/// The validated queue settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueSettings {
    /// Everything the source needs but the pool's size and `result_ttl`.
    pub(crate) config: NatsConfig,
}

/// The raw `queue*` values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RawQueue {
    pub(crate) url: Option<String>,
    pub(crate) stream: Option<String>,
    pub(crate) subject_prefix: Option<String>,
    pub(crate) credentials: Option<PathBuf>,
    pub(crate) ack_wait_ms: Option<u64>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
}

/// A stream name: letters, digits, `-` and `_`.
fn stream_name(key: &'static str, name: String) -> Result<String, (&'static str, String)> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err((key, format!("{name:?}: use letters, digits, '-' and '_'")))
    }
}

/// Checks the URL list: `nats://`, `tls://` (or a bare `HOST:PORT`), comma separated.
fn url(text: &str) -> Result<String, (&'static str, String)> {
    let bad = text.split(',').map(str::trim).find(|u| {
        u.is_empty()
            || u.contains(char::is_whitespace)
            || (u.contains("://") && !u.starts_with("nats://") && !u.starts_with("tls://"))
    });
    match bad {
        Some(u) => Err((
            "queue",
            format!("{u:?} is not a NATS URL like nats://HOST:4222"),
        )),
        None => Ok(text.to_owned()),
    }
}

impl QueueSettings {
    /// `None` without a `queue` key (the daemon uses its local store); the
    /// error names its key.
    pub(crate) fn resolve(raw: RawQueue) -> Result<Option<Self>, (&'static str, String)> {
        let Some(text) = raw.url.filter(|u| !u.trim().is_empty()) else {
            let stray = [
                ("queue_stream", raw.stream.is_some()),
                ("queue_subject_prefix", raw.subject_prefix.is_some()),
                ("queue_credentials", raw.credentials.is_some()),
                ("queue_ack_wait_ms", raw.ack_wait_ms.is_some()),
                ("queue_tls_ca", raw.tls_ca.is_some()),
                ("queue_tls_cert", raw.tls_cert.is_some()),
                ("queue_tls_key", raw.tls_key.is_some()),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                return Err((key, "needs `queue` (the NATS server's URL)".into()));
            }
            return Ok(None);
        };
        let mut config = NatsConfig::new(url(&text)?);
        if let Some(stream) = raw.stream {
            config.stream = stream_name("queue_stream", stream)?;
        }
        if let Some(prefix) = raw.subject_prefix {
            let ok = !prefix.is_empty()
                && !prefix.starts_with('.')
                && !prefix.ends_with('.')
                && !prefix.contains("..")
                && !prefix.contains(['*', '>', ' ']);
            if !ok {
                return Err((
                    "queue_subject_prefix",
                    format!("{prefix:?} is not a subject prefix like cortex.tasks"),
                ));
            }
            config.subject_prefix = prefix;
        }
        if let Some(path) = raw.credentials {
            if !path.is_file() {
                return Err((
                    "queue_credentials",
                    format!("{}: no such file", path.display()),
                ));
            }
            config.credentials = Some(path);
        }
        match raw.ack_wait_ms {
            Some(ms) if ms < 100 => {
                return Err(("queue_ack_wait_ms", "must be at least 100".into()));
            }
            Some(ms) => config.ack_wait = Duration::from_millis(ms),
            None => {}
        }
        if raw.tls_cert.is_some() != raw.tls_key.is_some() {
            return Err((
                "queue_tls_cert",
                "queue_tls_cert and queue_tls_key go together".into(),
            ));
        }
        config.tls_ca = raw.tls_ca;
        config.tls_cert = raw.tls_cert;
        config.tls_key = raw.tls_key;
        Ok(Some(Self { config }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: RawQueue) -> Result<Option<QueueSettings>, &'static str> {
        QueueSettings::resolve(raw).map_err(|(k, _)| k)
    }

    #[test]
    fn no_queue_is_the_local_store_and_bad_values_name_their_key() {
        assert_eq!(resolve(RawQueue::default()), Ok(None));
        let q = resolve(RawQueue {
            url: Some("nats://h:4222".into()),
            ack_wait_ms: Some(5000),
            ..RawQueue::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(q.config.stream, "CORTEX_TASKS");
        assert_eq!(q.config.subject_prefix, "cortex.tasks");
        assert_eq!(q.config.ack_wait, Duration::from_secs(5));
        let with = |f: fn(&mut RawQueue)| {
            let mut raw = RawQueue {
                url: Some("nats://h:4222".into()),
                ..RawQueue::default()
            };
            f(&mut raw);
            resolve(raw)
        };
        assert_eq!(
            with(|r| r.url = Some("http://h".into())).unwrap_err(),
            "queue"
        );
        assert_eq!(
            with(|r| r.stream = Some("a.b".into())).unwrap_err(),
            "queue_stream"
        );
        assert_eq!(
            with(|r| r.subject_prefix = Some("a.>".into())).unwrap_err(),
            "queue_subject_prefix"
        );
        assert_eq!(
            with(|r| r.ack_wait_ms = Some(5)).unwrap_err(),
            "queue_ack_wait_ms"
        );
        assert_eq!(
            with(|r| r.credentials = Some("/nonexistent.creds".into())).unwrap_err(),
            "queue_credentials"
        );
        let stray = resolve(RawQueue {
            stream: Some("S".into()),
            ..RawQueue::default()
        });
        assert_eq!(stray.unwrap_err(), "queue_stream");
        let pem = || Some(std::path::PathBuf::from("/x.pem"));
        let stray_tls = [
            (
                "queue_tls_ca",
                RawQueue {
                    tls_ca: pem(),
                    ..RawQueue::default()
                },
            ),
            (
                "queue_tls_cert",
                RawQueue {
                    tls_cert: pem(),
                    ..RawQueue::default()
                },
            ),
            (
                "queue_tls_key",
                RawQueue {
                    tls_key: pem(),
                    ..RawQueue::default()
                },
            ),
        ];
        for (key, raw) in stray_tls {
            assert_eq!(resolve(raw).unwrap_err(), key, "without `queue`");
        }
    }
}
