//! A caller hands its tasks to an idle worker itself (the desk), and a task
//! it queued is never out of sight meanwhile: while the balance policy picks,
//! a cancel or a shutdown still finds it in the queue. A single task
//! submitted while nothing is queued is handed over without being queued: it
//! has no id anyone was told yet, and a shutdown meanwhile either refuses it
//! or, once a worker's book took it, ends it.
//!
//! The policy here stops inside `pick` until the test lets it go, so the
//! cancel or the shutdown happens exactly while the caller is handing off.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::testing::{MockAction, MockRecorder, MockTransport};
use pool_core::{
    BalancePolicy, FinalStatus, Pool, PoolConfig, SubmitError, WorkerCommand, WorkerSnapshot,
};
use tokio::sync::mpsc;

/// Picks the first candidate; once armed, it says so and waits to be let go.
#[derive(Debug)]
struct Gate {
    armed: Arc<AtomicBool>,
    entered: mpsc::UnboundedSender<()>,
    release: Mutex<std_mpsc::Receiver<()>>,
}

impl BalancePolicy for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn pick(&mut self, _candidates: &[WorkerSnapshot]) -> usize {
        if self.armed.swap(false, SeqCst) {
            let _ = self.entered.send(());
            let release = self.release.lock().expect("one picker at a time");
            let _ = release.recv_timeout(Duration::from_secs(30));
        }
        0
    }
}

/// What the test holds of its gate.
struct GateControl {
    armed: Arc<AtomicBool>,
    entered: mpsc::UnboundedReceiver<()>,
    release: std_mpsc::Sender<()>,
}

async fn start() -> (Pool, GateControl, Arc<MockRecorder>) {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let (release, release_rx) = std_mpsc::channel();
    let armed = Arc::new(AtomicBool::new(false));
    let gate = Gate {
        armed: armed.clone(),
        entered: entered_tx,
        release: Mutex::new(release_rx),
    };
    let (transport, recorder) = MockTransport::new(|t| {
        if t.task_type == "wait" {
            MockAction::UntilCancelled
        } else {
            MockAction::Echo
        }
    });
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(PoolConfig {
            prefetch: 0,
            // No heartbeat wakes the actor while a caller waits at the gate
            // (a woken actor would take the task itself, and wait for the
            // policy); only the health tick, once a second, still does.
            heartbeat_interval: Duration::from_secs(20),
            suspect_after: Duration::from_secs(80),
            zombie_after: Duration::from_secs(160),
            ..common::config(1)
        })
        .policy(gate)
        .start()
        .await
        .expect("pool starts");
    let control = GateControl {
        armed,
        entered,
        release,
    };
    (pool, control, recorder)
}

/// [`start`], and an echo answered: the worker is ready.
async fn start_ready() -> (Pool, GateControl, Arc<MockRecorder>) {
    let (pool, control, recorder) = start().await;
    pool.submit(common::task("echo", 1))
        .await
        .expect("accepted")
        .await
        .expect("the worker is ready");
    (pool, control, recorder)
}

/// Waits a millisecond on the test's own thread. Not a runtime timer: while
/// the gate holds the caller, threads of the runtime are held too (the
/// caller's, and any waiting for the desk), and none of them may be left to
/// serve the runtime's timers.
fn wait_a_moment() {
    std::thread::sleep(Duration::from_millis(1));
}

/// How the test's caller submits its task.
#[derive(Debug, Clone, Copy)]
enum Submit {
    /// `submit`: handed over straight from the caller while nothing is queued.
    One,
    /// `submit_many`: queued first, then handed over from the queue.
    Queued,
}

