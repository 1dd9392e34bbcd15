//! `metrics --prometheus` and the optional loopback `/metrics` and `/healthz`.

mod daemon_util;

use std::io::{Read, Write};
use std::net::TcpStream;

use daemon_util::{text, Daemon};

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("the metrics endpoint listens");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("request written");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response read");
    out
}

#[test]
fn prometheus_text_has_counters_gauges_and_a_histogram_and_http_serves_it() {
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let mut d = Daemon::new("metrics", &[("CORTEX_POOL_METRICS_ADDR", &addr)]);
    d.watchdog(60);
    d.run_foreground();
    let out = d.cli(&["submit", "--type", "echo", "--payload", "\"hi\"", "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = d.cli(&["metrics", "--prometheus"]);
    assert!(out.status.success(), "{}", text(&out));
    let body = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "# TYPE cortex_pool_tasks_completed counter",
        "cortex_pool_tasks_completed_total 1",
        "# TYPE cortex_pool_workers gauge",
        "cortex_pool_workers 2",
        "# TYPE cortex_pool_task_duration_seconds histogram",
        "cortex_pool_task_duration_seconds_bucket{le=\"+Inf\"} 1",
        "cortex_pool_task_duration_seconds_count 1",
        "cortex_pool_task_duration_seconds_sum",
        "cortex_pool_queue_depth_by_band{band=\"high\"} 0",
        "cortex_pool_queue_depth_by_band{band=\"normal\"} 0",
        "cortex_pool_queue_depth_by_band{band=\"low\"} 0",
        "cortex_pool_queue_retrying 0",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    let scraped = get(&addr, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(scraped.contains("cortex_pool_tasks_completed_total 1"));
    let health = get(&addr, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("healthy"),
        "{health}"
    );
    assert!(get(&addr, "/nope").starts_with("HTTP/1.1 404"));
    assert_eq!(d.stop().status.code(), Some(0));
}

#[test]
fn a_non_loopback_metrics_addr_is_refused_naming_the_key() {
    let d = Daemon::new(
        "metrics-bad",
        &[("CORTEX_POOL_METRICS_ADDR", "0.0.0.0:9100")],
    );
    let out = d.cli(&["daemon", "run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics_addr"),
        "{}",
        text(&out)
    );
}
