//! Where each panel goes. At 80×24 everything shows; a shorter screen drops the
//! log, then the throughput panel, then the table; below 40×8 only the header's
//! lines are left, wrapped.

use ratatui::layout::{Constraint, Layout};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::{activity, footer, header, log, overlay, workers};
use crate::top::app::{App, Mode};

/// Rows of the log panel when it shows.
const LOG: u16 = 6;

/// Draws the whole screen.
pub(crate) fn draw(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    if area.width < 40 || area.height < 8 {
        let lines = header::lines(app);
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
        return;
    }
    let h = area.height;
    let activity_rows = if h >= 16 { activity::HEIGHT } else { 0 };
    let log_rows = if h >= 22 { LOG } else { 0 };
    let [head, act, table, events, foot] = Layout::vertical([
        Constraint::Length(header::HEIGHT),
        Constraint::Length(activity_rows),
        Constraint::Min(3),
        Constraint::Length(log_rows),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(frame, head, app);
    if activity_rows > 0 {
        activity::draw(frame, act, app);
    }
    workers::draw(frame, table, app);
    if log_rows > 0 {
        log::draw(frame, events, app);
    }
    footer::draw(frame, foot, app);
    match &app.mode {
        Mode::Help => overlay::help(frame, area),
        Mode::Dlq(view) => overlay::dlq(frame, area, view, app.dlq_selected),
        Mode::Normal | Mode::Filter | Mode::Scale(_) => {}
    }
}
