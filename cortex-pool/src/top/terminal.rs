//! The terminal while `top` runs: raw mode and the alternate screen, given back
//! on every way out. A normal exit and an unwinding panic drop the guard; the
//! panic hook `ratatui::try_init` installs restores before the message prints;
//! SIGTERM, SIGHUP and SIGINT set [`Stop`], which the loop checks between frames;
//! so does the terminal hanging up (the SSH session or the tmux pane gone). If the
//! loop is still running `STOP_GRACE` later — a terminal library spinning on a
//! dead terminal never returns to it — the process restores what it can and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossterm::terminal::LeaveAlternateScreen;
use ratatui::DefaultTerminal;
use tokio::signal::unix::{signal, SignalKind};

/// The terminal in `top`'s mode; restored when dropped.
#[derive(Debug)]
pub(crate) struct TerminalGuard {
    terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen; on failure, the terminal is
    /// given back as it was.
    ///
    /// # Errors
    /// Which step failed and why: raw mode (no terminal to put in it), or
    /// drawing full-screen (the standard output refused the alternate screen or
    /// its size: full, closed, not a terminal).
    pub(crate) fn enter() -> Result<Self, String> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Self { terminal }),
            Err(e) if !crossterm::terminal::is_raw_mode_enabled().unwrap_or(false) => {
                Err(format!("cannot switch the terminal to raw mode: {e}"))
            }
            Err(e) => Err(give_back(format!(
                "cannot draw full-screen on the standard output (alternate screen, size): {e}"
            ))),
        }
    }

    /// The terminal to draw on.
    pub(crate) fn terminal(&mut self) -> &mut DefaultTerminal {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Takes raw mode off after a failed start (and leaves the alternate screen,
/// where the output takes that); returns `why`, with the reason raw mode stays
/// on if it does.
fn give_back(why: String) -> String {
    if let Err(e) = crossterm::terminal::disable_raw_mode() {
        return format!("{why}; raw mode could not be turned off either: {e}");
    }
    // Entered or not, the output that refused the alternate screen is the one
    // this goes to: a failure here changes nothing that is left to do.
    let _ = crossterm::execute!(std::io::stdout(), LeaveAlternateScreen);
    why
}

/// How long the loop has to return after a stop before the process exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often the terminal is checked for a hang-up.
const HANGUP_CHECK: Duration = Duration::from_millis(250);
/// The exit status when the loop did not return in time (as for SIGHUP).
const EXIT_STUCK: i32 = 129;

/// Whether standard input is a terminal that hung up (`POLLHUP`).
fn stdin_hung_up() -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&now)).is_ok() && fds[0].revents().contains(PollFlags::HUP)
}

/// Set once a stop signal arrived or the terminal hung up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Watches SIGTERM, SIGHUP (the SSH session ended) and SIGINT on `runtime`.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub(crate) fn watch(runtime: &tokio::runtime::Runtime) -> std::io::Result<Self> {
        let stop = Self::default();
        let _enter = runtime.enter();
        for kind in [
            SignalKind::terminate(),
            SignalKind::hangup(),
            SignalKind::interrupt(),
        ] {
            let mut signals = signal(kind)?;
            let stop = stop.clone();
            runtime.spawn(async move {
                if signals.recv().await.is_some() {
                    stop.request();
                }
            });
        }
        let hangup = stop.clone();
        std::thread::Builder::new()
            .name("top-hangup".into())
            .spawn(move || {
                while !hangup.requested() && !stdin_hung_up() {
                    std::thread::sleep(HANGUP_CHECK);
                }
                hangup.request();
            })?;
        Ok(stop)
    }

    /// Asks the loop to stop, and ends the process `STOP_GRACE` later if the
    /// loop has not returned by then.
    fn request(&self) {
        if self.0.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("top-stop-grace".into())
            .spawn(|| {
                std::thread::sleep(STOP_GRACE);
                ratatui::restore();
                std::process::exit(EXIT_STUCK);
            });
    }

    /// Whether a stop signal arrived.
    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
