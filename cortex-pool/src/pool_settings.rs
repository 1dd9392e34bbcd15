//! The one loader of the pool's configuration, shared by `run` and the daemon: a
//! table of keys (from a file, the environment, `--set` or `run`'s flags) becomes a
//! [`PoolConfig`] through [`PoolSettings`], and a transport is chosen by name.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use pool_core::{PoolConfig, PoolSettings, Transport};
use serde::Deserialize;

/// A configuration value that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
#[non_exhaustive]
pub(crate) struct SettingsError {
    /// The key (or source) at fault.
    pub(crate) key: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl SettingsError {
    /// An error about `key`.
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl From<pool_core::ConfigError> for SettingsError {
    fn from(e: pool_core::ConfigError) -> Self {
        Self::new(e.key, e.message)
    }
}

/// A deserializer's message on one line (`toml`'s puts the key on a second).
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes the pool's keys ([`PoolSettings::KEYS`]) from `table` and resolves them
/// into a checked [`PoolConfig`]; the other keys stay for the caller.
///
/// # Errors
/// A value of the wrong type or one that does not make sense; the error names the
/// key.
pub(crate) fn take_pool_config(table: &mut toml::Table) -> Result<PoolConfig, SettingsError> {
    let mut pool = toml::Table::new();
    for key in PoolSettings::KEYS {
        if let Some(value) = table.remove(*key) {
            // One key at a time first, so a type error names its key.
            let one = toml::Table::from_iter([((*key).to_owned(), value.clone())]);
            PoolSettings::deserialize(one)
                .map_err(|e| SettingsError::new(*key, one_line(&e.to_string())))?;
            pool.insert((*key).to_owned(), value);
        }
    }
    let settings = PoolSettings::deserialize(pool)
        .map_err(|e| SettingsError::new("config", one_line(&e.to_string())))?;
    Ok(settings.resolve()?)
}

/// Which transport the workers use (`transport = "stdio" | "fifo"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TransportKind {
    /// stdin/stdout pipes.
    #[default]
    Stdio,
    /// A pair of named FIFOs per worker.
    Fifo,
}

impl FromStr for TransportKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "stdio" => Ok(Self::Stdio),
            "fifo" => Ok(Self::Fifo),
            other => Err(format!(
                "unknown transport {other:?}: expected stdio or fifo"
            )),
        }
    }
}

impl TransportKind {
    /// Opens the transport. The fifo transport makes its private directory under
    /// `fifo_dir` (created 0700 with its parents when missing; a symlink or another
    /// user's directory is refused), or under its default base, and gives a
    /// worker `start_timeout` (the pool's) to open its FIFOs, as long as a
    /// worker over pipes has to say `ready`.
    ///
    /// # Errors
    /// When the FIFO directory cannot be made or used; the message names the path.
    pub(crate) fn open(
        self,
        fifo_dir: Option<&Path>,
        start_timeout: std::time::Duration,
    ) -> Result<Arc<dyn Transport>, String> {
        match self {
            Self::Stdio => Ok(Arc::new(transport_ipc::StdioTransport::new())),
            Self::Fifo => {
                let fifo = match fifo_dir {
                    Some(dir) => transport_fifo::FifoTransport::in_dir(dir),
                    None => transport_fifo::FifoTransport::new(),
                }
                .map_err(|e| format!("cannot set up the fifo transport: {e}"))?;
                Ok(Arc::new(fifo.with_open_timeout(start_timeout)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("valid TOML")
    }

    #[test]
    fn pool_keys_are_taken_and_the_rest_left() {
        let mut t = table("pool_size = 4\nsocket = \"/s\"\ntask_timeout_ms = 50");
        let config = take_pool_config(&mut t).unwrap();
        assert_eq!((config.pool_size, config.min_workers), (4, 4));
        assert_eq!(config.task_timeout, std::time::Duration::from_millis(50));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["socket"]);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |text: &str| take_pool_config(&mut table(text)).unwrap_err();
        assert_eq!(bad("pool_size = \"many\"").key, "pool_size");
        assert_eq!(
            bad("heartbeat_interval_ms = -1").key,
            "heartbeat_interval_ms"
        );
        let e = bad("pool_size = 4\nmin_workers = 5");
        assert_eq!(e.key, "pool_size");
        assert!(
            e.message.contains("min_workers..=max_workers (5..=50)"),
            "{e}"
        );
    }

    #[test]
    fn transports_by_name() {
        assert_eq!("fifo".parse(), Ok(TransportKind::Fifo));
        assert_eq!("stdio".parse(), Ok(TransportKind::Stdio));
        let e = "pigeon".parse::<TransportKind>().unwrap_err();
        assert!(e.contains("expected stdio or fifo"), "{e}");
    }
}
