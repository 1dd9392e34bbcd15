//! The header: health and why (or that the numbers are stale), workers
//! ready/target, the restart breaker, queue, retries (the task store's, or the
//! pool's over the last minute), the dead-letter queue.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use pool_core::HealthStatus;

use super::format;
use crate::daemon::health_view::ACTIVE_MS;
use crate::top::app::App;
use crate::top::source::{QueuePart, SharedQueue, Snapshot, StoreRows};

/// Rows the header wants.
pub(super) const HEIGHT: u16 = 3;

/// Draws the header in `area`, one line per row (cut at the right edge: every
/// alert is also in the log panel).
pub(super) fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    frame.render_widget(Paragraph::new(lines(app)), area);
}

/// The header's lines.
pub(super) fn lines(app: &App) -> Vec<Line<'static>> {
    let Some(s) = &app.snapshot else {
        let why = app.error.clone().unwrap_or_else(|| "connecting…".into());
        return vec![
            Line::from(vec![title(), Span::styled(" no data ", bad())]),
            Line::from(why),
        ];
    };
    if let Some(queue) = &s.shared_queue {
        return queue_lines(app, s, queue);
    }
    let m = &s.metrics;
    let breaker = if m.health.restart_breaker_open {
        Span::styled("OPEN", bad())
    } else {
        Span::raw("closed")
    };
    let mut first = vec![
        Span::raw(" "),
        badge(app, m.health.status),
        Span::raw(format!(
            " workers {}/{} ready ({} live) │ breaker ",
            m.workers.ready, m.pool.target_size, m.workers.total
        )),
        breaker,
        Span::raw(format!(" │ up {}", format::age(s.uptime_ms))),
    ];
    if m.pool.shutting_down {
        first.push(Span::styled(" │ SHUTTING DOWN", bad()));
    }
    let label = if m.health.status == HealthStatus::Healthy {
        " alerts (5 min): "
    } else {
        " why: "
    };
    let second = second_line(app, s, label);
    let third = match &s.store {
        Some(store) => store_counts(s, store),
        None => pool_counts(s, app.history.last_minute().retried),
    };
    vec![Line::from(first), second, third]
}

/// The third line from the pool's own counts (no task store in the reply):
/// its queue, retries scheduled in the last minute, failed tasks.
fn pool_counts(s: &Snapshot, retried: u64) -> Line<'static> {
    let m = &s.metrics;
    Line::from(vec![
        Span::raw(format!(
            " queue {}{} │ in flight {} │ retried {retried} /1m │ ",
            m.tasks.queued,
            queue_parts(&m.queue),
            m.tasks.in_flight,
        )),
        dlq_span(m.tasks.dlq),
        Span::raw(format!(
            " │ done {} │ failed {}",
            m.tasks.completed, m.tasks.failed
        )),
    ])
}

/// The third line of a daemon with a task store: the queue is its backlog
/// with the tasks claimed and still waiting in the pool, retrying and failed
/// are tasks in the store (the pool runs attempts, with no retries of its own).
fn store_counts(s: &Snapshot, store: &StoreRows) -> Line<'static> {
    let m = &s.metrics;
    Line::from(vec![
        Span::raw(format!(
            " queue {}{} │ in flight {} │ retrying {} │ ",
            store.queued.saturating_add(m.tasks.queued),
            queue_parts(&m.queue),
            m.tasks.in_flight,
            store.retrying
        )),
        dlq_span(m.tasks.dlq),
        Span::raw(format!(
            " │ done {} │ failed {}",
            m.tasks.completed, store.failed
        )),
    ])
}

/// The second line: why the numbers are old when the last refresh failed,
/// else `label` and the reasons, or "nothing wrong".
fn second_line(app: &App, s: &Snapshot, label: &'static str) -> Line<'static> {
    match &app.error {
        Some(error) => stale_line(app, s, error),
        None => why_line(label, &reasons(s, app.wall_ms)),
    }
}

/// `label` and the reasons, or "nothing wrong".
fn why_line(label: &'static str, why: &[String]) -> Line<'static> {
    if why.is_empty() {
        Line::from(" why: nothing wrong")
    } else {
        Line::from(vec![
            Span::raw(label),
            Span::styled(why.join("; "), Style::default().fg(Color::Yellow)),
        ])
    }
}

/// What failed to answer, why, and how old the numbers shown are.
fn stale_line(app: &App, s: &Snapshot, error: &str) -> Line<'static> {
    let who = if s.shared_queue.is_some() {
        "queue"
    } else {
        "daemon"
    };
    Line::from(Span::styled(
        format!(
            " {who} not answering: {error}; last seen {} ago",
            format::age(app.wall_ms.saturating_sub(app.seen_ms))
        ),
        bad(),
    ))
}

/// `DLQ n`, in the warning colour when there is any.
fn dlq_span(dlq: u64) -> Span<'static> {
    let style = if dlq > 0 { warn() } else { Style::default() };
    Span::styled(format!("DLQ {dlq}"), style)
}

