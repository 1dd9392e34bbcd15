//! Tasks that crash their worker, through the real binary (issue 11, item 3): they
//! are the tasks' failures and end in the DLQ, echo tasks keep flowing, and the
//! restart breaker (for workers that die with no task) never opens.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Killed, Scratch};

/// How long the run may take before the test gives up on it (a bound against a
/// hang, not a performance assertion: the run takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn crashing_tasks_are_dead_lettered_while_echo_tasks_flow_and_the_breaker_stays_shut() {
    let dir = Scratch::new("crashing");
    let events_path = dir.0.join("events.jsonl");
    let metrics_path = dir.0.join("metrics.json");
    let mut tasks = String::new();
    for i in 0..30 {
        tasks.push_str(&format!(
            "{{\"id\":\"c{i}\",\"type\":\"crash\",\"payload\":{{\"code\":3}}}}\n"
        ));
        tasks.push_str(&format!(
            "{{\"id\":\"e{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"
        ));
    }
    let mut child = Killed(
        Command::new(common::bin())
            .args(["run", "-w", "2", "--max-retries", "1", "--events"])
            .arg(&events_path)
            .arg("--metrics-json")
            .arg(&metrics_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cortex-pool starts"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin is piped");
    stdin
        .write_all(tasks.as_bytes())
        .expect("the tasks are written");
    drop(stdin);
    let mut stdout = child.0.stdout.take().expect("stdout is piped");
    let mut stderr = child.0.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            began.elapsed() < DEADLINE,
            "run did not finish within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    assert_eq!(status.code(), Some(1), "some tasks failed: {stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 60, "{stdout}");
    for line in &lines {
        let id = line["id"].as_str().expect("an id");
        if id.starts_with('e') {
            assert_eq!(line["status"], "ok", "{line}");
            assert_eq!(line["attempts"], 1, "{line}");
        } else {
            assert_eq!(line["status"], "dead_letter", "{line}");
            assert_eq!(line["error"]["kind"], "worker_crashed", "{line}");
            assert_eq!(line["attempts"], 2, "{line}");
        }
    }
    let events = std::fs::read_to_string(&events_path).expect("events file");
    assert!(
        !events.contains("restart-breaker-open"),
        "the breaker opened: {events}"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metrics_path).expect("metrics file"))
            .expect("metrics JSON");
    assert_eq!(
        metrics["health"]["restartBreakerOpen"], false,
        "{metrics:#}"
    );
    // Each crash task's two attempts killed a worker; a worker that died with
    // several tasks unanswered (the SDK batches replies) blamed none of them,
    // its alert says so, and its tasks ran again alone.
    let unblamed = events.matches("each runs alone next").count() as u64;
    assert_eq!(
        metrics["performance"]["workersCrashed"].as_u64(),
        Some(60 + unblamed),
        "{metrics:#}"
    );
    assert!(
        !stderr.contains("restart-breaker-open"),
        "the breaker opened: {stderr}"
    );
}

/// A run whose workers can no longer start ends instead of waiting for ever:
/// the only worker dies, every replacement fails to start, the restart breaker
/// opens with no worker left, and `run` cancels the tasks, says why and
/// exits 1.
#[test]
fn a_run_whose_workers_cannot_start_again_ends_saying_why() {
    let dir = Scratch::new("dead-pool");
    let script = dir.0.join("worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # The demo worker the first time; every later start fails.\n\
             if [ -e '{marker}' ]; then echo 'cannot start again' >&2; exit 1; fi\n\
             touch '{marker}'\n\
             exec '{bin}' worker\n",
            marker = dir.0.join("started").display(),
            bin = common::bin(),
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("executable");
    let mut child = Killed(
        Command::new(common::bin())
            .args(["run", "-w", "1", "--max-retries", "0", "--worker"])
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cortex-pool starts"),
    );
    child
        .0
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"{\"id\":\"c\",\"type\":\"crash\",\"payload\":{\"code\":3}}\n\
              {\"id\":\"e\",\"type\":\"echo\",\"payload\":1}\n",
        )
        .expect("tasks written");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "run never ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("stdout");
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no worker is left and none could be started"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "every task has its line: {stdout}");
    // The crash task is charged (dead-lettered: no retries) when the echo task
    // had not reached the worker yet, else neither is (the worker batched its
    // replies) and both wait for a worker until the run gives up.
    let echo = lines
        .iter()
        .find(|l| l["id"] == "e")
        .expect("the echo line");
    assert_eq!(
        (&echo["status"], &echo["error"]["kind"]),
        (
            &serde_json::json!("failed"),
            &serde_json::json!("cancelled")
        ),
        "{stdout}"
    );
}
