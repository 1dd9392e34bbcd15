//! What successive snapshots tell that one cannot: throughput per second over the
//! last minute, counts over the last minute, and a log of what changed (workers
//! started and gone, health, breaker, target size, dead letters, new alerts).
//!
//! The rates are differences between one daemon's counters: when a new daemon
//! answers (restarted on the same socket, see [`new_daemon`]) they start over
//! from its first snapshot instead of mixing two daemons' counters.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::source::Snapshot;

/// Seconds of throughput kept (the sparkline's span).
const SPAN: usize = 60;
/// Log lines kept.
const LOG_KEPT: usize = 200;

/// How serious a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// Something happened.
    Info,
    /// Something needs a look.
    Warning,
    /// Something is wrong.
    Critical,
}

impl Severity {
    /// An alert's severity as the pool names it.
    pub(crate) fn of_alert(name: &str) -> Self {
        match name {
            "critical" => Self::Critical,
            "warning" => Self::Warning,
            _ => Self::Info,
        }
    }
}

/// One line of the alerts-and-events log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// How serious.
    pub(crate) severity: Severity,
    /// What.
    pub(crate) text: String,
}

/// The lifetime counts of one snapshot, and when it was taken.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    completed: u64,
    retried: u64,
}

/// The history of snapshots `top` has seen.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Throughput and the last minute's counts, of the daemon watched now.
    rates: Rates,
    log: VecDeque<LogLine>,
    last: Option<Snapshot>,
    /// The dead letters of the last snapshot whose figures were read (a
    /// disconnected queue's are not compared).
    dead_letters: Option<u64>,
}

/// What is measured from one daemon's counters: started over when a new
/// daemon answers.
#[derive(Debug, Default)]
struct Rates {
    /// The sample the next throughput bars are measured from.
    bucket: Option<Sample>,
    /// Where the last bar ends: one bar per whole second after it.
    bars_until: Option<Instant>,
    per_second: VecDeque<u64>,
    minute: VecDeque<Sample>,
}

/// Counts over the last minute (or since `top` started, when shorter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LastMinute {
    /// Tasks completed.
    pub(crate) completed: u64,
    /// Retries scheduled.
    pub(crate) retried: u64,
    /// The span they cover.
    pub(crate) span: Duration,
}

impl History {
    /// Takes in a snapshot taken at `now` (`wall_ms`: the same instant on the
    /// wall clock, for log lines).
    pub(crate) fn observe(&mut self, now: Instant, wall_ms: u64, snapshot: &Snapshot) {
        let lines = match &self.last {
            None => first_lines(snapshot),
            Some(last) => match new_daemon(last, snapshot) {
                Some(line) => {
                    // Nothing of the last daemon's counters is measured against
                    // the new one's.
                    // (Dead letters are a count of what the queue holds, not
                    // a counter: a store's survive a restart and are compared.)
                    self.rates = Rates::default();
                    let mut lines = vec![(Severity::Warning, line)];
                    lines.extend(first_lines(snapshot));
                    lines
                }
                None => changes(last, snapshot),
            },
        };
        self.rates.observe(now, snapshot);
        for (severity, text) in lines {
            self.push(wall_ms, severity, text);
        }
        if snapshot.figures_known() {
            let dlq = snapshot.metrics.tasks.dlq;
            if let Some(before) = self.dead_letters.filter(|before| dlq > *before) {
                self.push(
                    wall_ms,
                    Severity::Warning,
                    format!("{} new dead letter(s), {dlq} now", dlq - before),
                );
            }
            self.dead_letters = Some(dlq);
        }
        self.last = Some(snapshot.clone());
    }

    /// Adds a line to the log (also used for the outcome of actions).
    pub(crate) fn push(&mut self, at_ms: u64, severity: Severity, text: String) {
        if self.log.len() == LOG_KEPT {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            at_ms,
            severity,
            text,
        });
    }

    /// Tasks completed per second, one value per second, oldest first.
    pub(crate) fn throughput(&self) -> Vec<u64> {
        self.rates.per_second.iter().copied().collect()
    }

    /// The counts over the last minute.
    pub(crate) fn last_minute(&self) -> LastMinute {
        self.rates.last_minute()
    }

    /// The log, oldest first.
    pub(crate) fn log(&self) -> impl DoubleEndedIterator<Item = &LogLine> + ExactSizeIterator {
        self.log.iter()
    }
}

