//! The screen's state and what each key does. Keys never talk to the daemon
//! themselves: they return an [`Action`] for [`super::actions`] to run.

use std::cell::Cell;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::actions::{Action, Outcome};
use super::history::{History, Severity};
use super::source::{DeadLetter, DeadLetters, Snapshot, Worker};

/// What the keyboard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Watching.
    Normal,
    /// The key map.
    Help,
    /// Typing the workers filter.
    Filter,
    /// Typing the new pool size.
    Scale(String),
    /// The dead-letter queue.
    Dlq(DlqView),
}

/// What the dead-letter box shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DlqView {
    /// The list was asked for and has not come back yet.
    Loading,
    /// The entries.
    Entries(DeadLetters),
    /// The list could not be read: why.
    Failed(String),
}

impl DlqView {
    /// The entries, when there are some to select from.
    fn entries(&self) -> &[DeadLetter] {
        match self {
            Self::Entries(listed) => &listed.entries,
            Self::Loading | Self::Failed(_) => &[],
        }
    }
}

/// A workers-table column to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKey {
    /// Name (worker number).
    Name,
    /// Slot.
    Slot,
    /// State.
    State,
    /// Tasks in flight.
    InFlight,
    /// Tasks done.
    Done,
    /// Restarts of the slot.
    Restarts,
    /// Resident memory.
    Rss,
    /// Time since the last heartbeat.
    Heartbeat,
    /// Time since ready.
    Age,
}

impl SortKey {
    const ALL: [Self; 9] = [
        Self::Name,
        Self::Slot,
        Self::State,
        Self::InFlight,
        Self::Done,
        Self::Restarts,
        Self::Rss,
        Self::Heartbeat,
        Self::Age,
    ];

    /// The column's heading.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Slot => "slot",
            Self::State => "state",
            Self::InFlight => "in flight",
            Self::Done => "done",
            Self::Restarts => "restarts",
            Self::Rss => "rss",
            Self::Heartbeat => "heartbeat",
            Self::Age => "age",
        }
    }

    fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// What a key asks of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyOutcome {
    /// Nothing beyond the state change.
    Stay,
    /// Leave `top`.
    Quit,
    /// Run this control request.
    Act(Action),
}

/// Everything the screen shows.
#[derive(Debug)]
pub(crate) struct App {
    /// The latest snapshot.
    pub(crate) snapshot: Option<Snapshot>,
    /// Why the latest refresh failed, if it did.
    pub(crate) error: Option<String>,
    /// Throughput and the log.
    pub(crate) history: History,
    /// The keyboard's mode.
    pub(crate) mode: Mode,
    /// The workers table's sort column.
    pub(crate) sort: SortKey,
    /// Largest first.
    pub(crate) descending: bool,
    /// Only workers whose name or state contains this.
    pub(crate) filter: String,
    /// The first workers-table row shown.
    pub(crate) scroll: usize,
    /// Workers-table rows the last frame had room for (set as it is drawn;
    /// scrolling stops where the last worker is on the last row).
    pub(crate) table_rows: Cell<usize>,
    /// The selected dead letter.
    pub(crate) dlq_selected: usize,
    /// The refresh interval, in milliseconds (shown in the header).
    pub(crate) interval_ms: u64,
    /// Wall-clock time of the latest refresh, in milliseconds since the epoch.
    pub(crate) wall_ms: u64,
    /// Wall-clock time of the latest refresh that worked (the snapshot's).
    pub(crate) seen_ms: u64,
}

impl App {
    /// An empty screen.
    pub(crate) fn new(interval_ms: u64) -> Self {
        Self {
            snapshot: None,
            error: None,
            history: History::default(),
            mode: Mode::Normal,
            sort: SortKey::Name,
            descending: false,
            filter: String::new(),
            scroll: 0,
            table_rows: Cell::new(0),
            dlq_selected: 0,
            interval_ms,
            wall_ms: 0,
            seen_ms: 0,
        }
    }

