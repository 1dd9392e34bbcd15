//! The daemon's configuration: a TOML file, then environment variables (the
//! original's names and `CORTEX_POOL_<KEY>` for every key), then `--set KEY=VALUE`
//! flags, each overriding the one before. The pool's defaults come from
//! [`PoolConfig::default`], the daemon's from [`Settings::resolve`]; every value is
//! validated at start with a message that names its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pool_core::{BalancePolicy, PoolConfig, RetryPolicy, WorkerCommand};
use serde::Deserialize;

use super::paths::{self, Paths};

/// Every key a file, `CORTEX_POOL_<KEY>` or `--set` may give.
pub(crate) const KEYS: &[&str] = &[
    "pool_size",
    "min_workers",
    "max_workers",
    "worker_concurrency",
    "prefetch",
    "max_queue_len",
    "max_retries",
    "retry_backoff_ms",
    "task_timeout_ms",
    "dlq_capacity",
    "heartbeat_interval_ms",
    "suspect_after_ms",
    "zombie_after_ms",
    "start_timeout_ms",
    "shutdown_timeout_ms",
    "kill_grace_ms",
    "max_tasks_per_worker",
    "max_rss_mb",
    "kill_rss_mb",
    "policy",
    "auto_restart",
    "transport",
    "worker",
    "runtime_dir",
    "socket",
    "pid_file",
    "log_file",
    "fifo_dir",
    "allowed_uids",
    "max_request_bytes",
    "max_connections",
    "metrics_addr",
    "store",
    "durability",
    "result_ttl",
    "store_max_mb",
    "queue",
    "queue_stream",
    "queue_subject_prefix",
    "queue_credentials",
    "queue_ack_wait_ms",
    "queue_tls_ca",
    "queue_tls_cert",
    "queue_tls_key",
];

/// The original daemon's environment variables (SPEC §1.8) and their keys.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("POOL_SIZE", "pool_size"),
    ("MIN_WORKERS", "min_workers"),
    ("MAX_WORKERS", "max_workers"),
    ("HEARTBEAT_INTERVAL", "heartbeat_interval_ms"),
    ("TASK_TIMEOUT", "task_timeout_ms"),
    ("LOAD_BALANCING", "policy"),
    ("AUTO_RESTART", "auto_restart"),
    ("FIFO_DIR", "fifo_dir"),
    ("PID_FILE", "pid_file"),
];

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
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where the configuration comes from: a file and `--set` pairs (the environment
/// is read by [`Sources::load`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// The TOML file.
    pub(crate) file: Option<PathBuf>,
    /// `KEY=VALUE` overrides from the command line.
    pub(crate) overrides: Vec<String>,
}

/// Raw settings, every one optional; absent ones take their defaults.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    pool_size: Option<usize>,
    min_workers: Option<usize>,
    max_workers: Option<usize>,
    worker_concurrency: Option<u32>,
    prefetch: Option<u32>,
    max_queue_len: Option<usize>,
    max_retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    task_timeout_ms: Option<u64>,
    dlq_capacity: Option<usize>,
    heartbeat_interval_ms: Option<u64>,
    suspect_after_ms: Option<u64>,
    zombie_after_ms: Option<u64>,
    start_timeout_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    kill_grace_ms: Option<u64>,
    max_tasks_per_worker: Option<u64>,
    max_rss_mb: Option<u64>,
    kill_rss_mb: Option<u64>,
    policy: Option<String>,
    auto_restart: Option<bool>,
    transport: Option<String>,
    worker: Option<Vec<String>>,
    runtime_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    log_file: Option<PathBuf>,
    fifo_dir: Option<PathBuf>,
    allowed_uids: Option<Vec<u32>>,
    max_request_bytes: Option<usize>,
    max_connections: Option<usize>,
    metrics_addr: Option<String>,
    store: Option<PathBuf>,
    durability: Option<String>,
    result_ttl: Option<toml::Value>,
    store_max_mb: Option<u64>,
    queue: Option<String>,
    queue_stream: Option<String>,
    queue_subject_prefix: Option<String>,
    queue_credentials: Option<PathBuf>,
    queue_ack_wait_ms: Option<u64>,
    queue_tls_ca: Option<PathBuf>,
    queue_tls_cert: Option<PathBuf>,
    queue_tls_key: Option<PathBuf>,
}

/// Which transport the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    /// stdin/stdout pipes.
    Stdio,
    /// A pair of named FIFOs per worker.
    Fifo,
}

