//! The bottom line: the keys, a prompt while typing, or why the daemon cannot be
//! read.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::top::app::{App, Mode};

/// Draws the footer in `area` (one row).
pub(super) fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let key = Style::default().add_modifier(Modifier::REVERSED);
    let line = match (&app.mode, &app.error) {
        (Mode::Scale(typed), _) => Line::from(vec![
            Span::styled(" scale to: ", key),
            Span::raw(format!(" {typed}_  (Enter apply, Esc cancel)")),
        ]),
        (Mode::Filter, _) => Line::from(vec![
            Span::styled(" filter: ", key),
            Span::raw(format!(" {}_  (Enter keep, Esc clear)", app.filter)),
        ]),
        (_, Some(error)) => Line::from(Span::styled(
            format!(" ! {error} (retrying every {} ms)", app.interval_ms),
            Style::default().fg(Color::Red),
        )),
        _ => {
            let mut spans = Vec::new();
            for (k, what) in [
                ("q", "quit"),
                ("s", "scale"),
                ("r", "roll"),
                ("d", "DLQ"),
                ("/", "filter"),
                ("o", "sort"),
                ("?", "help"),
            ] {
                spans.push(Span::styled(format!(" {k} "), key));
                spans.push(Span::raw(format!("{what} ")));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
