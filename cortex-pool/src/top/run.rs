//! The refresh loop, and `--once`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossterm::event::{self, Event};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::actions::{Actions, Target};
use super::app::{App, KeyOutcome};
use super::args::TopArgs;
use super::queue_watch::QueueWatch;
use super::source::{Snapshot, Source};
use super::terminal::{Stop, TerminalGuard};
use super::ui;
use crate::cli::EXIT_USAGE;
use crate::daemon::config::{Settings, Sources};

/// The longest the loop waits for a key before it looks at signals and outcomes.
const TICK: Duration = Duration::from_millis(100);

/// `cortex-pool top`. Exit status: 0 done, 1 the terminal or the daemon failed,
/// 2 usage or configuration error, 3 (`--once`) the daemon is not running or
/// (`--queue`) the queue cannot be reached.
pub(crate) fn top(args: TopArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("cortex-pool top: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn run(args: &TopArgs) -> Result<(), Failure> {
    let settings = Settings::load(&Sources {
        file: args.config.config.clone(),
        overrides: args.config.set.clone(),
        queue: args.queue.clone(),
    })
    .map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start the async runtime: {e}")))?;
    let (mut source, target) = match &args.queue {
        Some(url) => {
            let queue = runtime
                .block_on(QueueWatch::connect(&settings, url))
                .map_err(|e| (3, e))?;
            (Watched::Queue(queue.clone()), Target::Queue(queue))
        }
        None => {
            let socket = settings.paths.socket.clone();
            (
                Watched::Daemon(Source::new(socket.clone())),
                Target::Daemon(socket),
            )
        }
    };
    if args.once {
        return once(&runtime, &mut source, args.interval_ms);
    }
    let stop = Stop::watch(&runtime).map_err(|e| (1, format!("cannot watch signals: {e}")))?;
    let actions = Actions::new(target, runtime.handle().clone());
    let mut app = App::new(args.interval_ms);
    let mut guard = TerminalGuard::enter().map_err(|e| (1, e))?;
    let interval = Duration::from_millis(args.interval_ms);
    let mut next_refresh = Instant::now();
    while !stop.requested() {
        if Instant::now() >= next_refresh {
            let fetched = runtime.block_on(source.fetch());
            app.refreshed(Instant::now(), wall_ms(), fetched);
            next_refresh += interval;
            if next_refresh < Instant::now() {
                next_refresh = Instant::now() + interval;
            }
        }
        while let Some(outcome) = actions.next() {
            app.outcome(outcome);
        }
        guard
            .terminal()
            .draw(|frame| ui::draw(frame, &app))
            .map_err(|e| (1, format!("cannot draw: {e}")))?;
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(TICK);
        if event::poll(wait).map_err(|e| (1, format!("cannot read the keyboard: {e}")))? {
            if let Event::Key(key) =
                event::read().map_err(|e| (1, format!("cannot read the keyboard: {e}")))?
            {
                match app.key(key) {
                    KeyOutcome::Stay => {}
                    KeyOutcome::Quit => break,
                    KeyOutcome::Act(action) => actions.start(action),
                }
            }
        }
    }
    Ok(())
}

/// What `top` watches: one daemon, or the shared queue.
#[derive(Debug)]
enum Watched {
    Daemon(Source),
    Queue(QueueWatch),
}

impl Watched {
    async fn fetch(&mut self) -> Result<Snapshot, String> {
        match self {
            Self::Daemon(source) => source.fetch().await,
            Self::Queue(queue) => queue.fetch().await,
        }
    }
}

/// One frame as plain text, the terminal's size (80×24 when the output is not a
/// terminal).
fn once(
    runtime: &tokio::runtime::Runtime,
    source: &mut Watched,
    interval_ms: u64,
) -> Result<(), Failure> {
    let snapshot = runtime.block_on(source.fetch()).map_err(|e| (3, e))?;
    let mut app = App::new(interval_ms);
    app.refreshed(Instant::now(), wall_ms(), Ok(snapshot));
    let size = std::io::stdout()
        .is_terminal()
        .then(crossterm::terminal::size)
        .and_then(Result::ok)
        .filter(|&(w, h)| w > 0 && h > 0);
    let (width, height) = size.unwrap_or((80, 24));
    print!("{}", render_text(&app, width, height));
    Ok(())
}

/// Renders `app` on a `width`×`height` screen and returns it as text, one line
/// per row, trailing blanks trimmed.
pub(crate) fn render_text(app: &App, width: u16, height: u16) -> String {
    let Ok(mut terminal) = Terminal::new(TestBackend::new(width, height)) else {
        return String::new();
    };
    if terminal.draw(|frame| ui::draw(frame, app)).is_err() {
        return String::new();
    }
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buffer[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