impl Rates {
    /// Takes in the counters of a snapshot taken at `now`.
    fn observe(&mut self, now: Instant, snapshot: &Snapshot) {
        let tasks = &snapshot.metrics.tasks;
        let sample = Sample {
            at: now,
            completed: tasks.completed,
            retried: tasks.retried,
        };
        self.add_bars(sample);
        self.minute.push_back(sample);
        while self
            .minute
            .get(1)
            .is_some_and(|s| now.duration_since(s.at) >= Duration::from_secs(SPAN as u64))
        {
            self.minute.pop_front();
        }
    }

    /// Adds one bar per whole second since the last bar, each the rate
    /// measured since the bucket's sample, once that covers a second or more
    /// (a refresh covering k seconds adds k bars of its rate; refreshes under a
    /// second apart add up to one).
    fn add_bars(&mut self, sample: Sample) {
        let (Some(start), Some(until)) = (self.bucket, self.bars_until) else {
            self.bucket = Some(sample);
            self.bars_until = Some(sample.at);
            return;
        };
        let whole = sample.at.duration_since(until).as_secs();
        let secs = sample.at.duration_since(start.at).as_secs_f64();
        if whole == 0 || secs < 1.0 {
            return;
        }
        let done = sample.completed.saturating_sub(start.completed) as f64;
        let rate = (done / secs).round() as u64;
        for _ in 0..whole.min(SPAN as u64) {
            if self.per_second.len() == SPAN {
                self.per_second.pop_front();
            }
            self.per_second.push_back(rate);
        }
        self.bucket = Some(sample);
        self.bars_until = Some(until + Duration::from_secs(whole));
    }

    /// The counts over the last minute.
    fn last_minute(&self) -> LastMinute {
        let (Some(first), Some(last)) = (self.minute.front(), self.minute.back()) else {
            return LastMinute::default();
        };
        LastMinute {
            completed: last.completed.saturating_sub(first.completed),
            retried: last.retried.saturating_sub(first.retried),
            span: last.at.duration_since(first.at),
        }
    }
}

/// Whether `now` comes from another daemon than `before` (restarted on the
/// same socket): the log line that says so. Each daemon's `instance` names it
/// for its whole life; from daemons that do not say, a new pid, an uptime that
/// went down or a completed count that went down tells (one daemon's never do).
/// Never for the shared queue (no daemon).
fn new_daemon(before: &Snapshot, now: &Snapshot) -> Option<String> {
    let (Some(b), Some(n)) = (&before.daemon, &now.daemon) else {
        return None;
    };
    let new = if b.instance.is_some() || n.instance.is_some() {
        b.instance != n.instance
    } else {
        b.pid != n.pid
            || now.uptime_ms < before.uptime_ms
            || now.metrics.tasks.completed < before.metrics.tasks.completed
    };
    new.then(|| {
        format!(
            "a new daemon answers ({}): throughput and counts start over",
            pids(b.pid, n.pid)
        )
    })
}

/// `pid A → B`, or `pid A again` when a new process got the old one's.
fn pids(before: u32, now: u32) -> String {
    if before == now {
        format!("pid {now} again")
    } else {
        format!("pid {before} → {now}")
    }
}

fn first_lines(now: &Snapshot) -> Vec<(Severity, String)> {
    let mut lines: Vec<_> = now
        .alerts
        .iter()
        .map(|a| (Severity::of_alert(&a.severity), alert_text(a)))
        .collect();
    lines.push((
        Severity::Info,
        format!(
            "watching: {} workers, health {}",
            now.workers.len(),
            now.metrics.health.status
        ),
    ));
    lines
}

fn changes(before: &Snapshot, now: &Snapshot) -> Vec<(Severity, String)> {
    let mut lines = Vec::new();
    let (b, n) = (&before.metrics, &now.metrics);
    let seen: HashSet<&str> = before.alerts.iter().map(|a| a.id.as_str()).collect();
    for alert in now.alerts.iter().filter(|a| !seen.contains(a.id.as_str())) {
        lines.push((Severity::of_alert(&alert.severity), alert_text(alert)));
    }
    if b.health.status != n.health.status {
        let severity = match n.health.status {
            pool_core::HealthStatus::Critical | pool_core::HealthStatus::Failed => {
                Severity::Critical
            }
            pool_core::HealthStatus::Degraded => Severity::Warning,
            pool_core::HealthStatus::Healthy => Severity::Info,
        };
        lines.push((
            severity,
            format!("health {} → {}", b.health.status, n.health.status),
        ));
    }
    match (b.health.restart_breaker_open, n.health.restart_breaker_open) {
        (false, true) => lines.push((
            Severity::Critical,
            "restart breaker opened: workers keep failing to start".into(),
        )),
        (true, false) => lines.push((Severity::Info, "restart breaker closed".into())),
        _ => {}
    }
    if b.pool.target_size != n.pool.target_size {
        lines.push((
            Severity::Info,
            format!(
                "target size {} → {}",
                b.pool.target_size, n.pool.target_size
            ),
        ));
    }
    let old: HashSet<&str> = before.workers.iter().map(|w| w.id.as_str()).collect();
    let new: HashSet<&str> = now.workers.iter().map(|w| w.id.as_str()).collect();
    // A worker's name is never given to another (the pool numbers them in
    // turn): a name not seen before is a new worker.
    for w in now.workers.iter().filter(|w| !old.contains(w.id.as_str())) {
        lines.push((Severity::Info, format!("{} started (pid {})", w.id, w.pid)));
    }
    for w in before
        .workers
        .iter()
        .filter(|w| !new.contains(w.id.as_str()))
    {
        lines.push((Severity::Info, format!("{} gone (pid {})", w.id, w.pid)));
    }
    lines
}

