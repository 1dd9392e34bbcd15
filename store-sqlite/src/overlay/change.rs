//! How one journal entry changes one task's record: the one function a commit
//! and a replay both apply.

use task_source::TaskState;

use crate::journal::Entry;
use crate::live::Live;

/// Applies `entry` to `live` if it is the task's next change; `false`
/// (nothing changed) otherwise: a replayed change its row holds already,
/// a settlement of an attempt that is not running, a claim of a task that
/// does not wait.
pub(super) fn change(live: &mut Live, entry: Entry<'static>) -> bool {
    let version = entry.version();
    if version != live.version + 1 {
        return false;
    }
    let running =
        |live: &Live, attempt: u32| live.state == TaskState::Running && live.attempts == attempt;
    let changed = match entry {
        Entry::Accepted { .. } => false,
        Entry::Claimed { at_ms, attempt, .. } => {
            let waiting = matches!(live.state, TaskState::Queued | TaskState::Retrying);
            if waiting {
                live.attempts = attempt;
                live.due_ms = 0;
                live.change(TaskState::Running, at_ms, "attempt", attempt);
            }
            waiting
        }
        Entry::Settled {
            at_ms,
            attempt,
            state,
            line,
            error,
            ..
        } => {
            let now = running(live, attempt);
            if now {
                live.line = Some(line.into_owned());
                // A success leaves no error behind (a retry's, say); a
                // failure without one keeps the last known.
                match error {
                    Some(error) => live.error = Some(error.into_owned()),
                    None if state == TaskState::Ok => live.error = None,
                    None => {}
                }
                live.change(state, at_ms, state.as_str(), attempt);
            }
            now
        }
        Entry::Retrying {
            at_ms,
            attempt,
            due_ms,
            error,
            ..
        } => {
            let now = running(live, attempt);
            if now {
                live.due_ms = due_ms;
                live.error = Some(error.into_owned());
                live.change(TaskState::Retrying, at_ms, "retry", attempt);
            }
            now
        }
        // Back to the queue, the attempt given back.
        Entry::Interrupted { at_ms, attempt, .. } | Entry::Withdrawn { at_ms, attempt, .. } => {
            let now = running(live, attempt);
            if now {
                let event = match entry {
                    Entry::Interrupted { .. } => "interrupted",
                    _ => "withdrawn",
                };
                live.attempts = attempt.saturating_sub(1);
                live.change(TaskState::Queued, at_ms, event, attempt);
            }
            now
        }
        Entry::Requeued { at_ms, .. } => {
            let dead = live.state == TaskState::DeadLetter;
            if dead {
                live.attempts = 0;
                live.due_ms = 0;
                live.line = None;
                live.change(TaskState::Queued, at_ms, "requeued", 0);
            }
            dead
        }
    };
    if changed {
        live.version = version;
    }
    changed
}
