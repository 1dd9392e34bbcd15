//! The daemon's durable task life: the task source (memory or an SQLite store),
//! the feeder that runs claimed tasks on the pool and settles them, waiting by
//! id, and retention.
//!
//! - `api` — the control requests about tasks (`submit`, `result`, `wait`, …).
//! - `settings` — the `store`, `durability`, `result_ttl`, `store_max_mb`,
//!   `store_memory_mb` keys.
//! - `ids` — sortable generated task ids.
//! - `parse` — a submitted line → a [`task_source::NewTask`].
//! - `answers` — the per-line answers of `submit` (also `submit --queue`'s).
//! - `feeder` — claim → pool (one attempt each) → settle or retry or DLQ.
//! - `pace` — how many tasks the feeder keeps claimed.
//! - `waiters` — who waits for which id.
//! - `lines` — the JSON lines of look-ups.
//! - `listing`, `pages` — `tasks` and `dlq list`, whole or in pages that each
//!   fit a reply.
//! - `prune` — the background retention.

pub(crate) mod answers;
pub(crate) mod api;
pub(crate) mod feeder;
pub(crate) mod ids;
pub(crate) mod lines;
pub(crate) mod listing;
pub(crate) mod pace;
pub(crate) mod pages;
pub(crate) mod parse;
pub(crate) mod prune;
mod settings;
pub(crate) mod unsaved;
pub(crate) mod waiters;

use std::sync::Arc;

pub(crate) use settings::{Durability, StoreSettings};
use task_source::{MemorySource, TaskSource};

/// Opens the task source the settings name.
///
/// # Errors
/// The store's refusal (unusable file, corrupt, newer schema), as text.
pub(crate) fn open(settings: &StoreSettings) -> Result<Arc<dyn TaskSource>, String> {
    let durability = match settings.durability {
        Durability::Memory => return Ok(Arc::new(MemorySource::new())),
        Durability::Fsync => store_sqlite::Durability::Fsync,
        Durability::Relaxed => store_sqlite::Durability::Relaxed,
    };
    // A missing directory is made (0700); an existing one is left as it is
    // (the store's may be a shared one the user named).
    super::paths::ensure_parent(&settings.path).map_err(|e| e.to_string())?;
    store_sqlite::SqliteSource::open_with_memory(&settings.path, durability, settings.memory_bytes)
        .map(|s| Arc::new(s) as Arc<dyn TaskSource>)
        .map_err(|e| e.to_string())
}
