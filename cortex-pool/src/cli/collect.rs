//! The collector of `cortex-pool run`: turns the pool's outcomes into lines, in
//! the order the pool settles the tasks.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use pool_core::{Completion, Completions, Pool};
use tokio::sync::{mpsc, watch};

use super::interrupt::{self, Phase};
use super::output::{self, Line};

/// How long a task cancelled by a second signal may take to settle.
const CANCEL_WAIT: Duration = Duration::from_millis(300);

/// How long, after [`CANCEL_WAIT`], the pool may take to kill the workers that
/// did not answer and settle their tasks (a kill and a reap: milliseconds).
const KILL_WAIT: Duration = Duration::from_millis(700);

/// The most finished lines handed to the writer at once: lines that are ready
/// together travel together, so the writer's thread wakes once for them.
pub(crate) const LINE_BATCH: usize = 256;

/// A task the pool accepted.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The pool's id of the task.
    pub(crate) task: u64,
    /// The user's id of the line.
    pub(crate) id: String,
    /// When it was submitted.
    pub(crate) since: Instant,
}

/// What the collector knows of the tasks it has not written a line for, with
/// `O` the outcome of a task.
///
/// The feeder hands a task over after the pool accepted it, so its outcome may
/// arrive first: it is kept in `early` until the task does.
#[derive(Debug)]
struct Book<O> {
    /// Accepted tasks without an outcome: the user's id and the submit time.
    waiting: HashMap<u64, (String, Instant), foldhash::fast::RandomState>,
    /// Outcomes of tasks the feeder has not handed over yet.
    early: HashMap<u64, O, foldhash::fast::RandomState>,
}

/// A task with its outcome: the user's id, the submit time, the outcome.
type Settled<O> = (String, Instant, O);

impl<O> Book<O> {
    fn new() -> Self {
        Self {
            waiting: HashMap::default(),
            early: HashMap::default(),
        }
    }

    /// Takes accepted tasks; returns those whose outcome is known.
    fn accept(&mut self, tasks: Vec<Accepted>) -> Vec<Settled<O>> {
        let mut ready = Vec::new();
        for task in tasks {
            match self.early.remove(&task.task) {
                Some(outcome) => ready.push((task.id, task.since, outcome)),
                None => {
                    self.waiting.insert(task.task, (task.id, task.since));
                }
            }
        }
        ready
    }

    /// Takes the outcomes of tasks (by the pool's id); returns those whose task
    /// is known.
    fn settle(&mut self, outcomes: impl Iterator<Item = (u64, O)>) -> Vec<Settled<O>> {
        let mut ready = Vec::with_capacity(outcomes.size_hint().0);
        for (task, outcome) in outcomes {
            match self.waiting.remove(&task) {
                Some((id, since)) => ready.push((id, since, outcome)),
                None => {
                    self.early.insert(task, outcome);
                }
            }
        }
        ready
    }
}

/// The pool's id of the task an outcome is of.
fn task_of(outcome: Completion) -> (u64, Completion) {
    let task = match &outcome {
        Ok(out) => out.id,
        Err(err) => err.id,
    };
    (task, outcome)
}

/// The lines of settled tasks.
fn lines_of(settled: Vec<Settled<Completion>>) -> Vec<Line> {
    settled
        .into_iter()
        .map(|(id, since, outcome)| line_of(&id, since, outcome))
        .collect()
}

/// The line of a task that ended with `outcome`.
fn line_of(id: &str, since: Instant, outcome: Completion) -> Line {
    let ms = elapsed_ms(since);
    match outcome {
        Ok(out) => output::ok(id, &out, ms),
        Err(err) => output::failed(id, &err, ms),
    }
}

/// Writes a line for each accepted task as its outcome arrives in `done`, until
/// the feeder is finished and every task has its line.
///
/// After a second signal each waiting task (and each one still arriving) is
/// cancelled and given [`CANCEL_WAIT`] to settle. Then the pool kills every
/// worker ([`Pool::shutdown_now`]) and settles each task left once its worker
/// is reaped: cancelled, with its attempts and worker, as the pool knows them.
/// A task still without its outcome after [`KILL_WAIT`] gets a `cancelled`
/// line without them.
pub(crate) async fn collect(
    pool: Pool,
    done: Completions,
    accepted: mpsc::Receiver<Vec<Accepted>>,
    lines: mpsc::Sender<Vec<Line>>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut stage = Stage {
        pool,
        done,
        accepted: Some(accepted),
        book: Book::new(),
        lines,
    };
    let stopping = interrupt::reached(&mut phase, Phase::Stopping);
    if !stage.run_until(stopping, false).await {
        return;
    }
    for task in stage.book.waiting.keys() {
        stage.pool.cancel(*task);
    }
    if stage.run_until(tokio::time::sleep(CANCEL_WAIT), true).await {
        let pool = stage.pool.clone();
        tokio::spawn(async move { pool.shutdown_now().await });
        stage.run_until(tokio::time::sleep(KILL_WAIT), true).await;
    }
    stage.abandon_the_rest().await;
}

