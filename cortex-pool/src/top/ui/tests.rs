//! Render tests on ratatui's test backend: each panel, an empty pool, an open
//! breaker, 200 workers, and screens smaller than 80×24.

use std::time::{Duration, Instant};

use crate::top::actions::Outcome;
use crate::top::app::{App, DlqView, Mode, SortKey};
use crate::top::run::render_text;
use crate::top::source::{
    Alert, DaemonId, DeadLetter, DeadLetterError, DeadLetters, Outcomes, SharedQueue, Snapshot,
    StoreRows, Worker,
};

const NOW_MS: u64 = 1_700_000_000_000;

fn pool(workers: usize) -> Snapshot {
    let mut s = Snapshot {
        uptime_ms: 3_723_000,
        ..Snapshot::default()
    };
    let m = &mut s.metrics;
    m.pool.target_size = workers as u64;
    m.workers.total = workers as u64;
    m.workers.ready = workers as u64;
    m.health.status = pool_core::HealthStatus::Healthy;
    m.health.capacity.total = workers as u64;
    m.health.capacity.healthy = workers as u64;
    m.health.capacity.capacity_percent = 100;
    s.workers = (0..workers)
        .map(|i| Worker {
            id: format!("worker-{i}"),
            pid: 1000 + i as u32,
            state: "ready".into(),
            tasks_done: i as u64 * 10,
            rss_bytes: 20 << 20,
            last_heard_ms: 150,
            slot: Some(i as u32),
            uptime_ms: 60_000,
            ..Worker::default()
        })
        .collect();
    s
}

fn app_with(snapshot: Snapshot) -> App {
    let mut app = App::new(1000);
    app.refreshed(Instant::now(), NOW_MS, Ok(snapshot));
    app
}

fn screen(app: &App, width: u16, height: u16) -> String {
    let text = render_text(app, width, height);
    assert_eq!(text.lines().count(), usize::from(height), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= usize::from(width),
            "{line:?} is wider than {width}"
        );
    }
    text
}

fn assert_shows(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "{e:?} not on the screen:\n{text}");
    }
}

#[test]
fn an_empty_pool_shows_every_panel_at_80x24() {
    let text = screen(&app_with(pool(0)), 80, 24);
    assert_shows(
        &text,
        &[
            " HEALTHY ",
            "workers 0/0 ready (0 live)",
            "breaker closed",
            "up 1h02m",
            "why: nothing wrong",
            "queue 0 │ in flight 0 │ retried 0 /1m │ DLQ 0",
            "throughput: measuring",
            "wait",
            "workers 0 │ sort name ↑",
            "NAME",
            "alerts & events",
            "watching: 0 workers, health healthy",
            "q quit",
        ],
    );
}

#[test]
fn an_open_breaker_and_active_alerts_explain_the_health() {
    let mut s = pool(4);
    let h = &mut s.metrics.health;
    h.status = pool_core::HealthStatus::Critical;
    h.restart_breaker_open = true;
    h.alerts.total = 2;
    h.alerts.critical = 1;
    s.metrics.tasks.dlq = 3;
    s.alerts = vec![
        Alert {
            id: "alert-1".into(),
            severity: "warning".into(),
            kind: "high-memory".into(),
            worker_id: Some("worker-1".into()),
            message: "rss 900M".into(),
            timestamp: NOW_MS - 3_600_000,
        },
        Alert {
            id: "alert-2".into(),
            severity: "critical".into(),
            kind: "restart-breaker-open".into(),
            worker_id: None,
            message: "5 failed starts in 60 s".into(),
            timestamp: NOW_MS - 10_000,
        },
    ];
    let app = app_with(s);
    let text = screen(&app, 80, 24);
    assert_shows(
        &text,
        &[
            " CRITICAL ",
            "breaker OPEN",
            "why: restart breaker open: workers keep failing to start; 1 critical alert(s) i",
            "DLQ 3",
            "alert restart-breaker-open: 5 failed starts in 60 s",
        ],
    );
    let wide = screen(&app, 200, 24);
    let why = wide.lines().nth(1).unwrap_or_default();
    assert!(
        why.ends_with("; 1 critical alert(s) in 5 min; restart-breaker-open"),
        "the whole line shows on a wide screen: {why}"
    );
    assert!(
        !why.contains("high-memory"),
        "an hour-old alert is not a reason: {why}"
    );
}

