//! The terminal while `top` runs: raw mode and the alternate screen, given back
//! on every way out. A normal exit and an unwinding panic drop the guard; the
//! panic hook `ratatui::try_init` installs restores before the message prints;
//! SIGTERM, SIGHUP and SIGINT set [`Stop`], which the loop checks between frames.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ratatui::DefaultTerminal;
use tokio::signal::unix::{signal, SignalKind};

/// The terminal in `top`'s mode; restored when dropped.
#[derive(Debug)]
pub(crate) struct TerminalGuard {
    terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen.
    ///
    /// # Errors
    /// When the standard output is not a terminal that allows it.
    pub(crate) fn enter() -> std::io::Result<Self> {
        let terminal = ratatui::try_init()?;
        Ok(Self { terminal })
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

/// Set once a stop signal arrived.
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
            let flag = stop.0.clone();
            runtime.spawn(async move {
                if signals.recv().await.is_some() {
                    flag.store(true, Ordering::SeqCst);
                }
            });
        }
        Ok(stop)
    }

    /// Whether a stop signal arrived.
    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
