//! The workers table: one row per live worker, filtered and sorted as the keys
//! say; narrow terminals lose the less telling columns first.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use ratatui::Frame;

use super::format;
use crate::top::app::App;
use crate::top::source::Worker;

/// One column: heading, width, and whether it stays on a narrow screen.
struct Column {
    heading: &'static str,
    width: u16,
    essential: bool,
    cell: fn(&Worker) -> String,
}

const COLUMNS: [Column; 10] = [
    Column {
        heading: "NAME",
        width: 11,
        essential: true,
        cell: |w| w.id.clone(),
    },
    Column {
        heading: "SLOT",
        width: 4,
        essential: false,
        cell: |w| w.slot.map_or_else(|| "-".into(), |s| s.to_string()),
    },
    Column {
        heading: "PID",
        width: 7,
        essential: true,
        cell: |w| w.pid.to_string(),
    },
    Column {
        heading: "STATE",
        width: 9,
        essential: true,
        cell: |w| w.state.clone(),
    },
    Column {
        heading: "INFL",
        width: 4,
        essential: true,
        cell: |w| w.in_flight.to_string(),
    },
    Column {
        heading: "DONE",
        width: 8,
        essential: true,
        cell: |w| w.tasks_done.to_string(),
    },
    Column {
        heading: "RST",
        width: 3,
        essential: false,
        cell: |w| w.restarts.to_string(),
    },
    Column {
        heading: "RSS",
        width: 6,
        essential: false,
        cell: |w| format::bytes(w.rss_bytes),
    },
    Column {
        heading: "HB",
        width: 6,
        essential: false,
        cell: |w| format::age(w.last_heard_ms),
    },
    Column {
        heading: "AGE",
        width: 6,
        essential: false,
        cell: |w| format::age(w.uptime_ms),
    },
];

/// Draws the table in `area`.
pub(super) fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let workers = app.workers();
    let total = app.snapshot.as_ref().map_or(0, |s| s.workers.len());
    let rows_shown = usize::from(area.height.saturating_sub(2));
    app.table_rows.set(rows_shown);
    let first = app.scroll.min(workers.len().saturating_sub(rows_shown));
    let last = (first + rows_shown).min(workers.len());
    let mut title = format!(" workers {total}");
    if !app.filter.is_empty() {
        title.push_str(&format!(" │ /{} → {}", app.filter, workers.len()));
    }
    title.push_str(&format!(
        " │ sort {} {} ",
        app.sort.label(),
        if app.descending { "↓" } else { "↑" }
    ));
    if workers.len() > rows_shown {
        title.push_str(&format!("│ {}-{} of {} ", first + 1, last, workers.len()));
    }
    let full: u16 = COLUMNS.iter().map(|c| c.width + 1).sum();
    let shown: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| c.essential || area.width >= full)
        .collect();
    let header = Row::new(shown.iter().map(|c| Cell::from(c.heading)))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = workers[first..last].iter().map(|w| {
        let style = match w.state.as_str() {
            "suspect" | "killing" => Style::default().fg(Color::Red),
            "recycling" | "retiring" => Style::default().fg(Color::Yellow),
            _ => Style::default(),
        };
        Row::new(shown.iter().map(|c| Cell::from((c.cell)(w)))).style(style)
    });
    let widths: Vec<Constraint> = shown.iter().map(|c| Constraint::Length(c.width)).collect();
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title));
    frame.render_widget(table, area);
}
