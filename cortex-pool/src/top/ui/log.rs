//! The last alerts and events, newest first.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::format;
use crate::top::app::App;
use crate::top::history::Severity;

/// Draws the log in `area`.
pub(super) fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let block = Block::default()
        .borders(Borders::TOP)
        .title(" alerts & events ");
    let rows = usize::from(block.inner(area).height);
    let lines: Vec<Line<'_>> = app
        .history
        .log()
        .rev()
        .take(rows)
        .map(|l| {
            let style = match l.severity {
                Severity::Info => Style::default(),
                Severity::Warning => Style::default().fg(Color::Yellow),
                Severity::Critical => Style::default().fg(Color::Red),
            };
            Line::from(vec![
                Span::raw(format!(" {} ", format::clock(l.at_ms))),
                Span::styled(l.text.clone(), style),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
