//! Fixture workers and the transport conformance suite of cortex-pool.
//!
//! [`conformance`] holds checks generic over [`Transport`](pool_core::Transport);
//! [`conformance_suite!`] turns them into one `#[tokio::test]` each, so every
//! transport runs the very same suite (`tests/conformance_*.rs`). The checks drive
//! the fixture worker `src/bin/conformance-worker.rs`, whose path only integration
//! tests of this package can name (`env!("CARGO_BIN_EXE_conformance-worker")`).
//!
//! # Examples
//! ```
//! use tests_integration::conformance::TestResult;
//! use tests_integration::Subject;
//! use transport_ipc::StdioTransport;
//!
//! fn subject() -> TestResult<Subject<StdioTransport>> {
//!     Ok(Subject::new(StdioTransport::new(), "/path/to/conformance-worker"))
//! }
//! assert!(subject()?.leftovers().is_none());
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod conformance;
mod conn;
pub mod fds;

pub use conn::{Conn, Subject};

/// Defines one `#[tokio::test]` per conformance check, each under a watchdog.
///
/// `$subject` names a function `fn() -> TestResult<Subject<T>>` that builds a fresh
/// [`Subject`] (transport, fixture worker, optional directory to watch for leftovers).
/// The leak check runs alone (an exclusive lock, taken before the subject is built);
/// the others share the lock and run in parallel.
#[macro_export]
macro_rules! conformance_suite {
    ($subject:path) => {
        $crate::conformance_suite!(@shared $subject;
            handshake,
            round_trips,
            oversized_frames_are_rejected,
            garbage_is_malformed,
            death_mid_frame_is_truncated,
            exit_surfaces_as_eof,
            exit_at_start_never_hangs,
            missing_program_is_a_spawn_error,
            slow_reader_backpressure,
            many_workers,
        );
        #[tokio::test]
        async fn no_leaks() -> $crate::conformance::TestResult {
            let _alone = $crate::conformance::exclusive().await;
            let subject = $subject()?;
            $crate::conformance::watchdog("no_leaks", $crate::conformance::no_leaks(&subject)).await
        }
    };
    (@shared $subject:path; $($check:ident,)*) => {
        $(
            #[tokio::test]
            async fn $check() -> $crate::conformance::TestResult {
                let _shared = $crate::conformance::shared().await;
                let subject = $subject()?;
                $crate::conformance::watchdog(
                    stringify!($check),
                    $crate::conformance::$check(&subject),
                )
                .await
            }
        )*
    };
}
