//! Over FIFOs, a worker gets the pool's `start_timeout_ms` to open its end,
//! as a worker over pipes gets it to say `ready` (the transport's own 10 s
//! no longer cuts a slower start short).

mod daemon_util;

use std::path::{Path, PathBuf};

use daemon_util::{text, Daemon};

/// A worker script that waits `secs` before it runs the built-in worker.
struct SlowWorker(PathBuf);

impl SlowWorker {
    fn new(name: &str, secs: u32) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.sh", std::process::id()));
        let script = format!(
            "#!/bin/sh\nsleep {secs}\nexec '{}' worker\n",
            daemon_util::bin()
        );
        std::fs::write(&path, script).expect("write the worker script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .expect("make the worker script executable");
        Self(path)
    }
}

impl Drop for SlowWorker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_worker_slower_than_ten_seconds_to_open_its_fifos_starts_within_start_timeout() {
    let worker = SlowWorker::new("slow-fifo-worker", 11);
    let program = worker.0.display().to_string();
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