#[test]
fn the_queue_shows_its_priority_bands_and_retries() {
    let mut s = pool(2);
    s.metrics.tasks.queued = 9;
    s.metrics.queue.by_priority.high = 2;
    s.metrics.queue.by_priority.low = 6;
    s.metrics.queue.retrying = 1;
    let text = screen(&app_with(s), 80, 24);
    assert_shows(
        &text,
        &["queue 9 (high 2, low 6, retrying 1) │ in flight 0"],
    );
}

#[test]
fn watching_the_shared_queue_shows_its_state_and_why_when_disconnected() {
    let mut s = pool(0);
    s.metrics.tasks.queued = 120;
    s.metrics.tasks.in_flight = 16;
    s.metrics.tasks.dlq = 2;
    s.shared_queue = Some(SharedQueue {
        url: "nats://127.0.0.1:4222".into(),
        connected: true,
    });
    let text = screen(&app_with(s.clone()), 80, 24);
    assert_shows(
        &text,
        &[
            " HEALTHY  shared queue nats://127.0.0.1:4222 │ connected",
            "why: nothing wrong",
            "waiting 120 │ held by daemons 16 │ DLQ 2",
        ],
    );
    s.metrics.health.status = pool_core::HealthStatus::Critical;
    s.shared_queue = Some(SharedQueue {
        url: "nats://127.0.0.1:4222".into(),
        connected: false,
    });
    let text = screen(&app_with(s), 80, 24);
    assert_shows(
        &text,
        &[
            "DISCONNECTED",
            "why: disconnected from nats://127.0.0.1:4222 (reconnecting)",
        ],
    );
}

#[test]
fn two_hundred_workers_scroll_and_sort() {
    let mut app = app_with(pool(200));
    let text = screen(&app, 80, 24);
    assert_shows(
        &text,
        &["workers 200", "1-8 of 200", "worker-0 ", "worker-7 "],
    );
    assert!(!text.contains("worker-8 "), "{text}");
    app.scroll = 1_000;
    assert_shows(&screen(&app, 80, 24), &["193-200 of 200", "worker-199"]);
    app.scroll = 0;
    app.sort = SortKey::Done;
    app.descending = true;
    let text = screen(&app, 80, 24);
    assert_shows(&text, &["sort done ↓", "worker-199", "1990"]);
    app.filter = "worker-12".into();
    assert_shows(&screen(&app, 80, 24), &["/worker-12 → 11", "worker-129"]);
}

#[test]
fn throughput_and_latency_fill_the_activity_panel() {
    let mut app = App::new(100);
    let t0 = Instant::now();
    for i in 0..=5u64 {
        let mut s = pool(2);
        s.metrics.tasks.completed = i * 250;
        s.metrics.latency.queue_wait.recent.count = 10;
        s.metrics.latency.queue_wait.recent.p50_ms = 0.12;
        s.metrics.latency.queue_wait.recent.p99_ms = 3.5;
        s.metrics.latency.run_time.recent.count = 10;
        s.metrics.latency.run_time.recent.p95_ms = 42.0;
        app.refreshed(t0 + Duration::from_secs(i), NOW_MS, Ok(s));
    }
    let text = screen(&app, 80, 24);
    assert_shows(
        &text,
        &[
            "throughput 250/s │ 1250 done in 5s",
            "p50",
            "p99",
            "0.12ms",
            "3.50ms",
            "42.0ms",
        ],
    );
}

