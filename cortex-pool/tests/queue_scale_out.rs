//! Issue 13's acceptance, through the real binary and a real `nats-server`:
//! three daemons (two workers each, separate runtime directories) consume one
//! queue; a mix of tasks is submitted with `submit --queue`; mid-run one
//! daemon's process group is `kill -9`ed and another daemon is SIGSTOPped for
//! longer than `ack_wait`, then continued. Every id must end with one outcome
//! in the results bucket, the always-failing ones in the dead-letter stream,
//! none missing. Prints how many outcomes were stored twice (tasks that ran
//! twice and settled twice). `CORTEX_SCALE_TASKS` sets the count: 5 000 by
//! default to fit CI's time on a debug build; the issue's figure is
//! `CORTEX_SCALE_TASKS=20000`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use source_nats::test_server::NatsServer;
use source_nats::{NatsConfig, NatsSource};
use task_source::{Filter, TaskSource, TaskState};

const ACK_WAIT_MS: u64 = 2_000;

/// A daemon in its own process group (with its workers), killed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(name: &str, url: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cortex-pool"))
            .args(["daemon", "run"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CORTEX_POOL_RUNTIME_DIR", &dir)
            .env("CORTEX_POOL_QUEUE", url)
            .env("CORTEX_POOL_QUEUE_ACK_WAIT_MS", ACK_WAIT_MS.to_string())
            .env("CORTEX_POOL_MIN_WORKERS", "2")
            .env("CORTEX_POOL_MAX_WORKERS", "2")
            .env("CORTEX_POOL_POOL_SIZE", "2")
            .env("CORTEX_POOL_MAX_RETRIES", "2")
            .env("CORTEX_POOL_RETRY_BACKOFF_MS", "20")
            .env("CORTEX_POOL_SHUTDOWN_TIMEOUT_MS", "3000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        Self { child, dir }
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .status();
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal_group("-CONT");
        self.signal_group("-KILL");
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The task mix: echo, 1–20 ms sleeps, failures that succeed on a retry, and a
/// few that always fail; returns the lines and the always-failing ids.
fn tasks(n: usize) -> (String, Vec<String>, HashSet<String>) {
    let mut text = String::new();
    let mut ids = Vec::with_capacity(n);
    let mut always = HashSet::new();
    for i in 0..n {
        let id = format!("t{i}");
        let line = match i % 20 {
            0 => serde_json::json!({"id": id, "type": "fail", "payload": {"times": 1}}),
            1 if i % 200 == 1 => {
                always.insert(id.clone());
                serde_json::json!({"id": id, "type": "fail", "payload": {"times": 99}})
            }
            k if k % 2 == 0 => {
                serde_json::json!({"id": id, "type": "sleep", "payload": {"ms": 1 + i % 20}})
            }
            _ => serde_json::json!({"id": id, "type": "echo", "payload": i}),
        };
        text.push_str(&line.to_string());
        text.push('\n');
        ids.push(id);
    }
    (text, ids, always)
}

/// How many of `ids` have an outcome in the bucket (and the records).
async fn settled(source: &NatsSource, ids: &[String]) -> Vec<Option<task_source::TaskRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        out.extend(source.get(chunk.to_vec()).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_one_queue_through_kill_and_stop() {
    let n: usize = std::env::var("CORTEX_SCALE_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let server = NatsServer::start();
    let url = server.url();
    let daemons: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|name| Daemon::start(name, &url))
        .collect();
    let (text, ids, always) = tasks(n);
    let file = daemons[0].dir.join("tasks.jsonl");
    std::fs::write(&file, text).unwrap();
    let submit = Command::new(env!("CARGO_BIN_EXE_cortex-pool"))
        .args(["submit", "--queue", &url])
        .arg(&file)
        .env("CORTEX_POOL_RUNTIME_DIR", &daemons[0].dir)
        .output()
        .unwrap();
    assert!(
        submit.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let accepted = String::from_utf8_lossy(&submit.stdout)
        .lines()
        .filter(|l| l.contains(r#""status":"accepted""#))
        .count();
    assert_eq!(accepted, n);

    let source = NatsSource::connect(NatsConfig::new(url.clone()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let count = |records: &[Option<task_source::TaskRecord>]| {
        records.iter().filter(|r| r.is_some()).count()
    };
    // Mid-run: a tenth settled, then kill -9 daemon a (and its workers), stop b.
    while count(&settled(&source, &ids).await) < n / 10 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemons[0].signal_group("-KILL");
    daemons[1].signal("-STOP");
    tokio::time::sleep(Duration::from_millis(ACK_WAIT_MS * 2)).await;
    daemons[1].signal("-CONT");

    let records = loop {
        let records = settled(&source, &ids).await;
        if count(&records) == n {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} tasks have no outcome after 600 s",
            n - count(&records)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (id, record) in ids.iter().zip(&records) {
        let record = record.as_ref().unwrap();
        if always.contains(id) {
            assert_eq!(record.state, TaskState::DeadLetter, "{id}");
        } else {
            assert!(
                matches!(record.state, TaskState::Ok | TaskState::DeadLetter),
                "{id}: {:?}",
                record.line
            );
        }
    }
    let dead: HashSet<String> = source
        .list(Filter {
            state: Some(TaskState::DeadLetter),
            ..Filter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.task.id)
        .collect();
    assert!(
        always.is_subset(&dead),
        "always-failing tasks missing from the DLQ"
    );
    let stats = source.queue_stats().await.unwrap();
    assert_eq!(stats.lag, 0);
    let puts = results_puts(&url).await;
    let ok = records
        .iter()
        .flatten()
        .filter(|r| r.state == TaskState::Ok)
        .count();
    eprintln!(
        "{n} tasks: {ok} ok, {} dead letters ({} always failing), {} outcomes stored twice or more (ran twice)",
        n - ok,
        always.len(),
        puts.saturating_sub(n as u64)
    );
}

/// Every put the results bucket took (its stream's last sequence).
async fn results_puts(url: &str) -> u64 {
    let client = async_nats_client(url).await;
    let mut stream = client.get_stream("KV_cortex-results").await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

async fn async_nats_client(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}