/// The daemon's validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The pool's configuration.
    pub(crate) pool: PoolConfig,
    /// Balance policy name.
    pub(crate) policy: String,
    /// The worker transport.
    pub(crate) transport: TransportKind,
    /// The worker program and its arguments.
    pub(crate) worker: WorkerCommand,
    /// File locations.
    pub(crate) paths: Paths,
    /// User ids allowed on the control socket. Default: the daemon's own.
    pub(crate) allowed_uids: Vec<u32>,
    /// Largest control request, in bytes. Default 1 MiB.
    pub(crate) max_request_bytes: usize,
    /// Control connections served at once. Default 64.
    pub(crate) max_connections: usize,
    /// Loopback address of the HTTP `/metrics` and `/healthz` endpoint. Default off.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// The task store: where, how durable, how long results are kept.
    pub(crate) store: super::durable::StoreSettings,
    /// A NATS JetStream queue instead of the local store (`queue = "nats://…"`).
    pub(crate) queue: Option<super::queue::QueueSettings>,
}

impl Sources {
    /// Reads the file, the environment and the overrides into raw settings.
    ///
    /// # Errors
    /// An unreadable or malformed file, a malformed override, or a value of the
    /// wrong type; the message names the key.
    pub(crate) fn load(&self) -> Result<Raw, SettingsError> {
        self.load_with(|name| std::env::var(name).ok())
    }

    /// [`load`](Self::load) with an injectable environment (for tests).
    pub(crate) fn load_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Raw, SettingsError> {
        let mut table = match &self.file {
            Some(path) => read_file(path)?,
            None => toml::Table::new(),
        };
        for (var, key) in LEGACY_ENV {
            if let Some(value) = env(var) {
                table.insert((*key).to_owned(), env_value(key, &value));
            }
        }
        if let Some(dir) = env("LOG_DIR") {
            let log = Path::new(&dir).join("worker-pool.log");
            table.insert(
                "log_file".to_owned(),
                toml::Value::String(log.to_string_lossy().into_owned()),
            );
        }
        for key in KEYS {
            let var = format!("CORTEX_POOL_{}", key.to_ascii_uppercase());
            if let Some(value) = env(&var) {
                table.insert((*key).to_owned(), env_value(key, &value));
            }
        }
        for pair in &self.overrides {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| SettingsError::new(pair.clone(), "--set takes KEY=VALUE"))?;
            let key = key.trim();
            if !KEYS.contains(&key) {
                return Err(SettingsError::new(key, "unknown key"));
            }
            table.insert(key.to_owned(), env_value(key, value));
        }
        from_table(table)
    }
}

fn read_file(path: &Path) -> Result<toml::Table, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SettingsError::new("config", format!("cannot read {}: {e}", path.display()))
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| SettingsError::new("config", format!("{}: {e}", path.display())))
}

/// A value from the environment or `--set`: TOML when it parses as TOML (numbers,
/// booleans, arrays, quoted strings); a bare string otherwise. `worker` may also be
/// a plain command line split on whitespace.
fn env_value(key: &str, text: &str) -> toml::Value {
    let parsed = format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(value) => value,
        None if key == "worker" => toml::Value::Array(
            text.split_whitespace()
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        None => toml::Value::String(text.to_owned()),
    }
}