/// A daemon restarted on the socket between two refreshes (one that failed
/// in between): the throughput panel measures the new daemon alone, and the
/// log says why it started over.
#[test]
fn a_restarted_daemon_is_measured_on_its_own_and_logged() {
    let mut app = App::new(1000);
    let t0 = Instant::now();
    let daemon = |instance: &str, pid: u32, completed: u64| {
        let mut s = pool(2);
        s.daemon = Some(DaemonId {
            pid,
            instance: Some(instance.into()),
        });
        s.metrics.tasks.completed = completed;
        s
    };
    for i in 0..=5u64 {
        let at = t0 + Duration::from_secs(i);
        app.refreshed(at, NOW_MS, Ok(daemon("a", 4242, 10_000 + i * 250)));
    }
    let gone = Err("cannot reach the daemon".to_owned());
    app.refreshed(t0 + Duration::from_secs(6), NOW_MS, gone);
    app.refreshed(
        t0 + Duration::from_secs(7),
        NOW_MS,
        Ok(daemon("b", 4313, 0)),
    );
    let text = screen(&app, 80, 24);
    assert_shows(
        &text,
        &[
            "throughput: measuring…",
            "a new daemon answers (pid 4242 → 4313)",
        ],
    );
    for i in 1..=2u64 {
        let at = t0 + Duration::from_secs(7 + i);
        app.refreshed(at, NOW_MS, Ok(daemon("b", 4313, i * 40)));
    }
    assert_shows(&screen(&app, 80, 24), &["throughput 40/s │ 80 done in 2s"]);
}

#[test]
fn the_footer_prompts_and_the_overlays_draw() {
    let mut app = app_with(pool(2));
    app.mode = Mode::Scale("12".into());
    assert_shows(&screen(&app, 80, 24), &["scale to:", "12_", "Enter apply"]);
    app.mode = Mode::Help;
    assert_shows(
        &screen(&app, 80, 24),
        &["keys", "rolling restart", "filter workers"],
    );
    app.mode = Mode::Dlq(DlqView::Loading);
    assert_shows(&screen(&app, 80, 24), &["dead letters: loading"]);
    let entry = DeadLetter {
        id: "42".into(),
        task_type: "fail".into(),
        attempts: 4,
        error: Some(DeadLetterError {
            kind: "task".into(),
            message: "boom".into(),
        }),
    };
    app.outcome(Outcome::DeadLetters(Ok(DeadLetters {
        entries: vec![entry.clone()],
        more: false,
        left_out: Vec::new(),
    })));
    assert_shows(
        &screen(&app, 80, 24),
        &["dead letters: 1", "42 fail", "4× task: boom"],
    );
    app.outcome(Outcome::DeadLetters(Ok(DeadLetters {
        entries: vec![entry],
        more: true,
        left_out: Vec::new(),
    })));
    assert_shows(&screen(&app, 80, 24), &["dead letters: the oldest 1 shown"]);
    app.mode = Mode::Normal;
    app.outcome(Outcome::Failed(
        "scale to 99 refused: invalid: too big".into(),
    ));
    assert_shows(&screen(&app, 80, 24), &["scale to 99 refused"]);
}

#[test]
fn an_unreachable_daemon_says_why() {
    let mut app = App::new(500);
    app.refreshed(
        Instant::now(),
        NOW_MS,
        Err("cannot reach the daemon at /x.sock".into()),
    );
    let text = screen(&app, 80, 24);
    assert_shows(
        &text,
        &[
            "no data",
            "cannot reach the daemon at /x.sock",
            "retrying every 500 ms",
        ],
    );
}

#[test]
fn smaller_screens_drop_panels_then_keep_only_the_header() {
    let app = app_with(pool(3));
    let medium = screen(&app, 60, 14);
    assert_shows(&medium, &["workers 3", "NAME", "STATE", "worker-2"]);
    assert!(
        !medium.contains("RSS"),
        "narrow screens drop columns:\n{medium}"
    );
    assert!(!medium.contains("alerts & events"), "{medium}");
    assert!(!medium.contains("throughput"), "{medium}");
    let tiny = screen(&app, 30, 6);
    assert_shows(&tiny, &["HEALTHY"]);
    assert!(!tiny.contains("NAME"), "{tiny}");
    for (w, h) in [(1, 1), (10, 2), (39, 7), (80, 1)] {
        screen(&app, w, h);
    }
}

