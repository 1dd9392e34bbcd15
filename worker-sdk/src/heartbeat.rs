//! The heartbeat thread and the worker's own vitals (RSS, CPU time).
//!
//! A std thread rather than a tokio task, so that a CPU-bound handler occupying every
//! runtime thread leaves the worker "busy" in the manager's eyes, never "dead".

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use pool_core::protocol::{FromWorker, Heartbeat};

use crate::idle_read::IdleSwitch;
use crate::stats::Stats;
use crate::writer::Outbox;

/// Stops the heartbeat thread when dropped.
#[derive(Debug)]
pub(crate) struct HeartbeatGuard {
    _stop: mpsc::Sender<()>,
}

/// Sends a heartbeat every `interval` until the guard is dropped.
///
/// When a heartbeat cannot be written (the manager stopped listening) while
/// the dispatcher waits in a blocking read of the link (`idle`, see
/// [`idle_read`](crate::idle_read)), nothing would wake the dispatcher to see
/// it: this thread ends the process with code 0, as [`Worker::run`] returns
/// when the link goes away (but without the destructors and the code that
/// would run after it). No tokio task is alive then (the dispatcher blocks
/// only then), a read that returns meanwhile starts nothing
/// ([`IdleSwitch::claim_exit`]), and nothing can reach the manager any more.
///
/// [`Worker::run`]: crate::Worker::run
pub(crate) fn spawn(
    interval: Duration,
    outbox: Outbox,
    stats: Arc<Stats>,
    idle: Option<IdleSwitch>,
) -> std::io::Result<HeartbeatGuard> {
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("cortex-heartbeat".into())
        .spawn(move || {
            // Disconnected (the guard dropped) ends the loop; so would a message.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let beat =
                    Heartbeat::new(rss_bytes(), cpu_ms(), stats.tasks_done(), stats.in_flight());
                outbox.send_heartbeat(&FromWorker::Heartbeat(beat));
                if outbox.is_broken() && idle.as_ref().is_some_and(IdleSwitch::claim_exit) {
                    std::process::exit(0);
                }
            }
        })?;
    Ok(HeartbeatGuard { _stop: stop })
}

/// Resident set size in bytes, from `VmRSS` in `/proc/self/status` (0 when unknown).
///
/// `status` gives kibibytes, which spares us the page size `statm` would need.
pub(crate) fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// Linux reports `/proc` CPU times in `USER_HZ` ticks, which the kernel ABI fixes at
/// 100 per second on every mainstream architecture.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time of the whole process in milliseconds, from
/// `/proc/self/stat` (0 when unknown).
pub(crate) fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may contain spaces and parentheses: parse after the
    // last ')'. From there, field 3 (state) is index 0, so utime (14) is index 11.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return 0;
    };
    let mut fields = fields.split_whitespace().skip(11);
    let ticks = |f: Option<&str>| f.and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    let utime = ticks(fields.next());
    let stime = ticks(fields.next());
    utime.saturating_add(stime).saturating_mul(1000) / TICKS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vitals_of_this_process_are_read() {
        assert!(rss_bytes() > 0, "a running process has resident memory");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ms() > 0, "100 ms of spinning shows as CPU time");
    }
}