fn from_table(table: toml::Table) -> Result<Raw, SettingsError> {
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(SettingsError::new(key.clone(), "unknown key"));
        }
    }
    Raw::deserialize(table).map_err(|e| {
        let message = e.to_string();
        let key = KEYS
            .iter()
            .find(|k| message.contains(&format!("`{k}`")))
            .map_or("config", |k| k);
        SettingsError::new(key, message.trim().to_owned())
    })
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Raw {
    /// Applies defaults and validates every value.
    ///
    /// # Errors
    /// The first value that does not make sense, naming its key.
    pub(crate) fn resolve(self) -> Result<Settings, SettingsError> {
        let d = PoolConfig::default();
        let positive_ms = |key: &str, v: Option<u64>, default: Duration| match v {
            Some(0) => Err(SettingsError::new(key, "must be greater than zero")),
            Some(v) => Ok(ms(v)),
            None => Ok(default),
        };
        let heartbeat_interval = positive_ms(
            "heartbeat_interval_ms",
            self.heartbeat_interval_ms,
            d.heartbeat_interval,
        )?;
        // A faster heartbeat scales the silence limits with it unless they are given.
        let suspect_default = if self.heartbeat_interval_ms.is_some() {
            heartbeat_interval * 3
        } else {
            d.suspect_after
        };
        let suspect_after =
            positive_ms("suspect_after_ms", self.suspect_after_ms, suspect_default)?;
        let zombie_after = positive_ms(
            "zombie_after_ms",
            self.zombie_after_ms,
            if self.suspect_after_ms.is_some() || self.heartbeat_interval_ms.is_some() {
                suspect_after * 2
            } else {
                d.zombie_after
            },
        )?;
        let retry = match (self.max_retries, self.retry_backoff_ms) {
            (None, None) => d.retry,
            (retries, backoff) => {
                let base = backoff.map_or(Duration::from_secs(1), ms);
                RetryPolicy::new(
                    retries.unwrap_or(d.retry.max_retries()),
                    base,
                    base.max(Duration::from_secs(30)),
                    false,
                )
                .map_err(|e| SettingsError::new("retry_backoff_ms", e.to_string()))?
            }
        };
        let pool = PoolConfig {
            pool_size: self.pool_size.unwrap_or(d.pool_size),
            min_workers: self.min_workers.unwrap_or(d.min_workers),
            max_workers: self.max_workers.unwrap_or(d.max_workers),
            worker_concurrency: self.worker_concurrency.unwrap_or(d.worker_concurrency),
            prefetch: self.prefetch.unwrap_or(d.prefetch),
            max_queue_len: self.max_queue_len.unwrap_or(d.max_queue_len),
            retry,
            task_timeout: positive_ms("task_timeout_ms", self.task_timeout_ms, d.task_timeout)?,
            dlq_capacity: self.dlq_capacity.unwrap_or(d.dlq_capacity),
            heartbeat_interval,
            suspect_after,
            zombie_after,
            start_timeout: positive_ms("start_timeout_ms", self.start_timeout_ms, d.start_timeout)?,
            shutdown_timeout: self.shutdown_timeout_ms.map_or(d.shutdown_timeout, ms),
            kill_grace: self.kill_grace_ms.map_or(d.kill_grace, ms),
            max_tasks_per_worker: self.max_tasks_per_worker.or(d.max_tasks_per_worker),
            max_rss_bytes: self
                .max_rss_mb
                .map(|mb| mb * 1024 * 1024)
                .or(d.max_rss_bytes),
            kill_rss_bytes: self
                .kill_rss_mb
                .map(|mb| mb * 1024 * 1024)
                .or(d.kill_rss_bytes),
            ..d
        };
        pool.validate().map_err(|e| {
            let key = match e.key {
                k @ ("task_timeout" | "heartbeat_interval" | "suspect_after" | "zombie_after"
                | "start_timeout") => format!("{k}_ms"),
                "max_rss_bytes" => "max_rss_mb".to_owned(),
                "kill_rss_bytes" => "kill_rss_mb".to_owned(),
                k => k.to_owned(),
            };
            SettingsError::new(key, e.message)
        })?;
        let policy = self.policy.unwrap_or_else(|| "least-loaded".to_owned());
        policy_balance::by_name(&policy)
            .map_err(|e| SettingsError::new("policy", e.to_string()))?;
        if self.auto_restart == Some(false) {
            return Err(SettingsError::new(
                "auto_restart",
                "false is not supported: the pool always replaces workers that die",
            ));
        }
        let transport = match self.transport.as_deref().unwrap_or("stdio") {
            "stdio" => TransportKind::Stdio,
            "fifo" => TransportKind::Fifo,
            other => {
                return Err(SettingsError::new(
                    "transport",
                    format!("unknown transport {other:?}: expected stdio or fifo"),
                ))
            }
        };
        let worker = match self.worker {
            Some(cmd) => {
                let (program, args) = cmd
                    .split_first()
                    .ok_or_else(|| SettingsError::new("worker", "needs a program"))?;
                WorkerCommand::new(program).args(args)
            }
            None => {
                let me = std::env::current_exe().map_err(|e| {
                    SettingsError::new("worker", format!("cannot find this program: {e}"))
                })?;
                WorkerCommand::new(me).args(["worker"])
            }
        };
        let dir = self.runtime_dir.unwrap_or_else(paths::default_runtime_dir);
        let paths = Paths::new(
            dir,
            self.socket,
            self.pid_file,
            self.log_file,
            self.fifo_dir,
        );
        let max_request_bytes = self.max_request_bytes.unwrap_or(1024 * 1024);
        if !(64..=64 * 1024 * 1024).contains(&max_request_bytes) {
            return Err(SettingsError::new(
                "max_request_bytes",
                "must be between 64 bytes and 64 MiB",
            ));
        }
        let max_connections = self.max_connections.unwrap_or(64);
        if max_connections == 0 {
            return Err(SettingsError::new("max_connections", "must be at least 1"));
        }
        let metrics_addr = match self.metrics_addr.as_deref() {
            None | Some("" | "off") => None,
            Some(text) => {
                let addr: std::net::SocketAddr = text
                    .parse()
                    .map_err(|e| SettingsError::new("metrics_addr", format!("{text:?}: {e}")))?;
                if !addr.ip().is_loopback() {
                    return Err(SettingsError::new(
                        "metrics_addr",
                        "must be a loopback address (127.0.0.1 or [::1])",
                    ));
                }
                Some(addr)
            }
        };
        let store = super::durable::StoreSettings::resolve(
            &paths.dir,
            self.store,
            self.durability.as_deref(),
            self.result_ttl.as_ref(),
            self.store_max_mb,
        )
        .map_err(|(key, message)| SettingsError::new(key, message))?;
        let queue = super::queue::QueueSettings::resolve(super::queue::RawQueue {
            url: self.queue,
            stream: self.queue_stream,
            subject_prefix: self.queue_subject_prefix,
            credentials: self.queue_credentials,
            ack_wait_ms: self.queue_ack_wait_ms,
            tls_ca: self.queue_tls_ca,
            tls_cert: self.queue_tls_cert,
            tls_key: self.queue_tls_key,
        })
        .map_err(|(key, message)| SettingsError::new(key, message))?;
        Ok(Settings {
            queue,
            store,
            pool,
            policy,
            transport,
            worker,
            paths,
            allowed_uids: self.allowed_uids.unwrap_or_else(|| vec![paths::uid()]),
            max_request_bytes,
            max_connections,
            metrics_addr,
        })
    }
}

