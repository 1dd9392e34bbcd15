//! Issue 11 item 1 through the daemon: a `submit` with a huge `timeout_ms` (the
//! one that used to kill the pool's actor while `status` kept saying healthy) is
//! refused naming the key, the next task runs, and the pool stays healthy with
//! live worker processes.

mod daemon_util;

use daemon_util::{alive, text, Daemon};

#[test]
fn a_huge_timeout_does_not_kill_the_pool_and_status_shows_live_workers() {
    let mut d = Daemon::new("pool-health", &[]);
    d.watchdog(60);
    d.run_foreground();
    let input = concat!(
        "{\"id\":\"huge\",\"type\":\"echo\",\"payload\":1,\"timeout_ms\":68719476735}\n",
        "{\"id\":\"after\",\"type\":\"echo\",\"payload\":2}\n",
    );
    let out = d.cli_with_input(&["submit", "--wait"], input);
    assert_eq!(
        out.status.code(),
        Some(1),
        "one line refused: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let refused = stdout
        .lines()
        .find(|l| l.contains("\"id\":\"huge\""))
        .unwrap_or_else(|| panic!("no line for the huge timeout: {stdout}"));
    assert!(
        refused.contains("\"status\":\"refused\"") && refused.contains("timeout_ms"),
        "{refused}"
    );
    assert_eq!(stdout.matches("\"status\":\"ok\"").count(), 1, "{stdout}");

    let status = d.status();
    let health = &status["metrics"]["health"];
    assert_eq!(health["status"], "healthy", "{status}");
    assert!(health.get("failure").is_none(), "{status}");
    let workers = d.workers();
    assert_eq!(workers.len(), 2, "{workers:?}");
    for w in &workers {
        let pid = u32::try_from(w["pid"].as_u64().unwrap()).unwrap();
        assert!(alive(pid), "worker {w} is reported but has no process");
    }
    let out = d.cli(&["daemon", "status"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("health healthy") && !printed.contains("POOL FAILED"),
        "{printed}"
    );
    assert_eq!(d.stop().status.code(), Some(0));
}
