//! The store's keys: `store` (its file), `durability`, `result_ttl`, `store_max_mb`,
//! `store_memory_mb`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How durable an accepted task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Committed and synced to the device before `submit` is answered.
    Fsync,
    /// Committed (survives a crash of the daemon, not a power cut).
    Relaxed,
    /// Memory only: lost when the daemon stops.
    Memory,
}

impl Durability {
    /// The key's value for this mode.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Fsync => "fsync",
            Self::Relaxed => "relaxed",
            Self::Memory => "memory",
        }
    }
}

/// The validated store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreSettings {
    /// The SQLite file. Default `<runtime_dir>/store.db`.
    pub(crate) path: PathBuf,
    /// Default `fsync`.
    pub(crate) durability: Durability,
    /// How long settled tasks are kept (and their ids remembered). Default 24 h.
    pub(crate) result_ttl: Duration,
    /// Prune the oldest settled tasks while the store is larger. Default: no bound.
    pub(crate) max_bytes: Option<u64>,
    /// The most memory the records of tasks not yet written to their rows
    /// hold; past it, the waiting tasks claimed last are written out.
    /// Default [`store_sqlite::DEFAULT_MEMORY_BYTES`].
    pub(crate) memory_bytes: usize,
}

/// Parses `30`, `"30s"`, `"15m"`, `"24h"`, `"7d"` (a bare number is seconds).
fn ttl(value: &toml::Value) -> Result<Duration, String> {
    let secs = match value {
        toml::Value::Integer(n) if *n > 0 => *n as u64,
        toml::Value::String(text) => {
            let text = text.trim();
            let (num, unit) = text.split_at(
                text.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len()),
            );
            let n: u64 = num
                .parse()
                .map_err(|_| format!("{text:?} is not a duration like 3600, \"90m\" or \"24h\""))?;
            let scale = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
            };
            n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(|| {
                format!(
                    "{text:?} must be greater than zero and at most {} s",
                    u64::MAX
                )
            })?
        }
        other => return Err(format!("{other} is not a positive duration")),
    };
    Ok(Duration::from_secs(secs.min(100 * 365 * 86_400)))
}

impl StoreSettings {
    /// Applies the defaults and checks the values; the error names its key.
    pub(crate) fn resolve(
        runtime_dir: &Path,
        path: Option<PathBuf>,
        durability: Option<&str>,
        result_ttl: Option<&toml::Value>,
        store_max_mb: Option<u64>,
        store_memory_mb: Option<u64>,
    ) -> Result<Self, (&'static str, String)> {
        let durability = match durability.unwrap_or("fsync") {
            "fsync" => Durability::Fsync,
            "relaxed" => Durability::Relaxed,
            "memory" => Durability::Memory,
            other => {
                return Err((
                    "durability",
                    format!("unknown mode {other:?}: expected fsync, relaxed or memory"),
                ))
            }
        };
        let result_ttl = match result_ttl {
            Some(v) => ttl(v).map_err(|m| ("result_ttl", m))?,
            None => Duration::from_secs(24 * 3600),
        };
        let max_bytes = match store_max_mb {
            Some(0) => return Err(("store_max_mb", "must be at least 1".to_owned())),
            Some(mb) => Some(mb.saturating_mul(1024 * 1024)),
            None => None,
        };
        let memory_bytes = match store_memory_mb {
            Some(0) => return Err(("store_memory_mb", "must be at least 1".to_owned())),
            Some(mb) => usize::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX),
            None => store_sqlite::DEFAULT_MEMORY_BYTES,
        };
        Ok(Self {
            path: path.unwrap_or_else(|| runtime_dir.join("store.db")),
            durability,
            result_ttl,
            max_bytes,
            memory_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals_name_the_key() {
        let d = StoreSettings::resolve(Path::new("/r"), None, None, None, None, None).unwrap();
        assert_eq!(d.path, Path::new("/r/store.db"));
        assert_eq!(d.durability, Durability::Fsync);
        assert_eq!(d.result_ttl, Duration::from_secs(86_400));
        let ttl_of = |v: toml::Value| {
            StoreSettings::resolve(Path::new("/r"), None, None, Some(&v), None, None)
                .map(|s| s.result_ttl)
        };
        assert_eq!(ttl_of("90m".into()).unwrap(), Duration::from_secs(5400));
        assert_eq!(
            ttl_of(toml::Value::Integer(30)).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(ttl_of("2x".into()).unwrap_err().0, "result_ttl");
        assert_eq!(ttl_of(toml::Value::Integer(0)).unwrap_err().0, "result_ttl");
        let bad = StoreSettings::resolve(Path::new("/r"), None, Some("disk"), None, None, None);
        assert_eq!(bad.unwrap_err().0, "durability");
        let bad = StoreSettings::resolve(Path::new("/r"), None, None, None, Some(0), None);
        assert_eq!(bad.unwrap_err().0, "store_max_mb");
        assert_eq!(d.memory_bytes, store_sqlite::DEFAULT_MEMORY_BYTES);
        let memory_of = |mb| {
            StoreSettings::resolve(Path::new("/r"), None, None, None, None, Some(mb))
                .map(|s| s.memory_bytes)
        };
        assert_eq!(memory_of(256).unwrap(), 256 << 20);
        assert_eq!(memory_of(0).unwrap_err().0, "store_memory_mb");
    }
}