/// The header when watching the shared queue: its state, what waits, what the
/// daemons hold, the dead letters.
fn queue_lines(app: &App, s: &Snapshot, queue: &SharedQueue) -> Vec<Line<'static>> {
    let m = &s.metrics;
    let link = if queue.connected {
        Span::raw("connected")
    } else {
        Span::styled("DISCONNECTED", bad())
    };
    let first = Line::from(vec![
        Span::raw(" "),
        badge(app, m.health.status),
        Span::raw(format!(" shared queue {} │ ", queue.url)),
        link,
        Span::raw(format!(" │ watched {}", format::age(s.uptime_ms))),
    ]);
    let second = second_line(app, s, " why: ");
    let dlq = dlq_span(m.tasks.dlq);
    let third = Line::from(vec![
        Span::raw(format!(
            " waiting {} │ held by daemons {} │ ",
            m.tasks.queued, m.tasks.in_flight
        )),
        dlq,
        Span::raw(" │ workers: run top on a daemon"),
    ]);
    vec![first, second, third]
}

/// Where the queued tasks wait, non-empty parts only: ` (high 2, normal 5,
/// retrying 1)`; nothing for an empty queue.
fn queue_parts(q: &QueuePart) -> String {
    let parts: Vec<String> = [
        ("high", q.by_priority.high),
        ("normal", q.by_priority.normal),
        ("low", q.by_priority.low),
        ("retrying", q.retrying),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{name} {n}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Why the pool is not healthy, most serious first (the rules of
/// `pool_core::PoolMetrics`' health status), then the active alerts.
pub(super) fn reasons(s: &Snapshot, wall_ms: u64) -> Vec<String> {
    let h = &s.metrics.health;
    let mut why = Vec::new();
    if h.status == HealthStatus::Failed {
        why.push(format!(
            "pool failed: {}",
            h.failure.as_deref().unwrap_or("no reason given")
        ));
    }
    if let Some(queue) = s.shared_queue.as_ref().filter(|q| !q.connected) {
        why.push(format!("disconnected from {} (reconnecting)", queue.url));
    }
    if h.restart_breaker_open {
        why.push("restart breaker open: workers keep failing to start".to_owned());
    }
    let outcomes = s.outcomes;
    if outcomes.unrecorded > 0 {
        why.push(format!(
            "{} outcomes not recorded ({} refused by the task source)",
            outcomes.unrecorded, outcomes.refused
        ));
    }
    let (healthy, target) = (h.capacity.healthy, h.capacity.total);
    if healthy * 2 < target {
        why.push(format!("only {healthy} of {target} workers healthy"));
    } else if healthy * 5 < target * 4 {
        why.push(format!("capacity {}% < 80%", h.capacity.capacity_percent));
    }
    if h.alerts.critical > 0 {
        why.push(format!("{} critical alert(s) in 5 min", h.alerts.critical));
    }
    let active = s
        .alerts
        .iter()
        .rev()
        .filter(|a| a.timestamp + ACTIVE_MS >= wall_ms)
        .map(|a| match &a.worker_id {
            Some(w) => format!("{} {w}", a.kind),
            None => a.kind.clone(),
        });
    why.extend(active);
    why
}

/// `cortex-pool top`, in bold.
fn title() -> Span<'static> {
    Span::styled(
        " cortex-pool top ",
        Style::default().add_modifier(Modifier::BOLD),
    )
}

/// The health badge, or `STALE` (the last refresh failed: the numbers shown
/// are the last ones read).
fn badge(app: &App, status: HealthStatus) -> Span<'static> {
    if app.error.is_some() {
        let style = Style::default().fg(Color::White).bg(Color::Red);
        return Span::styled(" STALE ", style.add_modifier(Modifier::BOLD));
    }
    health(status)
}

/// The health status, coloured.
fn health(status: HealthStatus) -> Span<'static> {
    let style = match status {
        HealthStatus::Healthy => Style::default().fg(Color::Black).bg(Color::Green),
        HealthStatus::Degraded => Style::default().fg(Color::Black).bg(Color::Yellow),
        HealthStatus::Critical | HealthStatus::Failed => {
            Style::default().fg(Color::White).bg(Color::Red)
        }
    };
    Span::styled(
        format!(" {} ", status.as_str().to_uppercase()),
        style.add_modifier(Modifier::BOLD),
    )
}

/// The style of what is wrong.
fn bad() -> Style {
    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
}

/// The style of what needs a look.
fn warn() -> Style {
    Style::default().fg(Color::Yellow)
}
