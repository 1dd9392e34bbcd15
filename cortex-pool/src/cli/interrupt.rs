//! SIGINT and SIGTERM for `cortex-pool run`: the first one drains (no more input is
//! read, queued tasks end `shutting_down`, running ones may finish), the second one
//! stops at once (running tasks are cancelled and not waited for).

use std::io::Write;
use std::sync::Arc;

use pool_core::Pool;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// Where `run` is in its life; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Reading input and running tasks.
    Running,
    /// One signal came: read no more, let the pool drain.
    Draining,
    /// A second signal came: cancel what runs, write every line, exit.
    Stopping,
}

/// SIGINT and SIGTERM, caught from the moment they are installed (a signal that
/// comes while the pool starts is kept, not fatal).
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM: its name.
    pub(crate) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Drives the phase from the signals; the first one also starts the pool's
    /// shutdown.
    pub(crate) fn watch(mut self, pool: Pool) -> (watch::Receiver<Phase>, Stopper) {
        let (tx, rx) = watch::channel(Phase::Running);
        let tx = Arc::new(tx);
        let stopper = Stopper(tx.clone());
        tokio::spawn(async move {
            for (phase, what) in [
                (
                    Phase::Draining,
                    "finishing running tasks (signal again to stop now)",
                ),
                (Phase::Stopping, "cancelling running tasks"),
            ] {
                let name = self.next().await;
                // A standard error that cannot be written (a closed log pipe,
                // a full disk) must not stop the signal from taking effect.
                let _ = writeln!(
                    std::io::stderr(),
                    "cortex-pool: interrupted ({name}); {what}"
                );
                advance(&tx, phase);
                if phase == Phase::Draining {
                    let pool = pool.clone();
                    tokio::spawn(async move { pool.shutdown().await });
                }
            }
            // Keep the handlers installed: a third signal changes nothing.
            loop {
                self.next().await;
            }
        });
        (rx, stopper)
    }
}

/// Moves the phase forward to `phase` (never back).
fn advance(tx: &watch::Sender<Phase>, phase: Phase) {
    tx.send_if_modified(|now| {
        let later = phase > *now;
        if later {
            *now = phase;
        }
        later
    });
}

/// Stops the run at once without a signal (its output cannot be written).
#[derive(Clone)]
pub(crate) struct Stopper(Arc<watch::Sender<Phase>>);

impl Stopper {
    /// Moves the run to [`Phase::Stopping`].
    pub(crate) fn stop(&self) {
        advance(&self.0, Phase::Stopping);
    }
}

/// Waits until `phase` is reached (forever if the handlers are gone).
pub(crate) async fn reached(rx: &mut watch::Receiver<Phase>, phase: Phase) {
    if rx.wait_for(|now| *now >= phase).await.is_err() {
        std::future::pending::<()>().await;
    }
}