impl Settings {
    /// Loads and validates the settings from every source.
    ///
    /// # Errors
    /// As [`Sources::load`] and [`Raw::resolve`].
    pub(crate) fn load(sources: &Sources) -> Result<Self, SettingsError> {
        sources.load()?.resolve()
    }

    /// The balance policy, built fresh.
    pub(crate) fn policy(&self) -> Box<dyn BalancePolicy> {
        policy_balance::by_name(&self.policy)
            .unwrap_or_else(|_| Box::new(policy_balance::LeastLoaded::new()))
    }
}

/// Shared so the server can read the current settings after a reload.
pub(crate) type SharedSettings = Arc<std::sync::RwLock<Settings>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_come_from_the_pool_config() {
        let s = Sources::default()
            .load_with(env(&[]))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(s.pool.pool_size, PoolConfig::default().pool_size);
        assert_eq!(s.transport, TransportKind::Stdio);
        assert_eq!(s.allowed_uids, vec![paths::uid()]);
        assert!(s.metrics_addr.is_none());
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = std::env::temp_dir().join(format!("cp-cfg-{}.toml", std::process::id()));
        std::fs::write(&file, "pool_size = 3\nmin_workers = 1\npolicy = \"p2c\"\n").unwrap();
        let sources = Sources {
            file: Some(file.clone()),
            overrides: vec!["max_workers=7".into()],
        };
        let raw = sources
            .load_with(env(&[
                ("POOL_SIZE", "4"),
                ("CORTEX_POOL_MAX_WORKERS", "9"),
                ("LOAD_BALANCING", "round-robin"),
                ("CORTEX_POOL_WORKER", "/bin/prog --flag"),
            ]))
            .unwrap();
        let s = raw.resolve().unwrap();
        assert_eq!(s.pool.pool_size, 4);
        assert_eq!(s.pool.max_workers, 7);
        assert_eq!(s.policy, "round-robin");
        assert_eq!(s.worker.args, vec![std::ffi::OsString::from("--flag")]);
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |pairs: &[(&str, &str)]| {
            Sources::default()
                .load_with(env(pairs))
                .and_then(Raw::resolve)
                .unwrap_err()
                .key
        };
        assert_eq!(bad(&[("CORTEX_POOL_POOL_SIZE", "many")]), "pool_size");
        assert_eq!(bad(&[("TASK_TIMEOUT", "0")]), "task_timeout_ms");
        assert_eq!(bad(&[("MIN_WORKERS", "90")]), "min_workers");
        assert_eq!(
            bad(&[("CORTEX_POOL_METRICS_ADDR", "0.0.0.0:9")]),
            "metrics_addr"
        );
        assert_eq!(
            bad(&[("CORTEX_POOL_TRANSPORT", "carrier-pigeon")]),
            "transport"
        );
        assert_eq!(bad(&[("LOAD_BALANCING", "random")]), "policy");
        let overrides = Sources {
            file: None,
            overrides: vec!["nonsense=1".into()],
        };
        assert_eq!(overrides.load_with(env(&[])).unwrap_err().key, "nonsense");
    }
}