/// Submits `task` on another task, and returns once its caller is inside the
/// policy's pick.
async fn submit_until_picking(
    pool: &Pool,
    control: &mut GateControl,
    task: pool_core::Task,
    how: Submit,
) -> tokio::task::JoinHandle<Result<pool_core::TaskHandle, SubmitError>> {
    control.armed.store(true, SeqCst);
    let caller = pool.clone();
    let submit = tokio::spawn(async move {
        match how {
            Submit::One => caller.submit(task).await,
            Submit::Queued => caller
                .submit_many([task])
                .await
                .map(|mut handles| handles.remove(0)),
        }
    });
    tokio::time::timeout(Duration::from_secs(10), control.entered.recv())
        .await
        .expect("the caller reaches the policy")
        .expect("the gate is alive");
    submit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_while_its_caller_hands_a_queued_task_off_cancels_it() {
    let (pool, mut control, _) = start().await;
    let first = pool
        .submit(common::task("echo", 1))
        .await
        .expect("accepted");
    let next_id = first.id() + 1;
    first.await.expect("echoed");

    let submit =
        submit_until_picking(&pool, &mut control, common::task("wait", 2), Submit::Queued).await;
    pool.cancel(next_id);
    // Commands are handled in order: once this is answered, so was the
    // cancel. Unless the actor's health tick (once a second) found the queued
    // task meanwhile and waits for the same policy, behind the gate: then
    // the cancel is handled once the gate opens, and the test does not sit
    // out the gate's 30 s.
    let _ = tokio::time::timeout(Duration::from_secs(2), pool.workers()).await;
    control.release.send(()).expect("the gate waits");

    let handle = submit.await.expect("joined").expect("accepted");
    assert_eq!(handle.id(), next_id);
    let err = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the cancelled task ends")
        .expect_err("it was cancelled");
    assert_eq!(err.status, FinalStatus::Cancelled);
    pool.shutdown_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_while_a_caller_hands_a_task_off_still_ends_that_task() {
    for how in [Submit::One, Submit::Queued] {
        shutdown_while_handing_off(how).await;
    }
}

async fn shutdown_while_handing_off(how: Submit) {
    let (pool, mut control, _) = start().await;
    let submit = submit_until_picking(&pool, &mut control, common::task("echo", 1), how).await;
    let stopper = pool.clone();
    let shutdown = tokio::spawn(async move { stopper.shutdown().await });
    // The shutdown may begin now (the task must not be out of the queue
    // meanwhile), or wait for the policy, which the actor shares: either way
    // the gate opens after a while.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while !pool.metrics().pool.shutting_down && std::time::Instant::now() < deadline {
        wait_a_moment();
    }
    control.release.send(()).expect("the gate waits");

    let handle = match (how, submit.await.expect("joined")) {
        (_, Ok(handle)) => handle,
        // A single task is not accepted until a worker's book takes it: a
        // shutdown that began while the policy picked refuses it instead.
        (Submit::One, Err(SubmitError::ShuttingDown(task))) => {
            assert_eq!(task.payload, common::task("echo", 1).payload);
            tokio::time::timeout(Duration::from_secs(10), shutdown)
                .await
                .expect("the pool shuts down")
                .expect("joined");
            return;
        }
        (_, Err(e)) => panic!("{how:?}: a queued task was refused: {e}"),
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap_or_else(|_| {
            panic!("{how:?}: the task ends: it was not lost on its way to a worker")
        });
    if let Err(err) = outcome {
        assert_eq!(err.failure.kind(), "shutting_down");
    }
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the pool shuts down")
        .expect("joined");
}

/// A task queued before `shutdown_now` is never handed out on the way to
/// killing every worker: it ends "shutting down" without having started,
/// also while its caller is still handing it off (here: inside the pick).
/// The pool has answered no task yet: a lane refills its worker after the
/// read of an answer, and would take the task from the queue itself when
/// that read came just before it was queued.
///
/// The gate holds whoever picks first: when that is the actor's own dispatch
/// pass (woken between the caller's queueing and its pick), the actor does
/// not answer, the scenario did not happen, and it is set up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_queued_before_shutdown_now_never_starts() {
    for _ in 0..5 {
        let (pool, mut control, recorder) = start().await;
        let submit =
            submit_until_picking(&pool, &mut control, common::task("echo", 2), Submit::Queued)
                .await;
        let actor_answers = tokio::time::timeout(Duration::from_millis(500), pool.workers())
            .await
            .is_ok();
        if actor_answers {
            return queued_task_ends_unstarted(pool, control, recorder, submit).await;
        }
        control.release.send(()).expect("the gate waits");
        let _ = submit.await;
        pool.shutdown_now().await;
    }
    panic!("the caller was never the one in the policy, in 5 tries");
}

/// [`a_task_queued_before_shutdown_now_never_starts`] once the caller holds
/// the gate with its task queued.
async fn queued_task_ends_unstarted(
    pool: Pool,
    control: GateControl,
    recorder: Arc<MockRecorder>,
    submit: tokio::task::JoinHandle<Result<pool_core::TaskHandle, SubmitError>>,
) {
    let stopper = pool.clone();
    let stopped = tokio::spawn(async move { stopper.shutdown_now().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pool.metrics().pool.shutting_down {
        assert!(std::time::Instant::now() < deadline, "the shutdown begins");
        wait_a_moment();
    }
    control.release.send(()).expect("the gate waits");
    let handle = submit
        .await
        .expect("joined")
        .expect("queued before the shutdown");
    let queued_id = handle.id();
    let err = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the queued task ends")
        .expect_err("it never ran");
    assert_eq!(err.failure.kind(), "shutting_down");
    assert_eq!(err.attempts, 0, "{err:?}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the pool stops")
        .expect("joined");
    assert!(
        !recorder.started().iter().any(|t| t.id == queued_id),
        "the queued task was written to a worker about to be killed"
    );
}

/// A single task whose caller is still waiting for the policy's pick when
/// another caller queues a task of higher priority does not pass that task:
/// the caller looks at the queue again under the picked worker's book, and
/// queues its own task behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_queued_while_a_single_submit_picks_a_worker_runs_first() {
    let (pool, mut control, recorder) = start_ready().await;

    let low = common::task("echo", 2).with_priority(90);
    let submit = submit_until_picking(&pool, &mut control, low, Submit::One).await;
    // Its hand-off waits for the desk, which the first caller holds.
    let other = pool.clone();
    let high = tokio::spawn(async move {
        other
            .submit_many([common::task("echo", 3).with_priority(0)])
            .await
    });
    // Counted as submitted as it is queued (the first caller's task is
    // counted once a worker's book takes it). The worker's lane may take it
    // from the queue meanwhile: it runs first then too.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.metrics().tasks.submitted < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the other caller's task is queued"
        );
        wait_a_moment();
    }
    control.release.send(()).expect("the gate waits");

    let low = submit.await.expect("joined").expect("accepted");
    let high = high.await.expect("joined").expect("accepted").remove(0);
    let ids = [high.id(), low.id()];
    low.await.expect("echoed");
    high.await.expect("echoed");
    let order: Vec<u64> = recorder
        .started()
        .iter()
        .map(|t| t.id)
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(order, ids, "the queued task of priority 0 ran first");
    pool.shutdown_now().await;
}
