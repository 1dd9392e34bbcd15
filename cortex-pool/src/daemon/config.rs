//! The daemon's configuration: a TOML file, then environment variables (the
//! original's names and `CORTEX_POOL_<KEY>` for every key), then `--set KEY=VALUE`
//! flags, each overriding the one before. The pool's keys are resolved by the loader
//! `run` shares ([`crate::pool_settings`], [`PoolSettings`]), the daemon's by
//! [`Raw::resolve`]; every value is validated at start with a message that names
//! its key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pool_core::{BalancePolicy, PoolConfig, PoolSettings, WorkerCommand};
use serde::Deserialize;

use super::paths::{self, Paths};
use crate::pool_settings::{one_line, take_pool_config};
pub(crate) use crate::pool_settings::{SettingsError, TransportKind};

/// The daemon's own keys; the pool's are [`PoolSettings::KEYS`]. A file,
/// `CORTEX_POOL_<KEY>` or `--set` may give any of both.
pub(crate) const DAEMON_KEYS: &[&str] = &[
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
    "answer_timeout_ms",
    "metrics_addr",
    "store",
    "durability",
    "result_ttl",
    "store_max_mb",
    "store_memory_mb",
    "queue",
    "queue_stream",
    "queue_subject_prefix",
    "queue_credentials",
    "queue_ack_wait_ms",
    "queue_tls_ca",
    "queue_tls_cert",
    "queue_tls_key",
];

/// Every key: the pool's, then the daemon's.
fn keys() -> impl Iterator<Item = &'static str> {
    PoolSettings::KEYS.iter().chain(DAEMON_KEYS).copied()
}

fn is_key(key: &str) -> bool {
    keys().any(|k| k == key)
}

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

/// The most control connections served at once (`max_connections`): each
/// holds a task and a socket, and the slots are a semaphore's permits.
pub(crate) const MAX_CONNECTIONS: usize = 65_536;

/// Where the configuration comes from: a file and `--set` pairs (the environment
/// is read by [`Sources::load`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    /// The TOML file.
    pub(crate) file: Option<PathBuf>,
    /// `KEY=VALUE` overrides from the command line.
    pub(crate) overrides: Vec<String>,
    /// A client's `--queue URL`: the `queue` key's value, over every other
    /// source (the command acts on that queue), so that the other `queue_*`
    /// keys (credentials, TLS, stream) apply to it.
    pub(crate) queue: Option<String>,
}

/// The settings as read: the pool's, resolved by the shared loader
/// ([`take_pool_config`]), and the daemon's own keys, every one optional.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pool: PoolConfig,
    daemon: DaemonRaw,
    /// Where each key given was set, for the errors about it.
    origins: Origins,
}

/// Where each key was last set (the file, a variable, `--set`), so an error
/// about a value says where to fix it.
#[derive(Debug, Clone, Default)]
struct Origins(std::collections::BTreeMap<String, String>);

impl Origins {
    fn set(&mut self, key: &str, origin: String) {
        self.0.insert(key.to_owned(), origin);
    }

    /// `error`, saying where its key was set when it was.
    fn name(&self, mut error: SettingsError) -> SettingsError {
        if let Some(origin) = self.0.get(&error.key) {
            error.message = format!("{} (set {origin})", error.message);
        }
        error
    }
}

/// `CORTEX_POOL_` variables that are not settings: the log filter.
const NOT_SETTINGS: &[&str] = &["CORTEX_POOL_LOG"];

/// The key `key` (no key itself) may have meant: the one it is but for
/// underscores and case (`poolsize`, `Pool_Size`: `pool_size`).
fn meant(key: &str) -> Option<&'static str> {
    let squeezed = key.replace('_', "").to_ascii_lowercase();
    keys().find(|k| k.replace('_', "") == squeezed)
}

/// Why `key` is refused: no such key, with the one it may have meant.
fn unknown_key(key: &str) -> String {
    match meant(key) {
        Some(k) => format!("unknown key (did you mean {k}?)"),
        None => "unknown key".to_owned(),
    }
}

