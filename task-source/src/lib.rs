//! The daemon's task source: the seam between dispatch and where tasks live.
//!
//! [`TaskSource`] is the small interface the daemon's dispatcher drives: accept
//! tasks, claim ready ones (starting an attempt), settle attempts (ok, failed,
//! dead-lettered, cancelled, or retry after a delay), look tasks up, and manage
//! the dead-letter queue. [`MemorySource`] keeps everything in memory (the
//! daemon's `durability = "memory"`); the `store-sqlite` crate keeps it on disk.
//!
//! ```
//! use task_source::{Admission, MemorySource, NewTask, TaskSource};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let source = MemorySource::new();
//! let task = NewTask {
//!     id: "a".into(),
//!     task_type: "echo".into(),
//!     payload: "1".into(),
//!     priority: 10,
//!     timeout_ms: None,
//! };
//! let admitted = source.accept(vec![task.clone(), task]).await.unwrap();
//! assert_eq!(admitted[0], Admission::Accepted);
//! assert!(matches!(admitted[1], Admission::Known(_)));
//! let claimed = source.claim(10, 0).await.unwrap();
//! assert_eq!(claimed.len(), 1);
//! assert_eq!(claimed[0].attempt, 1);
//! # });
//! ```

mod memory;
mod page;
mod record;
mod source;

pub use memory::MemorySource;
pub use page::{ListFrom, ListOrder, ListPage, Pager};
pub use record::{
    Admission, Claimed, ErrorInfo, Filter, HistoryEntry, NewTask, Outcome, Settlement, SourceError,
    SourceHealth, SourceStats, TaskRecord, TaskState, TaskStatus,
};
pub use source::{Requeue, TaskSource};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