/// The collector's channels and what it knows of the tasks in flight.
struct Stage {
    pool: Pool,
    done: Completions,
    /// The feeder's accepted tasks; `None` once the feeder is finished.
    accepted: Option<mpsc::Receiver<Vec<Accepted>>>,
    book: Book<Completion>,
    lines: mpsc::Sender<Vec<Line>>,
}

impl Stage {
    /// Writes lines as outcomes and tasks arrive (cancelling each arriving task
    /// when `cancel_arrivals`), until every task has its line (`false`) or
    /// `until` comes first (`true`).
    async fn run_until(&mut self, until: impl Future<Output = ()>, cancel_arrivals: bool) -> bool {
        tokio::pin!(until);
        let mut outcomes = Vec::with_capacity(LINE_BATCH);
        while self.accepted.is_some() || !self.book.waiting.is_empty() {
            let ready = tokio::select! {
                biased;
                () = &mut until => return true,
                _ = self.done.recv_many(&mut outcomes, LINE_BATCH) => {
                    lines_of(self.book.settle(outcomes.drain(..).map(task_of)))
                }
                next = recv(&mut self.accepted) => match next {
                    Some(tasks) => {
                        if cancel_arrivals {
                            for task in &tasks {
                                self.pool.cancel(task.task);
                            }
                        }
                        lines_of(self.book.accept(tasks))
                    }
                    None => {
                        self.accepted = None;
                        Vec::new()
                    }
                },
            };
            if !ready.is_empty() {
                let _ = self.lines.send(ready).await;
            }
        }
        false
    }

    /// A `cancelled` line for every task still waiting and every one the feeder
    /// still hands over (each cancelled), without waiting for their outcomes
    /// (attempts and worker unknown).
    async fn abandon_the_rest(mut self) {
        let mut abandoned: Vec<Line> = self
            .book
            .waiting
            .drain()
            .map(|(_, (id, since))| output::abandoned(&id, elapsed_ms(since)))
            .collect();
        // The reader stopped at the first signal: what it still hands over is
        // cancelled and not waited for.
        if let Some(accepted) = &mut self.accepted {
            while let Some(tasks) = accepted.recv().await {
                for task in tasks {
                    self.pool.cancel(task.task);
                    abandoned.push(output::abandoned(&task.id, elapsed_ms(task.since)));
                }
            }
        }
        if !abandoned.is_empty() {
            let _ = self.lines.send(abandoned).await;
        }
    }
}

/// The next batch of `accepted`; never ready once it is `None` (closed).
async fn recv(accepted: &mut Option<mpsc::Receiver<Vec<Accepted>>>) -> Option<Vec<Accepted>> {
    match accepted {
        Some(accepted) => accepted.recv().await,
        None => std::future::pending().await,
    }
}

/// Milliseconds since `since`.
fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(task: u64, id: &str) -> Accepted {
        Accepted {
            task,
            id: id.to_owned(),
            since: Instant::now(),
        }
    }

    #[test]
    fn an_outcome_before_its_task_is_matched_when_the_task_arrives() {
        let mut book = Book::new();
        assert!(book.settle([(7, "done")].into_iter()).is_empty());
        assert!(book.accept(vec![accepted(6, "six")]).is_empty());
        let seven = book.accept(vec![accepted(7, "seven")]);
        assert_eq!(seven.len(), 1);
        assert_eq!((seven[0].0.as_str(), seven[0].2), ("seven", "done"));
        let six = book.settle([(6, "also done")].into_iter());
        assert_eq!(six.len(), 1);
        assert_eq!((six[0].0.as_str(), six[0].2), ("six", "also done"));
        assert!(book.waiting.is_empty() && book.early.is_empty());
    }
}
