//! Probes written outside the crate: installed with `PoolBuilder::probe`, judged
//! by what they declare (`kind`, `wants_completions`), never by their name.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pool_core::manager::{AlertKind, AlertSeverity};
use pool_core::testing::{MockAction, MockTransport};
use pool_core::{HealthProbe, Pool, ProbeKind, Verdict, Vitals, WorkerCommand};

/// Names itself like a shipped probe, but is a custom one: kills a worker once it
/// has done `after` tasks (only `name` and `check` are written).
#[derive(Debug)]
struct KillAfter {
    after: u64,
}

impl HealthProbe for KillAfter {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        if vitals.tasks_done >= self.after {
            Verdict::Kill(format!("did {} tasks", vitals.tasks_done))
        } else {
            Verdict::Healthy
        }
    }
}

/// Suspects every worker that has done a task.
#[derive(Debug)]
struct SuspectBusy;

impl HealthProbe for SuspectBusy {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        if vitals.tasks_done > 0 {
            Verdict::Suspect("did a task".to_owned())
        } else {
            Verdict::Healthy
        }
    }
}

/// Records the task counts it is shown; opts into every completion.
#[derive(Debug, Default)]
struct Counting {
    seen: Arc<Mutex<BTreeSet<u64>>>,
}

impl HealthProbe for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(vitals.tasks_done);
        }
        Verdict::Healthy
    }

    fn wants_completions(&self) -> bool {
        true
    }
}

async fn start_with(workers: usize, probe: impl HealthProbe) -> Pool {
    let (transport, _) = MockTransport::new(|_| MockAction::Echo);
    Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(workers))
        .probe(probe)
        .start()
        .await
        .expect("pool starts")
}

#[test]
fn a_probe_with_only_a_name_and_a_check_gets_the_defaults() {
    let probe = KillAfter { after: 1 };
    assert_eq!(probe.kind(), ProbeKind::Custom);
    assert!(!probe.wants_completions());
    assert!(!probe.needs_rss());
}

#[tokio::test(start_paused = true)]
async fn a_custom_kill_is_a_worker_killed_alert_not_a_zombie_whatever_its_name() {
    let pool = start_with(1, KillAfter { after: 1 }).await;
    let out = pool.submit(common::task("work", 1)).await.unwrap().await;
    assert!(out.is_ok(), "{out:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let killed = loop {
        let alerts = pool.alerts().await;
        if let Some(a) = alerts.iter().find(|a| a.kind == "worker-killed") {
            break a.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{alerts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(killed.kind, AlertKind::WorkerKilled.as_str());
    assert_eq!(killed.severity, AlertSeverity::Warning);
    assert_eq!(killed.worker_id.as_deref(), Some("worker-0"));
    assert!(killed.message.contains("did 1 tasks"), "{killed:?}");
    let alerts = pool.alerts().await;
    assert!(
        alerts.iter().all(|a| a.kind != "zombie-detected"),
        "{alerts:?}"
    );
    assert_eq!(pool.metrics().performance.zombies_killed, 0);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_custom_suspect_is_a_worker_suspect_alert_not_a_missed_heartbeat() {
    let pool = start_with(1, SuspectBusy).await;
    let out = pool.submit(common::task("work", 1)).await.unwrap().await;
    assert!(out.is_ok(), "{out:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = pool.alerts().await;
        if let Some(a) = alerts.iter().find(|a| a.kind == "worker-suspect") {
            assert_eq!(a.severity, AlertSeverity::Warning);
            assert!(
                alerts
                    .iter()
                    .all(|a| a.kind != "missed-heartbeat" && a.kind != "high-memory"),
                "{alerts:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{alerts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workers = pool.workers().await;
    assert_eq!(workers[0].state, "suspect", "{workers:?}");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_opts_in_is_shown_every_completion() {
    let probe = Counting::default();
    let seen = probe.seen.clone();
    let pool = start_with(1, probe).await;
    let mut handles = Vec::new();
    for n in 0..20 {
        handles.push(pool.submit(common::task("work", n)).await.unwrap());
    }
    for handle in handles {
        assert!(handle.await.is_ok());
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let expected: BTreeSet<u64> = (1..=20).collect();
    assert!(seen.is_superset(&expected), "{seen:?}");
    pool.shutdown().await;
}

/// Suspects every worker that has lived `after` or longer.
#[derive(Debug)]
struct SuspectOld {
    after: Duration,
}

impl HealthProbe for SuspectOld {
    fn name(&self) -> &'static str {
        "old"
    }

    fn check(&self, vitals: &Vitals) -> Verdict {
        if vitals.age >= self.after {
            Verdict::Suspect("old".to_owned())
        } else {
            Verdict::Healthy
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_completion_judged_by_the_probes_that_opted_in_does_not_clear_a_suspicion() {
    let (transport, _) = MockTransport::new(|_| MockAction::EchoAfter(Duration::from_secs(1)));
    let pool = Pool::builder(transport, WorkerCommand::new("mock-worker"))
        .config(common::config(1))
        .probe(SuspectOld {
            after: Duration::from_millis(200),
        })
        .probe(Counting::default())
        .start()
        .await
        .expect("pool starts");
    let handle = pool.submit(common::task("work", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.workers().await[0].state, "suspect");
    assert!(handle.await.is_ok());
    // Only the opted-in probe (healthy) was consulted on the completion: the
    // worker stays suspect.
    let workers = pool.workers().await;
    assert_eq!(workers[0].state, "suspect", "{workers:?}");
    pool.shutdown().await;
}