/// Refuses a `CORTEX_POOL_` variable that names no setting (a misspelled one
/// would otherwise be ignored without a word), suggesting the key it may
/// have meant.
fn check_env_names(names: impl IntoIterator<Item = String>) -> Result<(), SettingsError> {
    for name in names {
        let Some(suffix) = name.strip_prefix("CORTEX_POOL_") else {
            continue;
        };
        let key = suffix.to_ascii_lowercase();
        if is_key(&key) || NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let hint = meant(&key)
            .map(|k| format!(" (did you mean CORTEX_POOL_{}?)", k.to_ascii_uppercase()))
            .unwrap_or_default();
        return Err(SettingsError::new(
            name,
            format!(
                "not a setting{hint}: CORTEX_POOL_<KEY> takes the keys listed in \
                 docs/operations.md, and CORTEX_POOL_LOG the log filter"
            ),
        ));
    }
    Ok(())
}

/// The daemon's own keys ([`DAEMON_KEYS`]); absent ones take their defaults.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct DaemonRaw {
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
    answer_timeout_ms: Option<u64>,
    metrics_addr: Option<String>,
    store: Option<PathBuf>,
    durability: Option<String>,
    result_ttl: Option<toml::Value>,
    store_max_mb: Option<u64>,
    store_memory_mb: Option<u64>,
    queue: Option<String>,
    queue_stream: Option<String>,
    queue_subject_prefix: Option<String>,
    queue_credentials: Option<PathBuf>,
    queue_ack_wait_ms: Option<u64>,
    queue_tls_ca: Option<PathBuf>,
    queue_tls_cert: Option<PathBuf>,
    queue_tls_key: Option<PathBuf>,
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
    /// How long a client's `status`, `metrics` and `workers` wait for the
    /// daemon's answer (a stuck daemon is reported, not waited on forever).
    /// Default 10 s.
    pub(crate) answer_timeout: std::time::Duration,
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
        // An empty variable is an unset one, a misspelt name included.
        let set = std::env::vars_os().filter(|(_, value)| !value.is_empty());
        check_env_names(set.filter_map(|(name, _)| name.into_string().ok()))?;
        self.load_with(|name| std::env::var(name).ok())
    }

    /// [`load`](Self::load) with an injectable environment (for tests).
    pub(crate) fn load_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Raw, SettingsError> {
        let mut origins = Origins::default();
        let mut table = match &self.file {
            Some(path) => read_file(path)?,
            None => toml::Table::new(),
        };
        if let Some(path) = &self.file {
            for key in table.keys() {
                origins.set(key, format!("in {}", path.display()));
            }
        }
        // An empty variable is an unset one (`VAR= cmd` clears it for one
        // command), not an empty value: an empty runtime_dir would put the
        // daemon's files in the current directory.
        let env = |name: &str| env(name).filter(|value| !value.is_empty());
        for (var, key) in LEGACY_ENV {
            if let Some(value) = env(var) {
                table.insert((*key).to_owned(), env_value(key, &value));
                origins.set(key, format!("by the environment variable {var}"));
            }
        }
        if let Some(dir) = env("LOG_DIR") {
            origins.set("log_file", "by the environment variable LOG_DIR".to_owned());
            let log = Path::new(&dir).join("worker-pool.log");
            table.insert(
                "log_file".to_owned(),
                toml::Value::String(log.to_string_lossy().into_owned()),
            );
        }
        for key in keys() {
            let var = format!("CORTEX_POOL_{}", key.to_ascii_uppercase());
            if let Some(value) = env(&var) {
                table.insert(key.to_owned(), env_value(key, &value));
                origins.set(key, format!("by the environment variable {var}"));
            }
        }
        for pair in &self.overrides {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| SettingsError::new(pair.clone(), "--set takes KEY=VALUE"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(SettingsError::new(pair.clone(), "--set takes KEY=VALUE"));
            }
            if !is_key(key) {
                return Err(SettingsError::new(
                    key,
                    format!("{} (set by --set {pair})", unknown_key(key)),
                ));
            }
            table.insert(key.to_owned(), env_value(key, value));
            origins.set(key, format!("by --set {pair}"));
        }
        if let Some(url) = &self.queue {
            table.insert("queue".to_owned(), toml::Value::String(url.clone()));
            origins.set("queue", format!("by --queue {url}"));
        }
        match from_table(table) {
            Ok((pool, daemon)) => Ok(Raw {
                pool,
                daemon,
                origins,
            }),
            Err(e) => Err(origins.name(e)),
        }
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

fn from_table(mut table: toml::Table) -> Result<(PoolConfig, DaemonRaw), SettingsError> {
    for key in table.keys() {
        if !is_key(key) {
            return Err(SettingsError::new(key.clone(), unknown_key(key)));
        }
    }
    // `worker` as one command line, in a file too (split on whitespace; a
    // path with spaces takes the array form).
    if let Some(toml::Value::String(line)) = table.get("worker") {
        let argv = line
            .split_whitespace()
            .map(|s| toml::Value::String(s.to_owned()))
            .collect();
        table.insert("worker".to_owned(), toml::Value::Array(argv));
    }
    let pool = take_pool_config(&mut table)?;
    let daemon = DaemonRaw::deserialize(table).map_err(|e| {
        let message = e.to_string();
        let key = DAEMON_KEYS
            .iter()
            .find(|k| message.contains(&format!("`{k}`")))
            .map_or("config", |k| k);
        SettingsError::new(key, one_line(&message))
    })?;
    Ok((pool, daemon))
}

impl Raw {
    /// Applies defaults and validates every value.
    ///
    /// # Errors
    /// The first value that does not make sense, naming its key.
    pub(crate) fn resolve(self) -> Result<Settings, SettingsError> {
        let origins = self.origins.clone();
        self.resolve_values().map_err(|e| origins.name(e))
    }

    fn resolve_values(self) -> Result<Settings, SettingsError> {
        let Raw {
            pool,
            daemon: raw,
            origins: _,
        } = self;
        let policy = raw.policy.unwrap_or_else(|| "least-loaded".to_owned());
        policy_balance::by_name(&policy)
            .map_err(|e| SettingsError::new("policy", e.to_string()))?;
        if raw.auto_restart == Some(false) {
            return Err(SettingsError::new(
                "auto_restart",
                "false is not supported: the pool always replaces workers that die",
            ));
        }
        let transport = raw
            .transport
            .as_deref()
            .map_or(Ok(TransportKind::Stdio), str::parse)
            .map_err(|e| SettingsError::new("transport", e))?;
        let worker = match raw.worker {
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
        let dir = raw.runtime_dir.unwrap_or_else(paths::default_runtime_dir);
        let paths = Paths::new(dir, raw.socket, raw.pid_file, raw.log_file, raw.fifo_dir);
        let max_request_bytes = raw.max_request_bytes.unwrap_or(1024 * 1024);
        if !(64..=64 * 1024 * 1024).contains(&max_request_bytes) {
            return Err(SettingsError::new(
                "max_request_bytes",
                "must be between 64 bytes and 64 MiB",
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(64);
        if max_connections == 0 {
            return Err(SettingsError::new("max_connections", "must be at least 1"));
        }
        if max_connections > MAX_CONNECTIONS {
            return Err(SettingsError::new(
                "max_connections",
                format!("{max_connections} is above the maximum {MAX_CONNECTIONS}"),
            ));
        }
        let answer_timeout_ms = raw.answer_timeout_ms.unwrap_or(10_000);
        if answer_timeout_ms == 0 {
            return Err(SettingsError::new(
                "answer_timeout_ms",
                "must be at least 1",
            ));
        }
        let metrics_addr = match raw.metrics_addr.as_deref() {
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
            raw.store,
            raw.durability.as_deref(),
            raw.result_ttl.as_ref(),
            raw.store_max_mb,
            raw.store_memory_mb,
        )
        .map_err(|(key, message)| SettingsError::new(key, message))?;
        let queue = super::queue::QueueSettings::resolve(super::queue::RawQueue {
            url: raw.queue,
            stream: raw.queue_stream,
            subject_prefix: raw.queue_subject_prefix,
            credentials: raw.queue_credentials,
            ack_wait_ms: raw.queue_ack_wait_ms,
            tls_ca: raw.queue_tls_ca,
            tls_cert: raw.queue_tls_cert,
            tls_key: raw.queue_tls_key,
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
            allowed_uids: raw.allowed_uids.unwrap_or_else(|| vec![paths::uid()]),
            max_request_bytes,
            max_connections,
            answer_timeout: std::time::Duration::from_millis(answer_timeout_ms),
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

    /// A client's `--queue URL` is the `queue` key, so the other `queue_*`
    /// keys given with it apply (they were refused as needing `queue`).
    #[test]
    fn a_clients_queue_url_takes_the_other_queue_keys() {
        let sources = |queue: Option<&str>| Sources {
            file: None,
            overrides: vec![
                "queue_stream=OTHER".into(),
                "queue=nats://ignored:4222".into(),
            ],
            queue: queue.map(str::to_owned),
        };
        let s = sources(Some("nats://127.0.0.1:4333"))
            .load_with(env(&[]))
            .unwrap()
            .resolve()
            .unwrap();
        let queue = s.queue.expect("the queue's settings");
        assert_eq!(queue.config.url, "nats://127.0.0.1:4333");
        assert_eq!(queue.config.stream, "OTHER");
        let alone = Sources {
            file: None,
            overrides: vec!["queue_stream=OTHER".into()],
            queue: None,
        };
        let e = alone.load_with(env(&[])).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("needs `queue`"), "{e}");
    }

    #[test]
    fn a_pool_size_alone_moves_the_bounds_it_is_outside() {
        let s = Sources {
            file: None,
            overrides: vec!["pool_size=4".into()],
            queue: None,
        }
        .load_with(env(&[]))
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!((s.pool.pool_size, s.pool.min_workers), (4, 4));
    }

    /// A configuration file holding `text`, removed on drop (a failing
    /// assertion included).
    struct TomlFile(PathBuf);

    impl TomlFile {
        fn new(name: &str, text: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("cp-cfg-{name}-{}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }

        /// Sources reading this file, then `overrides`.
        fn sources(&self, overrides: &[&str]) -> Sources {
            Sources {
                file: Some(self.0.clone()),
                overrides: overrides.iter().map(|o| (*o).to_owned()).collect(),
                queue: None,
            }
        }
    }

    impl Drop for TomlFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = TomlFile::new(
            "layers",
            "pool_size = 3\nmin_workers = 1\npolicy = \"p2c\"\n",
        );
        let sources = file.sources(&["max_workers=7"]);
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
        assert_eq!(
            bad(&[("MIN_WORKERS", "90"), ("MAX_WORKERS", "50")]),
            "min_workers"
        );
        assert_eq!(
            bad(&[("POOL_SIZE", "4"), ("MIN_WORKERS", "5")]),
            "pool_size"
        );
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
            queue: None,
        };
        assert_eq!(overrides.load_with(env(&[])).unwrap_err().key, "nonsense");
    }

    /// The message of the error the sources give.
    fn message(sources: &Sources, pairs: &[(&str, &str)]) -> String {
        let e = sources
            .load_with(env(pairs))
            .and_then(Raw::resolve)
            .unwrap_err();
        format!("{}: {}", e.key, e.message)
    }

    #[test]
    fn an_error_says_where_its_value_was_set_on_one_line() {
        let none = Sources::default();
        assert_eq!(
            message(&none, &[("TASK_TIMEOUT", "0")]),
            "task_timeout_ms: must be greater than zero (set by the environment variable TASK_TIMEOUT)"
        );
        let typed = message(&none, &[("CORTEX_POOL_POOL_SIZE", "\"many\"")]);
        assert!(
            typed.ends_with("(set by the environment variable CORTEX_POOL_POOL_SIZE)"),
            "{typed}"
        );
        assert!(!typed.contains('\n'), "{typed}");
        let flagged = Sources {
            file: None,
            overrides: vec!["transport=pigeon".into()],
            queue: None,
        };
        assert!(
            message(&flagged, &[]).ends_with("(set by --set transport=pigeon)"),
            "{}",
            message(&flagged, &[])
        );
        let file = TomlFile::new("origin", "max_connections = 0\n");
        assert_eq!(
            message(&file.sources(&[]), &[]),
            format!(
                "max_connections: must be at least 1 (set in {})",
                file.0.display()
            )
        );
    }

    /// A slot count past what a semaphore holds is refused at load, naming the
    /// key: it panicked the control socket's task after "daemon ready".
    #[test]
    fn max_connections_is_bounded() {
        let sources = |n: &str| Sources {
            overrides: vec![format!("max_connections={n}")],
            ..Sources::default()
        };
        let e = sources("2305843009213693952")
            .load_with(env(&[]))
            .and_then(Raw::resolve)
            .unwrap_err();
        assert_eq!(e.key, "max_connections", "{e}");
        let ok = sources("65536").load_with(env(&[])).and_then(Raw::resolve);
        assert_eq!(ok.unwrap().max_connections, MAX_CONNECTIONS);
    }

    #[test]
    fn a_worker_in_the_file_may_be_one_command_line() {
        let file = TomlFile::new("worker", "worker = \"python3  w.py --fast\"\n");
        let settings = file.sources(&[]).load_with(env(&[])).and_then(Raw::resolve);
        let worker = settings.expect("a command line is a worker").worker;
        assert_eq!(worker.program, std::ffi::OsString::from("python3"));
        assert_eq!(
            worker.args,
            vec![std::ffi::OsString::from("w.py"), "--fast".into()]
        );
    }

    /// An unknown key in `--set` or in the file says which key it may have
    /// meant, and `--set` names itself; an empty key is no KEY=VALUE.
    #[test]
    fn an_unknown_key_suggests_the_key_it_may_have_meant() {
        let set = |pair: &str| {
            Sources {
                overrides: vec![pair.to_owned()],
                ..Sources::default()
            }
            .load_with(env(&[]))
            .map(|_| ())
            .expect_err("refused")
            .to_string()
        };
        let said = set("poolsize=4");
        assert!(
            said.contains("unknown key (did you mean pool_size?) (set by --set poolsize=4)"),
            "{said}"
        );
        assert!(set("=4").contains("--set takes KEY=VALUE"), "{}", set("=4"));
        let file = TomlFile::new("typo", "Pool_Size = 4\n");
        let said = file
            .sources(&[])
            .load_with(env(&[]))
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(said.contains("did you mean pool_size?"), "{said}");
    }

    #[test]
    fn an_empty_variable_is_an_unset_one() {
        let s = Sources::default()
            .load_with(env(&[("CORTEX_POOL_RUNTIME_DIR", ""), ("POOL_SIZE", "")]))
            .and_then(Raw::resolve)
            .expect("empty variables are ignored");
        assert_eq!(s.paths.dir, paths::default_runtime_dir());
        assert_eq!(s.pool.pool_size, PoolConfig::default().pool_size);
    }

    #[test]
    fn a_cortex_pool_variable_that_names_no_setting_is_refused() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert!(check_env_names(names(&[
            "CORTEX_POOL_POOL_SIZE",
            "CORTEX_POOL_LOG",
            "PATH",
            "POOL_SIZE"
        ]))
        .is_ok());
        let e = check_env_names(names(&["CORTEX_POOL_POOLSIZE"])).unwrap_err();
        assert_eq!(e.key, "CORTEX_POOL_POOLSIZE");
        assert!(
            e.message
                .starts_with("not a setting (did you mean CORTEX_POOL_POOL_SIZE?)"),
            "{}",
            e.message
        );
        let e = check_env_names(names(&["CORTEX_POOL_NONSENSE"])).unwrap_err();
        assert!(e.message.starts_with("not a setting:"), "{}", e.message);
    }
}
