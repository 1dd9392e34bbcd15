//! The retry calls `async-nats` makes, for the `cortex-pool` workspace.
//!
//! `async-nats`' JetStream consumers retry with the crate `tryhard` 0.5, whose
//! manifest turns on tokio's `test-util` feature. Cargo unifies features, so
//! every binary that links JetStream would read each `tokio::time::Instant`
//! through tokio's mockable test clock and check it on every park of the
//! runtime (measured: about 320 instructions a round trip of the pool). This
//! crate, put in `tryhard`'s place by the workspace's `[patch.crates-io]`,
//! offers exactly the calls `async-nats` makes: [`retry_fn`], then
//! [`RetryFn::retries`], then [`Retries::custom_backoff`] (or `.await` at
//! once, to retry without a pause).
//!
//! ```
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let mut calls = 0;
//! let answer: Result<u32, std::io::Error> = tryhard::retry_fn(|| {
//!     calls += 1;
//!     let this_call = calls;
//!     async move {
//!         if this_call < 3 {
//!             Err(std::io::Error::other("not yet"))
//!         } else {
//!             Ok(this_call)
//!         }
//!     }
//! })
//! .retries(5)
//! .custom_backoff(|attempt, _error: &std::io::Error| Duration::from_millis(u64::from(attempt)))
//! .await;
//! assert_eq!(answer.unwrap(), 3);
//! # });
//! ```

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

/// What a backoff decides after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Try again after this pause.
    Delay(Duration),
    /// Stop: the failed attempt's error is the answer.
    Break,
}

impl From<Duration> for RetryPolicy {
    fn from(pause: Duration) -> Self {
        Self::Delay(pause)
    }
}

/// Starts a retry of the futures `make` returns, one a try.
pub fn retry_fn<F>(make: F) -> RetryFn<F> {
    RetryFn { make }
}

/// A maker of futures, each one try ([`retry_fn`]).
#[derive(Debug)]
pub struct RetryFn<F> {
    make: F,
}

impl<F> RetryFn<F> {
    /// Tries once, then up to `max_retries` more times while tries fail.
    pub fn retries(self, max_retries: u32) -> Retries<F> {
        Retries {
            make: self.make,
            max_retries,
        }
    }
}

/// A retry with its count of retries ([`RetryFn::retries`]). Awaited as it
/// is, it retries without a pause.
#[derive(Debug)]
pub struct Retries<F> {
    make: F,
    max_retries: u32,
}

impl<F> Retries<F> {
    /// Pauses between tries for what `backoff` says, called with the number
    /// of the retry to come (1 for the first) and the error of the try that
    /// failed.
    pub fn custom_backoff<Fut, T, E, B, R>(self, backoff: B) -> impl Future<Output = Result<T, E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        B: FnMut(u32, &E) -> R,
        R: Into<RetryPolicy>,
    {
        run(self.make, self.max_retries, backoff)
    }
}

impl<F, Fut, T, E> IntoFuture for Retries<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    type Output = Result<T, E>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self.make, self.max_retries, |_, _: &E| Duration::ZERO))
    }
}

/// Tries, and retries after each failure while retries are left and
/// `backoff` does not say [`RetryPolicy::Break`].
async fn run<F, Fut, T, E, B, R>(mut make: F, max_retries: u32, mut backoff: B) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    B: FnMut(u32, &E) -> R,
    R: Into<RetryPolicy>,
{
    let mut retry = 0u32;
    loop {
        let error = match make().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if retry == max_retries {
            return Err(error);
        }
        retry += 1;
        match backoff(retry, &error).into() {
            RetryPolicy::Break => return Err(error),
            RetryPolicy::Delay(pause) if pause.is_zero() => {}
            RetryPolicy::Delay(pause) => tokio::time::sleep(pause).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A maker whose tries fail until the `succeed_on`th (1-based), counting them.
    fn failing_until(
        succeed_on: u32,
        tries: &RefCell<u32>,
    ) -> impl FnMut() -> std::future::Ready<Result<u32, String>> + '_ {
        move || {
            *tries.borrow_mut() += 1;
            let now = *tries.borrow();
            std::future::ready(if now >= succeed_on {
                Ok(now)
            } else {
                Err(format!("try {now} failed"))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_after_each_pause_the_backoff_names_until_a_try_succeeds() {
        let tries = RefCell::new(0);
        let mut asked = Vec::new();
        let started = tokio::time::Instant::now();
        let answer = retry_fn(failing_until(4, &tries))
            .retries(10)
            .custom_backoff(|retry, error: &String| {
                asked.push((retry, error.clone()));
                Duration::from_millis(100 * u64::from(retry))
            })
            .await;
        assert_eq!(answer, Ok(4));
        assert_eq!(
            asked,
            vec![
                (1, "try 1 failed".to_owned()),
                (2, "try 2 failed".to_owned()),
                (3, "try 3 failed".to_owned()),
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100 + 200 + 300));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_the_last_error_once_the_retries_are_spent() {
        let tries = RefCell::new(0);
        let answer = retry_fn(failing_until(u32::MAX, &tries))
            .retries(2)
            .custom_backoff(|_, _: &String| Duration::from_secs(1))
            .await;
        assert_eq!(answer, Err("try 3 failed".to_owned()));
        assert_eq!(*tries.borrow(), 3, "one try and two retries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_break_stops_at_once_with_that_error() {
        let tries = RefCell::new(0);
        let answer = retry_fn(failing_until(u32::MAX, &tries))
            .retries(u32::MAX)
            .custom_backoff(|_, _: &String| RetryPolicy::Break)
            .await;
        assert_eq!(answer, Err("try 1 failed".to_owned()));
        assert_eq!(*tries.borrow(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn awaited_without_a_backoff_it_retries_without_a_pause() {
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = tries.clone();
        let started = tokio::time::Instant::now();
        let answer = retry_fn(move || {
            let now = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            async move {
                if now < 3 {
                    Err(now)
                } else {
                    Ok(now)
                }
            }
        })
        .retries(5)
        .await;
        assert_eq!(answer, Ok(3));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
