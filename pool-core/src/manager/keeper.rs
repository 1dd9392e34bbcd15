//! A ready worker's process keeper: the task that owns its [`WorkerProcess`]
//! while its lane reads and writes the link, obeys the actor's signals, reaps
//! the process and says when it exited.
//!
//! The lane used to wait for the exit itself, as one branch of the `select!`
//! it runs on every wake-up. That branch built and polled a fresh wait future
//! each time (the child's reaper, its signal receiver, the stderr drain): about
//! 3 000 instructions a round trip for a process that exits once. Here the wait
//! is polled only when a signal arrives or the process exits, and the exit
//! rings the lane's bell (the one frames for the worker ring), so the lane
//! polls nothing more per wake-up for it.
//!
//! Only this task signals the process, and it stops signalling once the process
//! is reaped, so a recycled pid is never hit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::bell::Bell;
use crate::process::{describe_exit, GroupSignal, WorkerProcess};

/// After the lane is done with the link, how long the worker has to exit
/// before SIGKILL.
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How the lane left the link, sent to the keeper when its read loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkEnd {
    /// The link closed or the worker exited: it gets [`EXIT_GRACE`] to exit.
    Closed,
    /// The worker broke the protocol: it is killed at once.
    Broken,
}

/// The lane's side of a keeper.
pub(super) struct Keeper {
    exited: Arc<Exited>,
    end: oneshot::Sender<LinkEnd>,
    task: tokio::task::JoinHandle<String>,
}

/// Set once the process has exited and is reaped (or the keeper is gone),
/// and then `bell` rung.
struct Exited {
    flag: AtomicBool,
    bell: Arc<Bell>,
}

/// Tells the lane its worker exited when the keeper's task ends, however it
/// ends.
struct TellExit(Arc<Exited>);

impl Drop for TellExit {
    fn drop(&mut self) {
        self.0.flag.store(true, Ordering::Release);
        self.0.bell.ring();
    }
}

impl Keeper {
    /// Hands `process` to a new keeper task, which obeys `control` until the
    /// process is reaped, then rings `bell`.
    pub(super) fn spawn(
        process: WorkerProcess,
        control: mpsc::UnboundedReceiver<GroupSignal>,
        bell: Arc<Bell>,
    ) -> Self {
        let exited = Arc::new(Exited {
            flag: AtomicBool::new(false),
            bell,
        });
        let (end, end_rx) = oneshot::channel();
        let tell = TellExit(exited.clone());
        let task = tokio::spawn(keep(process, control, tell, end_rx));
        Self { exited, end, task }
    }

    /// Whether the process has exited and is reaped (or the keeper is gone).
    pub(super) fn has_exited(&self) -> bool {
        self.exited.flag.load(Ordering::Acquire)
    }

    /// Tells the keeper the lane is done with the link, then waits for the
    /// process to be reaped; the exit described.
    pub(super) async fn finish(self, how: LinkEnd) -> String {
        // The keeper may be gone already (the process exited): nothing to tell.
        let _ = self.end.send(how);
        match self.task.await {
            Ok(exit) => exit,
            Err(e) => format!("unknown exit ({e})"),
        }
    }
}

/// Obeys `control` until the process exits; once the lane is done with the
/// link (`end`), kills it at once if it broke the protocol, else after
/// [`EXIT_GRACE`]. A lane that went away without a word (its task was
/// dropped) counts as broken.
async fn keep(
    mut process: WorkerProcess,
    mut control: mpsc::UnboundedReceiver<GroupSignal>,
    exited: TellExit,
    mut end: oneshot::Receiver<LinkEnd>,
) -> String {
    let grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(grace);
    let mut ended = false;
    let mut killed = false;
    let exit = loop {
        tokio::select! {
            status = process.wait() => break match status {
                Ok(status) => describe_exit(&status),
                Err(e) => format!("unknown exit ({e})"),
            },
            Some(signal) = control.recv() => process.signal(signal),
            how = &mut end, if !ended => {
                ended = true;
                if how.unwrap_or(LinkEnd::Broken) == LinkEnd::Broken {
                    killed = true;
                    process.signal(GroupSignal::Kill);
                } else {
                    grace.as_mut().reset(tokio::time::Instant::now() + EXIT_GRACE);
                }
            }
            () = &mut grace, if ended && !killed => {
                killed = true;
                process.signal(GroupSignal::Kill);
            }
        }
    };
    drop(exited);
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real process that runs until it is signalled, in its own group.
    fn sleeper() -> WorkerProcess {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("600").process_group(0).kill_on_drop(true);
        WorkerProcess::new(cmd.spawn().expect("spawn sleep"), "worker-keeper-test")
    }

    fn bell() -> Arc<Bell> {
        Arc::new(Bell::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_broke_the_protocol_is_killed_without_a_grace() {
        let (_control, control_rx) = mpsc::unbounded_channel();
        let keeper = Keeper::spawn(sleeper(), control_rx, bell());
        let start = tokio::time::Instant::now();
        assert_eq!(keeper.finish(LinkEnd::Broken).await, "signal 9");
        assert!(start.elapsed() < EXIT_GRACE, "waited {:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_lingers_after_its_link_closed_is_killed_after_the_grace() {
        let (_control, control_rx) = mpsc::unbounded_channel();
        let keeper = Keeper::spawn(sleeper(), control_rx, bell());
        let start = tokio::time::Instant::now();
        assert_eq!(keeper.finish(LinkEnd::Closed).await, "signal 9");
        assert!(
            start.elapsed() >= EXIT_GRACE,
            "waited {:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn the_actors_signals_reach_the_worker_and_its_exit_is_told_to_the_lane() {
        let (control, control_rx) = mpsc::unbounded_channel();
        let bell = bell();
        let keeper = Keeper::spawn(sleeper(), control_rx, bell.clone());
        assert!(!keeper.has_exited());
        control
            .send(GroupSignal::Terminate)
            .expect("keeper listens");
        bell.rung().await;
        assert!(keeper.has_exited(), "the bell rang for the exit");
        assert_eq!(keeper.finish(LinkEnd::Closed).await, "signal 15");
    }

    #[tokio::test]
    async fn a_lane_dropped_without_a_word_gets_its_worker_killed() {
        let (_control, control_rx) = mpsc::unbounded_channel();
        let Keeper { exited, end, task } = Keeper::spawn(sleeper(), control_rx, bell());
        drop(end);
        assert_eq!(task.await.expect("keeper ran"), "signal 9");
        assert!(
            exited.flag.load(Ordering::Acquire),
            "the keeper says it exited"
        );
    }
}