fn alert_text(alert: &super::source::Alert) -> String {
    match &alert.worker_id {
        Some(worker) => format!("alert {} {worker}: {}", alert.kind, alert.message),
        None => format!("alert {}: {}", alert.kind, alert.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::source::{Alert, DaemonId, Worker};

    fn snapshot(completed: u64, workers: &[&str]) -> Snapshot {
        let mut s = Snapshot::default();
        s.metrics.tasks.completed = completed;
        s.metrics.health.status = pool_core::HealthStatus::Healthy;
        s.workers = workers
            .iter()
            .map(|id| Worker {
                id: (*id).into(),
                ..Worker::default()
            })
            .collect();
        s
    }

    #[test]
    fn throughput_is_per_second_and_the_minute_counts_span_sixty_seconds() {
        let mut h = History::default();
        let t0 = Instant::now();
        for i in 0..=70u64 {
            h.observe(t0 + Duration::from_secs(i), 0, &snapshot(i * 100, &[]));
        }
        let series = h.throughput();
        assert_eq!(series.len(), SPAN);
        assert!(series.iter().all(|&v| v == 100), "{series:?}");
        let minute = h.last_minute();
        assert_eq!(minute.span, Duration::from_secs(60));
        assert_eq!(minute.completed, 6_000);
    }

    #[test]
    fn a_refresh_covering_five_seconds_adds_five_bars_of_its_rate() {
        let mut h = History::default();
        let t0 = Instant::now();
        let mut completed = 0;
        for i in 0..=12u64 {
            h.observe(
                t0 + Duration::from_secs(i * 5),
                0,
                &snapshot(completed, &[]),
            );
            completed += if i < 6 { 500 } else { 1_000 };
        }
        let series = h.throughput();
        assert_eq!(series.len(), SPAN, "60 s of bars: {series:?}");
        assert!(series[..30].iter().all(|&v| v == 100), "{series:?}");
        assert!(series[30..].iter().all(|&v| v == 200), "{series:?}");
    }

    #[test]
    fn changes_become_log_lines() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.observe(t0, 0, &snapshot(0, &["worker-1", "worker-2"]));
        let mut next = snapshot(0, &["worker-2", "worker-3"]);
        next.metrics.health.status = pool_core::HealthStatus::Critical;
        next.metrics.health.restart_breaker_open = true;
        next.alerts.push(Alert {
            id: "alert-1".into(),
            severity: "critical".into(),
            kind: "zombie-detected".into(),
            worker_id: Some("worker-1".into()),
            message: "no heartbeat".into(),
            timestamp: 0,
        });
        h.observe(t0 + Duration::from_millis(100), 0, &next);
        let texts: Vec<_> = h.log().map(|l| l.text.as_str()).collect();
        for expected in [
            "alert zombie-detected worker-1: no heartbeat",
            "health healthy → critical",
            "restart breaker opened: workers keep failing to start",
            "worker-3 started (pid 0)",
            "worker-1 gone (pid 0)",
        ] {
            assert!(texts.contains(&expected), "{expected:?} not in {texts:?}");
        }
    }

    /// A snapshot of the daemon named `instance` (none: a daemon that does
    /// not say) with pid `pid`, up `uptime_s` seconds, having completed
    /// `completed` tasks.
    fn daemon(instance: Option<&str>, pid: u32, uptime_s: u64, completed: u64) -> Snapshot {
        let mut s = snapshot(completed, &["worker-0"]);
        s.daemon = Some(DaemonId {
            pid,
            instance: instance.map(str::to_owned),
        });
        s.uptime_ms = uptime_s * 1000;
        s
    }

    fn texts(h: &History) -> Vec<&str> {
        h.log().map(|l| l.text.as_str()).collect()
    }

    /// A daemon restarted under the same pid (a container's first process)
    /// whose counters start higher than the last daemon's (restored, or just
    /// a busy start): only its name tells, and nothing is measured across.
    #[test]
    fn a_new_daemon_starts_throughput_and_counts_over() {
        let mut h = History::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for i in 0..=10u64 {
            h.observe(at(i), 0, &daemon(Some("a"), 100, 20 + i, i * 100));
        }
        assert_eq!(h.last_minute().completed, 1_000);
        // Down for a while; the new one is up 40 s when it first answers.
        for (i, s) in [(0u64, 20u64), (1, 21), (2, 22)] {
            h.observe(at(s), 0, &daemon(Some("b"), 100, 40 + i, 4_000 + i * 50));
        }
        let restart = "a new daemon answers (pid 100 again): throughput and counts start over";
        let log = texts(&h);
        assert_eq!(
            log.iter().filter(|t| **t == restart).count(),
            1,
            "{restart:?} once in {log:?}"
        );
        let after = &log[log.iter().position(|t| *t == restart).unwrap_or(0)..];
        assert!(
            after.contains(&"watching: 1 workers, health healthy"),
            "{after:?}"
        );
        assert_eq!(
            h.last_minute(),
            LastMinute {
                completed: 100,
                retried: 0,
                span: Duration::from_secs(2),
            }
        );
        assert_eq!(h.throughput(), [50, 50]);
    }

    #[test]
    fn without_a_name_a_new_pid_or_an_uptime_or_count_gone_down_tells_a_new_daemon() {
        let t0 = Instant::now();
        let first = daemon(None, 100, 50, 1_000);
        for (then, why) in [
            (daemon(None, 200, 60, 2_000), "pid 100 → 200"),
            (daemon(None, 100, 10, 2_000), "pid 100 again"),
            (daemon(None, 100, 60, 10), "pid 100 again"),
        ] {
            let mut h = History::default();
            h.observe(t0, 0, &first);
            h.observe(t0 + Duration::from_secs(1), 0, &then);
            let line = format!("a new daemon answers ({why}): throughput and counts start over");
            assert!(
                texts(&h).contains(&line.as_str()),
                "{line:?} not in {:?}",
                texts(&h)
            );
            assert_eq!(h.last_minute().completed, 0);
        }
    }

    #[test]
    fn the_same_daemon_is_not_taken_for_a_new_one() {
        let t0 = Instant::now();
        for instance in [Some("a"), None] {
            let mut h = History::default();
            h.observe(t0, 0, &daemon(instance, 100, 50, 1_000));
            h.observe(
                t0 + Duration::from_secs(1),
                0,
                &daemon(instance, 100, 51, 1_100),
            );
            assert!(
                !texts(&h).iter().any(|t| t.contains("new daemon")),
                "{:?}",
                texts(&h)
            );
            assert_eq!(h.last_minute().completed, 100);
        }
    }

    /// The shared queue has no daemon: its watched time and counts are never
    /// taken for a restart.
    #[test]
    fn the_shared_queue_is_never_a_new_daemon() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.observe(t0, 0, &Snapshot::watched_queue(true, 2));
        h.observe(
            t0 + Duration::from_secs(1),
            0,
            &Snapshot::watched_queue(true, 1),
        );
        assert!(!texts(&h).iter().any(|t| t.contains("new daemon")));
    }

    fn dead_letter_lines(h: &History) -> Vec<String> {
        h.log()
            .filter(|l| l.text.contains("dead letter"))
            .map(|l| l.text.clone())
            .collect()
    }

    #[test]
    fn dead_letters_are_not_compared_across_a_disconnected_snapshot() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.observe(t0, 0, &Snapshot::watched_queue(true, 2));
        h.observe(
            t0 + Duration::from_secs(1),
            0,
            &Snapshot::watched_queue(false, 0),
        );
        h.observe(
            t0 + Duration::from_secs(2),
            0,
            &Snapshot::watched_queue(true, 2),
        );
        assert_eq!(dead_letter_lines(&h), Vec::<String>::new());
        h.observe(
            t0 + Duration::from_secs(3),
            0,
            &Snapshot::watched_queue(false, 0),
        );
        h.observe(
            t0 + Duration::from_secs(4),
            0,
            &Snapshot::watched_queue(true, 3),
        );
        assert_eq!(dead_letter_lines(&h), ["1 new dead letter(s), 3 now"]);
    }
}