#[test]
fn a_daemon_with_a_task_store_shows_the_stores_backlog_retries_and_failures() {
    let mut s = pool(2);
    let t = &mut s.metrics.tasks;
    t.queued = 64;
    t.in_flight = 2;
    t.completed = 5;
    t.failed = 9;
    t.retried = 4;
    s.store = Some(StoreRows {
        queued: 100_000,
        retrying: 3,
        failed: 1,
    });
    let text = screen(&app_with(s), 80, 24);
    assert_shows(
        &text,
        &["queue 100064 │ in flight 2 │ retrying 3 │ DLQ 0 │ done 5 │ failed 1"],
    );
    assert!(!text.contains("retried"), "{text}");
}

/// A daemon's queue is broken down by priority band as a pool's is.
#[test]
fn a_daemons_queue_shows_its_priority_bands() {
    let mut s = pool(2);
    s.metrics.tasks.queued = 4;
    s.metrics.queue.by_priority.high = 9;
    s.metrics.queue.by_priority.low = 5;
    s.store = Some(StoreRows {
        queued: 10,
        retrying: 0,
        failed: 0,
    });
    let text = screen(&app_with(s), 80, 24);
    assert_shows(&text, &["queue 14 (high 9, low 5) │ in flight 0"]);
}

#[test]
fn a_failed_refresh_marks_the_header_stale_until_one_works() {
    let mut app = app_with(pool(2));
    app.mode = Mode::Scale("3".into());
    app.refreshed(
        Instant::now(),
        NOW_MS + 12_000,
        Err("the daemon did not answer within 2s".into()),
    );
    let text = screen(&app, 80, 24);
    assert_shows(
        &text,
        &[
            " STALE  workers 2/2 ready",
            "daemon not answering: the daemon did not answer within 2s; last seen 12s ago",
            "scale to:",
        ],
    );
    assert!(!text.contains("HEALTHY"), "{text}");
    app.refreshed(Instant::now(), NOW_MS + 13_000, Ok(pool(2)));
    let text = screen(&app, 80, 24);
    assert_shows(&text, &[" HEALTHY ", "why: nothing wrong"]);
    assert!(!text.contains("STALE"), "{text}");
}

#[test]
fn outcomes_the_daemon_has_not_recorded_say_why() {
    let mut s = pool(2);
    s.outcomes = Outcomes {
        unrecorded: 5,
        refused: 2,
    };
    let text = screen(&app_with(s), 100, 24);
    assert_shows(
        &text,
        &["5 outcomes not recorded (2 refused by the task source)"],
    );
}

#[test]
fn a_failed_pool_says_why() {
    let mut s = pool(2);
    s.metrics.health.status = pool_core::HealthStatus::Failed;
    s.metrics.health.failure = Some("the pool's actor panicked".into());
    let text = screen(&app_with(s), 80, 24);
    assert_shows(
        &text,
        &[" FAILED ", "why: pool failed: the pool's actor panicked"],
    );
}

#[test]
fn a_dead_letter_list_that_fails_says_why_in_its_box() {
    let mut app = app_with(pool(2));
    app.mode = Mode::Dlq(DlqView::Loading);
    app.outcome(Outcome::DeadLetters(Err(
        "cannot list the dead letters: store: disk I/O error".into(),
    )));
    assert_shows(
        &screen(&app, 80, 24),
        &[
            "dead letters: cannot list",
            "cannot list the dead letters: store: disk I/O error",
        ],
    );
    assert!(!screen(&app, 80, 24).contains("loading"));
}

#[test]
fn scrolling_stops_at_the_last_worker() {
    let mut app = app_with(pool(20));
    screen(&app, 80, 24);
    for _ in 0..5 {
        app.key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::PageDown,
        ));
    }
    assert_eq!(
        app.scroll, 12,
        "20 workers, 8 rows: the last page starts at 12"
    );
    assert_shows(&screen(&app, 80, 24), &["13-20 of 20"]);
    app.key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Up,
    ));
    assert_shows(&screen(&app, 80, 24), &["12-19 of 20"]);
}
