//! How long the attempts bucket keeps a count: never less than the tasks'
//! stream keeps the count's message, so a count cannot expire while its
//! message may still be delivered. A stream that keeps its messages for
//! ever gets a bucket that keeps counts for ever; counts whose messages are
//! gone are removed instead (`forget` as a message is answered for good,
//! the count sweep for the rest).
//!
//! A bucket that exists already keeps the max age it was made with: one an
//! earlier version made (30 days, or `result_ttl` before that) is raised,
//! on its stream, to what the tasks' stream needs, never lowered.

use std::time::Duration;

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::Context;

use crate::denials::{Denials, Own, Refused};

/// How long raising the bucket's max age is waited for (credentials that
/// may not update its stream get no answer, only a denial, which ends the
/// wait at once).
const RAISE_WAIT: Duration = Duration::from_secs(2);

/// The max age a bucket that keeps counts for `kept` (zero: for ever) must
/// be raised to, to keep them for `wanted`; `None` when it keeps them long
/// enough already.
pub(crate) fn raised(kept: Duration, wanted: Duration) -> Option<Duration> {
    let enough = kept.is_zero() || (!wanted.is_zero() && kept >= wanted);
    (!enough).then_some(wanted)
}

/// Raises the max age of `store`, the attempts bucket `name`, to `wanted`
/// when it keeps counts for less ([`raised`]); says so, or, when it cannot
/// (its stream may not be updated with these credentials: a denial noted
/// in `denials`), what to run.
pub(crate) async fn raise(
    js: &Context,
    denials: &Denials,
    name: &str,
    store: &Store,
    wanted: Duration,
) {
    let mut config = store.stream.cached_info().config.clone();
    let kept = config.max_age;
    let Some(max_age) = raised(kept, wanted) else {
        return;
    };
    config.max_age = max_age;
    let stream = config.name.clone();
    let api = format!("$JS.API.STREAM.UPDATE.{stream}");
    let own = Own::<fn(&str) -> bool>::Subject(&api);
    let update = denials.race(denials.mark(), own, js.update_stream(config));
    let why = match tokio::time::timeout(RAISE_WAIT, update).await {
        Ok(Ok(_)) => {
            tracing::info!(
                bucket = %name, kept_s = kept.as_secs(), now_s = max_age.as_secs(),
                "raised the attempts bucket's max age to the tasks' stream's (0: for ever), \
                 so that no count expires while its message may be delivered"
            );
            return;
        }
        Ok(Err(Refused::Denied(subject))) => format!("denied: {subject}"),
        Ok(Err(Refused::Failed(e))) => e.to_string(),
        Err(_) => format!("no answer within {RAISE_WAIT:?}"),
    };
    let max_age_s = max_age.as_secs();
    tracing::warn!(
        error = %why, bucket = %name, kept_s = kept.as_secs(), wanted_s = max_age.as_secs(),
        "the attempts bucket keeps counts for less than a task may live, and its max age \
         cannot be raised (the credentials need $JS.API.STREAM.UPDATE.{stream}): a count \
         that expires counts its given-back deliveries as attempts (`nats stream edit \
         {stream} --max-age={max_age_s}s` raises it; 0s: for ever)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_bucket_that_keeps_counts_for_less_than_a_message_lives_is_raised() {
        assert_eq!(raised(30 * DAY, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(raised(DAY, 3 * DAY), Some(3 * DAY));
        assert_eq!(raised(Duration::ZERO, Duration::ZERO), None);
        assert_eq!(raised(Duration::ZERO, 3 * DAY), None, "for ever is enough");
        assert_eq!(raised(3 * DAY, 3 * DAY), None);
        assert_eq!(raised(30 * DAY, 3 * DAY), None, "never lowered");
    }
}