    /// Takes in a refresh.
    pub(crate) fn refreshed(
        &mut self,
        now: Instant,
        wall_ms: u64,
        fetched: Result<Snapshot, String>,
    ) {
        self.wall_ms = wall_ms;
        match fetched {
            Ok(mut snapshot) => {
                if !snapshot.figures_known() {
                    // Disconnected: the last known counts stay on screen.
                    if let Some(last) = &self.snapshot {
                        let (to, from) = (&mut snapshot.metrics.tasks, &last.metrics.tasks);
                        to.queued = from.queued;
                        to.in_flight = from.in_flight;
                        to.dlq = from.dlq;
                    }
                }
                self.history.observe(now, wall_ms, &snapshot);
                self.snapshot = Some(snapshot);
                self.error = None;
                self.seen_ms = wall_ms;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Takes in an action's outcome.
    pub(crate) fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done(text) => self.history.push(self.wall_ms, Severity::Info, text),
            Outcome::Failed(text) => self.history.push(self.wall_ms, Severity::Warning, text),
            Outcome::DeadLetters(listed) => self.dead_letters(listed),
        }
    }

    /// Takes in a `dlq list`: into the box when it is open; a failure to the
    /// log when it is not.
    fn dead_letters(&mut self, listed: Result<DeadLetters, String>) {
        if !matches!(self.mode, Mode::Dlq(_)) {
            if let Err(e) = listed {
                self.history.push(self.wall_ms, Severity::Warning, e);
            }
            return;
        }
        self.mode = Mode::Dlq(match listed {
            Ok(listed) => {
                for why in &listed.left_out {
                    let line = format!("a dead letter left out of the list: {why}");
                    self.history.push(self.wall_ms, Severity::Warning, line);
                }
                self.dlq_selected = self
                    .dlq_selected
                    .min(listed.entries.len().saturating_sub(1));
                DlqView::Entries(listed)
            }
            Err(e) => DlqView::Failed(e),
        });
    }

    /// The workers the table shows: filtered, then sorted.
    pub(crate) fn workers(&self) -> Vec<&Worker> {
        let Some(snapshot) = &self.snapshot else {
            return Vec::new();
        };
        let mut workers: Vec<&Worker> = snapshot
            .workers
            .iter()
            .filter(|w| {
                self.filter.is_empty()
                    || w.id.contains(&self.filter)
                    || w.state.contains(&self.filter)
            })
            .collect();
        let number = |w: &Worker| {
            w.id.rsplit('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        match self.sort {
            SortKey::Name => workers.sort_by_key(|w| (number(w), w.id.clone())),
            SortKey::Slot => {
                workers.sort_by_key(|w| (w.slot.map_or(u64::MAX, u64::from), number(w)))
            }
            SortKey::State => workers.sort_by_key(|w| (w.state.clone(), number(w))),
            SortKey::InFlight => workers.sort_by_key(|w| (u64::from(w.in_flight), number(w))),
            SortKey::Done => workers.sort_by_key(|w| (w.tasks_done, number(w))),
            SortKey::Restarts => workers.sort_by_key(|w| (u64::from(w.restarts), number(w))),
            SortKey::Rss => workers.sort_by_key(|w| (w.rss_bytes, number(w))),
            SortKey::Heartbeat => workers.sort_by_key(|w| (w.last_heard_ms, number(w))),
            SortKey::Age => workers.sort_by_key(|w| (w.uptime_ms, number(w))),
        }
        if self.descending {
            workers.reverse();
        }
        workers
    }

    /// Handles one key.
    pub(crate) fn key(&mut self, key: KeyEvent) -> KeyOutcome {
        if key.kind == KeyEventKind::Release {
            return KeyOutcome::Stay;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return KeyOutcome::Quit;
        }
        match &mut self.mode {
            Mode::Normal => self.normal_key(key.code),
            Mode::Help => {
                if key.code == KeyCode::Char('q') {
                    return KeyOutcome::Quit;
                }
                self.mode = Mode::Normal;
                KeyOutcome::Stay
            }
            Mode::Filter => {
                match key.code {
                    KeyCode::Char(c) => self.filter.push(c),
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Normal;
                    }
                    KeyCode::Enter => self.mode = Mode::Normal,
                    _ => {}
                }
                self.scroll = 0;
                KeyOutcome::Stay
            }
            Mode::Scale(typed) => match key.code {
                KeyCode::Char(c) if c.is_ascii_digit() && typed.len() < 6 => {
                    typed.push(c);
                    KeyOutcome::Stay
                }
                KeyCode::Backspace => {
                    typed.pop();
                    KeyOutcome::Stay
                }
                KeyCode::Esc => {
                    self.mode = Mode::Normal;
                    KeyOutcome::Stay
                }
                KeyCode::Enter => match typed.parse::<usize>() {
                    Ok(size) => {
                        self.mode = Mode::Normal;
                        self.history.push(
                            self.wall_ms,
                            Severity::Info,
                            format!("scaling to {size}…"),
                        );
                        KeyOutcome::Act(Action::Scale(size))
                    }
                    Err(_) => KeyOutcome::Stay,
                },
                _ => KeyOutcome::Stay,
            },
            Mode::Dlq(view) => {
                let len = view.entries().len();
                let selected = view.entries().get(self.dlq_selected).map(|d| d.id.clone());
                match key.code {
                    KeyCode::Down | KeyCode::Char('j') => {
                        self.dlq_selected = (self.dlq_selected + 1).min(len.saturating_sub(1));
                    }
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.dlq_selected = self.dlq_selected.saturating_sub(1);
                    }
                    KeyCode::Enter | KeyCode::Char('r') => {
                        if let Some(id) = selected {
                            return KeyOutcome::Act(Action::DlqRetry(id));
                        }
                    }
                    KeyCode::Char('q') => return KeyOutcome::Quit,
                    KeyCode::Esc | KeyCode::Char('d') => self.mode = Mode::Normal,
                    _ => {}
                }
                KeyOutcome::Stay
            }
        }
    }

