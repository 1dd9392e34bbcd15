//! Throughput over the last minute (a sparkline, one bar per second) and the
//! percentiles of queue wait and run time over the pool's recent window.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline};
use ratatui::Frame;

use super::format;
use crate::top::app::App;
use crate::top::source::Percentiles;

/// Rows the panel wants (its title and three of content).
pub(super) const HEIGHT: u16 = 4;
/// Columns of the percentiles table.
const TABLE: u16 = 34;

/// Draws the panel in `area`.
pub(super) fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let series = app.history.throughput();
    let now = series.last().copied();
    let minute = app.history.last_minute();
    let title = match now {
        Some(rate) => format!(
            " throughput {rate}/s │ {} done in {}s ",
            minute.completed,
            minute.span.as_secs()
        ),
        None => " throughput: measuring… ".to_owned(),
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let table_width = TABLE.min(inner.width);
    let [spark, table] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(table_width)]).areas(inner);
    let shown = usize::from(spark.width);
    let start = series.len().saturating_sub(shown);
    frame.render_widget(Sparkline::default().data(&series[start..]), spark);
    let Some(s) = &app.snapshot else { return };
    let l = &s.metrics.latency;
    let rows = vec![
        Line::from(format!("{:<6}{:>9}{:>9}{:>9}", "", "p50", "p95", "p99")),
        row("wait", &l.queue_wait.recent),
        row("run", &l.run_time.recent),
    ];
    frame.render_widget(Paragraph::new(rows), table);
}

fn row(name: &str, p: &Percentiles) -> Line<'static> {
    if p.count == 0 {
        return Line::from(format!("{name:<6}{:>9}{:>9}{:>9}", "-", "-", "-"));
    }
    Line::from(format!(
        "{name:<6}{:>9}{:>9}{:>9}",
        format::millis(p.p50_ms),
        format::millis(p.p95_ms),
        format::millis(p.p99_ms)
    ))
}
