//! A fifo worker whose manager dies before opening the FIFOs does not wait forever.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Scratch;

#[test]
fn a_fifo_worker_orphaned_before_the_handshake_exits() {
    let dir = Scratch::new("orphan");
    let to = dir.0.join("to.fifo");
    let from = dir.0.join("from.fifo");
    for fifo in [&to, &from] {
        assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
    }
    // The shell (the worker's "manager") starts the worker in the background and
    // dies soon after: the worker is orphaned while blocked opening a FIFO nobody
    // will ever open.
    let out = Command::new("sh")
        .args([
            "-c",
            "\"$0\" worker >/dev/null 2>&1 & echo $!; sleep 0.5",
            common::bin(),
        ])
        .env("CORTEX_TRANSPORT", "fifo")
        .env("CORTEX_FIFO_TO_WORKER", &to)
        .env("CORTEX_FIFO_FROM_WORKER", &from)
        .output()
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while alive() {
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the orphaned worker {pid} is still waiting for its FIFOs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
