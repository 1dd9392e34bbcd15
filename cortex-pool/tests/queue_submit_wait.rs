//! `submit --wait` and `wait` on a daemon that runs on the shared queue: the
//! queue finds a task only once it settled or while this daemon holds it, so
//! a task still queued, or run by another daemon, must be waited for, not
//! answered `unknown` (1 560 of 2 000 tasks were, before the fix).

mod daemon_util;

use daemon_util::{text, Daemon};
use serde_json::Value;
use source_nats::test_server::NatsServer;

const TASKS: usize = 300;

fn daemon(name: &str, url: &str) -> Daemon {
    daemon_with(name, url, &[])
}

/// [`daemon`] with more environment.
fn daemon_with(name: &str, url: &str, more: &[(&str, &str)]) -> Daemon {
    let mut env = vec![
        ("CORTEX_POOL_QUEUE", url),
        ("CORTEX_POOL_POOL_SIZE", "1"),
        ("CORTEX_POOL_MIN_WORKERS", "1"),
        ("CORTEX_POOL_MAX_WORKERS", "1"),
    ];
    env.extend_from_slice(more);
    let mut daemon = Daemon::new(name, &env);
    daemon.watchdog(120);
    daemon.run_foreground();
    daemon
}

/// Tasks completed by a daemon's pool.
fn completed(daemon: &Daemon) -> u64 {
    daemon.status()["metrics"]["tasks"]["completed"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn submit_wait_answers_every_task_with_its_result_whichever_daemon_ran_it() {
    let server = NatsServer::start();
    let url = server.url();
    let a = daemon("queue-wait-a", &url);
    let b = daemon("queue-wait-b", &url);
    let lines: String = (0..TASKS)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"id": format!("w{i}"), "type": "sleep", "payload": {"ms": 2}})
            )
        })
        .collect();
    let out = a.cli_with_input(&["submit", "--wait", "-"], &lines);
    assert!(out.status.success(), "submit --wait failed: {}", text(&out));
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(results.len(), TASKS, "{}", text(&out));
    let not_ok: Vec<&Value> = results.iter().filter(|r| r["status"] != "ok").collect();
    assert!(not_ok.is_empty(), "not ok: {not_ok:?}");
    let mut ids: Vec<&str> = results.iter().filter_map(|r| r["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), TASKS, "each id answered once");
    // Both daemons ran some: the waiting daemon was told of tasks it did not run.
    assert!(completed(&b) > 0, "daemon b ran nothing");
    assert!(completed(&a) > 0, "daemon a ran nothing");
    assert_eq!(completed(&a) + completed(&b), TASKS as u64);
}

#[test]
fn wait_for_an_id_the_queue_never_saw_ends_at_its_timeout_as_unknown() {
    let server = NatsServer::start();
    let a = daemon("queue-wait-unknown", &server.url());
    let out = a.cli(&["wait", "never-submitted", "--timeout-s", "1"]);
    let line: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or(""),
    )
    .expect("one JSON line");
    assert_eq!(line["status"], "unknown", "{}", text(&out));
    assert!(!out.status.success());
}

/// `metrics --json` on a daemon that runs on the shared queue: its `queue`
/// object keeps the pool's keys (`queueDepth`, `byPriority`, `dlqSize`) and
/// gains the shared queue's (`lag`, `held`, `dead_letters`, …).
#[test]
fn metrics_json_keeps_the_pools_queue_keys_beside_the_shared_queues() {
    let server = NatsServer::start();
    let a = daemon("queue-metrics", &server.url());
    let out = a.cli(&["metrics", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics: Value = serde_json::from_slice(&out.stdout).expect("metrics JSON");
    let queue = &metrics["queue"];
    for key in ["queueDepth", "byPriority", "retrying", "dlqSize", "shards"] {
        assert!(!queue[key].is_null(), "the pool's {key} is gone: {queue}");
    }
    for key in ["connected", "lag", "ack_pending", "held", "dead_letters"] {
        assert!(
            !queue[key].is_null(),
            "the shared queue's {key} is missing: {queue}"
        );
    }
}

/// The shared queue's series reach a scrape of `/metrics` as they reach
/// `metrics --prometheus` (the endpoint served the pool's alone).
#[test]
fn the_http_metrics_endpoint_serves_the_shared_queues_series() {
    use std::io::{Read, Write};
    let server = NatsServer::start();
    let addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        free.local_addr().expect("its address").to_string()
    };
    let a = daemon_with(
        "queue-http-metrics",
        &server.url(),
        &[("CORTEX_POOL_METRICS_ADDR", &addr)],
    );
    let out = a.cli(&["metrics", "--prometheus"]);
    assert!(out.status.success(), "{}", text(&out));
    let asked = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut scrape = std::net::TcpStream::connect(&addr).expect("the endpoint listens");
    write!(scrape, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request written");
    let mut scraped = String::new();
    scrape.read_to_string(&mut scraped).expect("response read");
    for body in [&asked, &scraped] {
        for series in [
            "cortex_pool_queue_connected 1",
            "cortex_pool_queue_lag ",
            "cortex_pool_queue_ack_pending ",
            "cortex_pool_queue_held ",
            "cortex_pool_queue_dead_letters ",
        ] {
            assert!(body.contains(series), "missing {series:?} in\n{body}");
        }
    }
}

/// `submit --queue --type T --payload JSON` takes the path of the same
/// input line: a payload reaches the worker as that line's does, and one too
/// wide for MessagePack is refused with the input line's reason, exit 1.
#[test]
fn a_payload_flag_onto_the_queue_is_taken_and_checked_as_an_input_line() {
    let server = NatsServer::start();
    let url = server.url();
    let a = daemon("queue-payload-flag", &url);
    let by_flag = |payload: &str, wait: bool| {
        let mut args = vec!["submit", "--queue", &url, "--type", "echo"];
        args.extend(["--payload", payload]);
        if wait {
            args.push("--wait");
        }
        a.cli(&args)
    };
    let by_line = |payload: &str, wait: bool| {
        let mut args = vec!["submit", "--queue", &url, "-"];
        if wait {
            args.push("--wait");
        }
        a.cli_with_input(
            &args,
            &format!("{{\"type\":\"echo\",\"payload\":{payload}}}\n"),
        )
    };
    let one = |out: &std::process::Output, code: i32| -> Value {
        assert_eq!(out.status.code(), Some(code), "{}", text(out));
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    };

    let payload = r#"{"z":1,"a":[2,18446744073709551615]}"#;
    let (flag, line) = (by_flag(payload, true), by_line(payload, true));
    let (flag, line) = (one(&flag, 0), one(&line, 0));
    assert_eq!(flag["status"], "ok", "{flag}");
    assert_eq!(flag["result"], line["result"]);
    assert_eq!(
        flag["result"]["a"][1], 18_446_744_073_709_551_615_u64,
        "{flag}"
    );

    let wide = "18446744073709551616";
    let (flag, line) = (by_flag(wide, false), by_line(wide, false));
    let (flag, line) = (one(&flag, 1), one(&line, 1));
    assert_eq!(flag["status"], "refused", "{flag}");
    assert_eq!(flag["error"], line["error"]);
    assert!(
        flag["error"]
            .as_str()
            .is_some_and(|e| e.contains("integer 18446744073709551616 is outside")),
        "{flag}"
    );
    let dir = a.dir.clone();
    drop(a);
    let _ = std::fs::remove_dir_all(dir);
}
