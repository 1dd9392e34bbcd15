//! Issue 13: a daemon whose NATS connection drops (the server killed and
//! started again by the test, on the same port and store) reconnects by itself
//! and loses nothing; while disconnected it finishes the task it holds,
//! `daemon status` says the queue is disconnected, and once the server is back
//! that task's outcome is stored and new tasks run.

mod daemon_util;

use std::time::{Duration, Instant};

use daemon_util::{text, wait_for, Daemon};
use serde_json::Value;
use source_nats::test_server::NatsServer;

/// How long the server stays down: longer than the client's JetStream request
/// timeout (5 s), so storing the outcome of the task that ends meanwhile fails
/// and must be retried after the reconnection, with no other task ending to
/// prompt it.
const OUTAGE: Duration = Duration::from_secs(6);

/// Tasks submitted once the connection is back.
const AFTER: usize = 20;

/// How long the task held across the outage runs.
const HELD_MS: u64 = 3000;

/// `{"id", "type": "sleep", "payload": {"ms"}}` lines.
fn sleeps(ids: &[String], ms: u64) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "type": "sleep", "payload": {"ms": ms}})
            )
        })
        .collect()
}

fn in_flight(status: &Value) -> u64 {
    status["metrics"]["tasks"]["inFlight"].as_u64().unwrap_or(0)
}

fn connection(status: &Value) -> String {
    status["queue"]["connection"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

/// Every put the results bucket took (its stream's last sequence): above the
/// task count when a redelivered task settled twice.
fn results_puts(url: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut stream = js.get_stream("KV_cortex-results").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    })
}

#[test]
fn a_server_restart_loses_nothing_and_status_shows_the_disconnection() {
    let mut server = NatsServer::start();
    let url = server.url();
    let mut daemon = Daemon::new(
        "queue-reconnect",
        &[
            ("CORTEX_POOL_QUEUE", &url),
            ("CORTEX_POOL_QUEUE_ACK_WAIT_MS", "60000"),
            ("CORTEX_POOL_POOL_SIZE", "2"),
            ("CORTEX_POOL_MIN_WORKERS", "2"),
            ("CORTEX_POOL_MAX_WORKERS", "2"),
        ],
    );
    daemon.watchdog(120);
    daemon.run_foreground();
    assert_eq!(connection(&daemon.status()), "connected");

    // One task runs when the server goes down. It runs for longer than a
    // `daemon status` may take on a loaded machine (each look is a process of
    // its own), so the look below cannot miss it running; and it ends within
    // the outage.
    let held = vec!["r0".to_owned()];
    let out = daemon.cli_with_input(&["submit", "--queue", &url, "-"], &sleeps(&held, HELD_MS));
    assert!(out.status.success(), "submit failed: {}", text(&out));
    assert!(
        wait_for(20, || {
            let status = daemon.status();
            status["queue"]["held"] == 1 && in_flight(&status) == 1
        }),
        "the daemon never ran the task: {}",
        daemon.status()
    );
    let down = Instant::now();
    server.stop();
    assert!(
        wait_for(10, || connection(&daemon.status()) == "disconnected"),
        "status never showed the queue disconnected: {}",
        daemon.status()
    );
    let human = daemon.cli(&["daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("DISCONNECTED"),
        "{}",
        text(&human)
    );
    // It finishes what it holds (nothing left in the pool) and claims nothing
    // new while the connection is down.
    assert!(
        wait_for(10, || {
            let status = daemon.status();
            in_flight(&status) == 0 && connection(&status) == "disconnected"
        }),
        "the held tasks did not finish while disconnected: {}",
        daemon.status()
    );
    let store = daemon.status()["store"].clone();
    assert_eq!(store["health"]["state"], "failing", "{store}");
    assert!(
        store["health"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("down"),
        "{store}"
    );

    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    server.resume();
    assert!(
        wait_for(30, || connection(&daemon.status()) == "connected"),
        "the daemon did not reconnect: {}",
        daemon.status()
    );

    // The task that ended during the outage gets its outcome stored and its
    // message acked (the daemon holds nothing), though no other task ends to
    // prompt the retry (and `ack_wait` is too long for a redelivery to).
    let out = daemon.cli(&["wait", "--queue", &url, "--timeout-s", "20", "r0"]);
    assert!(
        out.status.success(),
        "the outcome of the task that ended while disconnected was not stored: {}",
        text(&out)
    );
    assert!(
        wait_for(20, || daemon.status()["queue"]["held"] == 0),
        "the task that ended while disconnected was never acked: {}",
        daemon.status()
    );

    // New work flows again, and every task ends with one ok outcome.
    let after: Vec<String> = (1..=AFTER).map(|i| format!("r{i}")).collect();
    let out = daemon.cli_with_input(&["submit", "--queue", &url, "-"], &sleeps(&after, 20));
    assert!(out.status.success(), "submit failed: {}", text(&out));
    let ids: Vec<String> = held.into_iter().chain(after).collect();
    let mut args = vec!["wait", "--queue", &url, "--timeout-s", "30"];
    args.extend(ids.iter().map(String::as_str));
    let out = daemon.cli(&args);
    assert!(
        out.status.success(),
        "not every task settled ok: {}",
        text(&out)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len(), "{}", text(&out));
    for line in &lines {
        assert_eq!(line["status"], "ok", "{line}");
    }
    let puts = results_puts(&url);
    assert!(puts >= ids.len() as u64);
    eprintln!(
        "{} tasks through a server restart: {} outcomes stored more than once (a store retried after its reply was lost, or a redelivery)",
        ids.len(),
        puts - ids.len() as u64
    );
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "stop failed: {}", text(&stopped));
}
