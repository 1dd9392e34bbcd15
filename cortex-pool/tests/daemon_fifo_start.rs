//! Over FIFOs, a worker gets the pool's `start_timeout_ms` to open its end,
//! as a worker over pipes gets it to say `ready` (the transport's own 10 s
//! no longer cuts a slower start short).

mod daemon_util;

use daemon_util::{text, Daemon, WorkerScript};

#[test]
fn a_worker_slower_than_ten_seconds_to_open_its_fifos_starts_within_start_timeout() {
    let worker = WorkerScript::new("slow-fifo-worker", "sleep 11");
    let program = worker.program();
    let d = Daemon::new(
        "fifo-slow-start",
        &[
            ("CORTEX_POOL_WORKER", program.as_str()),
            ("CORTEX_POOL_TRANSPORT", "fifo"),
            ("CORTEX_POOL_POOL_SIZE", "1"),
            ("CORTEX_POOL_START_TIMEOUT_MS", "30000"),
        ],
    );
    d.watchdog(90);
    d.start();
    let ran = d.cli(&["submit", "--type", "echo", "--payload", "1", "--wait"]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
}
