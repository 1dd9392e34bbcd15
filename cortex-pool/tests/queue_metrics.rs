//! `metrics --prometheus` of a daemon on the shared queue while the NATS
//! server stalls (answers nothing, connection open) or is gone: the scrape
//! still answers with the pool's series and `cortex_pool_queue_connected`, and
//! leaves out the figures it could not read instead of exporting zeros.

mod daemon_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use daemon_util::{text, wait_for, Daemon};
use source_nats::test_server::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Copies bytes from `from` to `to`; once `frozen`, keeps both open and
/// forwards nothing more.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP relay to `upstream` (`host:port`): a server that stops answering,
/// without closing, once `frozen`.
async fn relay(upstream: String, frozen: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, frozen.clone()));
            tokio::spawn(forward(server_read, client_write, frozen.clone()));
        }
    });
    port
}

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
    let frozen = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let upstream = server.url().trim_start_matches("nats://").to_owned();
    let port = runtime.block_on(relay(upstream, frozen.clone()));
    let mut daemon = daemon_on("queue-metrics-stall", &format!("nats://127.0.0.1:{port}"));
    let before = prometheus(&daemon);
    assert!(
        has_series(&before, "cortex_pool_queue_dead_letters"),
        "{before}"
    );
    frozen.store(true, Ordering::SeqCst);
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
    frozen.store(false, Ordering::SeqCst);
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
    ] {
        assert!(!has_series(&down, absent), "{absent} in {down}");
    }
    server.resume();
    daemon.stop();
}