    fn normal_key(&mut self, code: KeyCode) -> KeyOutcome {
        match code {
            KeyCode::Char('q') => return KeyOutcome::Quit,
            KeyCode::Char('?') | KeyCode::Char('h') => self.mode = Mode::Help,
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char('s') => self.mode = Mode::Scale(String::new()),
            KeyCode::Char('r') => {
                self.history.push(
                    self.wall_ms,
                    Severity::Info,
                    "rolling restart started…".into(),
                );
                return KeyOutcome::Act(Action::Roll);
            }
            KeyCode::Char('d') => {
                self.dlq_selected = 0;
                self.mode = Mode::Dlq(DlqView::Loading);
                return KeyOutcome::Act(Action::DlqList);
            }
            KeyCode::Char('o') => self.sort = self.sort.next(),
            KeyCode::Char('O') => self.descending = !self.descending,
            KeyCode::Down | KeyCode::Char('j') => self.scroll_down(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll_up(1),
            KeyCode::PageDown => self.scroll_down(10),
            KeyCode::PageUp => self.scroll_up(10),
            KeyCode::Esc => self.filter.clear(),
            _ => {}
        }
        KeyOutcome::Stay
    }

    /// The furthest the table can scroll: the last worker on the last row.
    fn last_scroll(&self) -> usize {
        self.workers()
            .len()
            .saturating_sub(self.table_rows.get().max(1))
    }

    /// Scrolls the table `rows` down, no further than the last worker.
    fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_add(rows).min(self.last_scroll());
    }

