//! Boxes drawn over the screen: the key map, and the dead-letter queue.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::top::app::DlqView;
use crate::top::source::DeadLetter;

/// The key map, as the help box and `docs/operations.md` show it.
pub(crate) const KEYS: [(&str, &str); 12] = [
    ("q, Ctrl-C", "quit"),
    ("s", "scale: type the new size, Enter"),
    ("r", "rolling restart (one worker at a time)"),
    ("d", "dead letters: ↑↓ select, Enter/r retry"),
    ("/", "filter workers by name or state"),
    ("Esc", "clear the filter / close a box"),
    ("o", "sort by the next column"),
    ("O", "reverse the sort"),
    ("↑↓ j k", "scroll the workers"),
    ("PgUp PgDn", "scroll by ten"),
    ("?", "this help"),
    ("", "any key closes it"),
];

/// Draws the key map over `area`.
pub(super) fn help(frame: &mut Frame<'_>, area: Rect) {
    let lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(k, what)| Line::from(format!(" {k:<10} {what}")))
        .collect();
    let height = lines.len() as u16 + 2;
    let inner = boxed(frame, area, 56, height, " keys ");
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Draws the dead-letter box over `area`: loading, why the list cannot be
/// read, or the list.
pub(super) fn dlq(frame: &mut Frame<'_>, area: Rect, view: &DlqView, selected: usize) {
    let title = match view {
        DlqView::Entries(listed) => {
            let shown = listed.entries.len();
            let count = if listed.more {
                format!("the oldest {shown} shown")
            } else {
                shown.to_string()
            };
            let left_out = match listed.left_out.len() {
                0 => String::new(),
                n => format!(" │ {n} too large to show (see the log)"),
            };
            format!(" dead letters: {count}{left_out} │ Enter retry │ Esc close ")
        }
        DlqView::Loading => " dead letters: loading… ".to_owned(),
        DlqView::Failed(_) => " dead letters: cannot list │ Esc close ".to_owned(),
    };
    let height = area.height.saturating_sub(4).max(3);
    let inner = boxed(frame, area, area.width.saturating_sub(4), height, &title);
    match view {
        DlqView::Loading => {}
        DlqView::Failed(why) => {
            let text = Paragraph::new(format!(" {why}")).wrap(Wrap { trim: false });
            frame.render_widget(text.style(Style::default().fg(Color::Red)), inner);
        }
        DlqView::Entries(listed) if listed.entries.is_empty() => {
            frame.render_widget(Paragraph::new(" the dead-letter queue is empty"), inner);
        }
        DlqView::Entries(listed) => entries_list(frame, inner, &listed.entries, selected),
    }
}

/// The dead letters in `inner`, scrolled to keep `selected` in sight.
fn entries_list(frame: &mut Frame<'_>, inner: Rect, entries: &[DeadLetter], selected: usize) {
    let rows = usize::from(inner.height);
    let first = selected.saturating_sub(rows.saturating_sub(1));
    let lines: Vec<Line<'_>> = entries
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, d)| {
            let (kind, message) = d
                .error
                .as_ref()
                .map_or(("", ""), |e| (e.kind.as_str(), e.message.as_str()));
            let text = format!(
                " {:>6} {:<12} {:>2}× {kind}: {message}",
                d.id, d.task_type, d.attempts
            );
            let style = if i == selected {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            Line::styled(text, style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Clears a centred box of at most `width`×`height` with a border and a title;
/// returns its inside.
fn boxed(frame: &mut Frame<'_>, area: Rect, width: u16, height: u16, title: &str) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title.to_owned());
    let inner = block.inner(cell);
    frame.render_widget(Clear, cell);
    frame.render_widget(block, cell);
    inner
}
