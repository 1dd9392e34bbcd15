//! Issue 13: a daemon whose NATS connection drops (the server killed and
//! started again by the test, on the same port and store) reconnects by itself
//! and loses nothing; while disconnected it finishes the tasks it holds and
//! `daemon status` says the queue is disconnected.

mod daemon_util;

use daemon_util::{text, wait_for, Daemon};
use serde_json::Value;
use source_nats::test_server::NatsServer;

/// As many as the daemon holds at once (two worker slots, one prefetched task
/// each): all of them are claimed before the server goes down.
const TASKS: usize = 4;

/// How long the server stays down.
const OUTAGE: std::time::Duration = std::time::Duration::from_secs(6);

/// Task ids `r0`…: 500 ms sleeps, so the workers still run them when the
/// server goes down.
fn tasks() -> (String, Vec<String>) {
    let ids: Vec<String> = (0..TASKS).map(|i| format!("r{i}")).collect();
    let text = ids
        .iter()
        .map(|id| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "type": "sleep", "payload": {"ms": 500}})
            )
        })
        .collect();
    (text, ids)
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
            ("CORTEX_POOL_QUEUE_ACK_WAIT_MS", "3000"),
            ("CORTEX_POOL_POOL_SIZE", "2"),
            ("CORTEX_POOL_MIN_WORKERS", "2"),
            ("CORTEX_POOL_MAX_WORKERS", "2"),
        ],
    );
    daemon.watchdog(120);
    daemon.run_foreground();
    assert_eq!(connection(&daemon.status()), "connected");

    let (input, ids) = tasks();
    let out = daemon.cli_with_input(&["submit", "--queue", &url, "-"], &input);
    assert!(out.status.success(), "submit failed: {}", text(&out));

    // The server goes down while the daemon's workers run every task.
    assert!(
        wait_for(20, || {
            let status = daemon.status();
            status["queue"]["held"] == TASKS && in_flight(&status) > 0
        }),
        "the daemon never held every task: {}",
        daemon.status()
    );
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

    // The outage outlasts the client's JetStream request timeout (5 s), so
    // storing those outcomes fails and must be retried after the reconnection
    // with no further task ending to prompt it.
    std::thread::sleep(OUTAGE);
    server.resume();
    assert!(
        wait_for(30, || connection(&daemon.status()) == "connected"),
        "the daemon did not reconnect: {}",
        daemon.status()
    );

    // Every task ends with one ok outcome in the results bucket.
    let mut args = vec!["wait", "--queue", &url, "--timeout-s", "60"];
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
    assert_eq!(lines.len(), TASKS, "{}", text(&out));
    for line in &lines {
        assert_eq!(line["status"], "ok", "{line}");
    }
    let puts = results_puts(&url);
    assert!(puts >= TASKS as u64);
    eprintln!(
        "{TASKS} tasks through a server restart: {} settled twice (at-least-once redelivery)",
        puts - TASKS as u64
    );
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "stop failed: {}", text(&stopped));
}