    /// Scrolls the table `rows` up (from where it shows, when the table
    /// shrank under it).
    fn scroll_up(&mut self, rows: usize) {
        self.scroll = self.scroll.min(self.last_scroll()).saturating_sub(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(app: &mut App, code: KeyCode) -> KeyOutcome {
        app.key(KeyEvent::from(code))
    }

    #[test]
    fn scale_asks_for_a_number_then_acts() {
        let mut app = App::new(1000);
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.mode, Mode::Scale(String::new()));
        press(&mut app, KeyCode::Char('x'));
        press(&mut app, KeyCode::Char('1'));
        press(&mut app, KeyCode::Char('2'));
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Char('4'));
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            KeyOutcome::Act(Action::Scale(14))
        );
        assert_eq!(app.mode, Mode::Normal);
    }

    #[test]
    fn keys_quit_roll_open_the_dlq_and_filter() {
        let mut app = App::new(1000);
        assert_eq!(
            press(&mut app, KeyCode::Char('r')),
            KeyOutcome::Act(Action::Roll)
        );
        assert_eq!(
            press(&mut app, KeyCode::Char('d')),
            KeyOutcome::Act(Action::DlqList)
        );
        app.outcome(Outcome::DeadLetters(Ok(DeadLetters {
            entries: vec![
                DeadLetter {
                    id: "7".into(),
                    ..DeadLetter::default()
                },
                DeadLetter {
                    id: "9".into(),
                    ..DeadLetter::default()
                },
            ],
            more: false,
            left_out: Vec::new(),
        })));
        press(&mut app, KeyCode::Down);
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            KeyOutcome::Act(Action::DlqRetry("9".into()))
        );
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::Char('/'));
        press(&mut app, KeyCode::Char('b'));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.filter, "b");
        assert_eq!(press(&mut app, KeyCode::Char('q')), KeyOutcome::Quit);
    }

    #[test]
    fn the_table_filters_and_sorts() {
        let mut app = App::new(1000);
        let mut snapshot = Snapshot::default();
        for (id, state, done) in [
            ("worker-10", "busy", 5),
            ("worker-2", "ready", 9),
            ("worker-3", "busy", 1),
        ] {
            snapshot.workers.push(Worker {
                id: id.into(),
                state: state.into(),
                tasks_done: done,
                ..Worker::default()
            });
        }
        app.refreshed(Instant::now(), 0, Ok(snapshot));
        let ids = |app: &App| {
            app.workers()
                .iter()
                .map(|w| w.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&app), ["worker-2", "worker-3", "worker-10"]);
        app.sort = SortKey::Done;
        app.descending = true;
        assert_eq!(ids(&app), ["worker-2", "worker-10", "worker-3"]);
        app.filter = "busy".into();
        assert_eq!(ids(&app), ["worker-10", "worker-3"]);
    }

    #[test]
    fn age_sorts_smallest_first_like_every_column() {
        let mut app = App::new(1000);
        let mut snapshot = Snapshot::default();
        for (id, uptime_ms) in [
            ("worker-1", 90_000),
            ("worker-2", 5_000),
            ("worker-3", 40_000),
        ] {
            snapshot.workers.push(Worker {
                id: id.into(),
                uptime_ms,
                ..Worker::default()
            });
        }
        app.refreshed(Instant::now(), 0, Ok(snapshot));
        app.sort = SortKey::Age;
        let ids: Vec<_> = app.workers().iter().map(|w| w.id.clone()).collect();
        assert_eq!(ids, ["worker-2", "worker-3", "worker-1"]);
    }

    #[test]
    fn a_disconnected_queue_keeps_the_last_known_counts() {
        let mut app = App::new(1000);
        let t0 = Instant::now();
        app.refreshed(t0, 0, Ok(Snapshot::watched_queue(true, 2)));
        app.refreshed(
            t0 + std::time::Duration::from_secs(1),
            0,
            Ok(Snapshot::watched_queue(false, 0)),
        );
        let shown = app.snapshot.as_ref().expect("a snapshot");
        assert_eq!(shown.metrics.tasks.dlq, 2);
        assert_eq!(shown.metrics.tasks.queued, 20);
        assert!(!shown.shared_queue.as_ref().expect("the queue").connected);
    }
}
