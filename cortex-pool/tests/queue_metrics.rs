//! `metrics --prometheus` of a daemon on the shared queue while the NATS
//! server stalls (answers nothing, connection open) or is gone: the scrape
//! still answers with the pool's series and `cortex_pool_queue_connected`, and
//! leaves out the figures it could not read instead of exporting zeros.

mod daemon_util;

use daemon_util::{text, wait_for, Daemon};
use source_nats::test_relay::Relay;
use source_nats::test_server::NatsServer;

fn daemon_on(name: &str, url: &str) -> Daemon {
    let mut daemon = Daemon::new(
        name,
        &[
            ("CORTEX_POOL_QUEUE", url),
            ("CORTEX_POOL_POOL_SIZE", "1"),
            ("CORTEX_POOL_MIN_WORKERS", "1"),
            ("CORTEX_POOL_MAX_WORKERS", "1"),
        ],
    );
    daemon.watchdog(120);
    daemon.run_foreground();
    daemon
}

fn prometheus(daemon: &Daemon) -> String {
    let out = daemon.cli(&["metrics", "--prometheus"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_series(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| !l.starts_with('#') && l.starts_with(name))
}

#[test]
fn a_stalled_server_leaves_the_queue_figures_out_and_the_rest_answers() {
    let server = NatsServer::start();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let relay = runtime.block_on(Relay::start(&server.url()));
    let mut daemon = daemon_on("queue-metrics-stall", &relay.url());
    let before = prometheus(&daemon);
    assert!(
        has_series(&before, "cortex_pool_queue_dead_letters"),
        "{before}"
    );
    relay.freeze();
    let stalled = prometheus(&daemon);
    assert!(
        has_series(&stalled, "cortex_pool_tasks_submitted"),
        "{stalled}"
    );
    assert!(
        has_series(&stalled, "cortex_pool_queue_connected"),
        "{stalled}"
    );
    for absent in [
        "cortex_pool_queue_dead_letters",
        "cortex_pool_queue_lag",
        "cortex_pool_dlq_size",
        "cortex_pool_store_tasks{",
    ] {
        assert!(!has_series(&stalled, absent), "{absent} in {stalled}");
    }
    daemon.stop();
}

#[test]
fn a_disconnected_queue_exports_no_dead_letter_zeros() {
    let mut server = NatsServer::start();
    let mut daemon = daemon_on("queue-metrics-down", &server.url());
    server.stop();
    assert!(
        wait_for(30, || daemon.status()["queue"]["connection"]
            == "disconnected"),
        "the daemon never saw the connection drop"
    );
    let down = prometheus(&daemon);
    assert!(
        down.lines().any(|l| l == "cortex_pool_queue_connected 0"),
        "{down}"
    );
    assert!(has_series(&down, "cortex_pool_tasks_submitted"), "{down}");
    for absent in [
        "cortex_pool_queue_dead_letters",
        "cortex_pool_dlq_size",
        "cortex_pool_store_tasks{state=\"dead_letter\"}",
        "cortex_pool_store_size_bytes",
    ] {
        assert!(!has_series(&down, absent), "{absent} in {down}");
    }
    server.resume();
    daemon.stop();
}
