//! `docs/examples/queue_submit.py` (nats-py) against a real server, with this
//! crate's source in the daemon's place: the example's tasks are claimed,
//! settled, and their result lines read back from the bucket by Python.

use std::process::Stdio;
use std::time::Duration;

use source_nats::test_server::NatsServer;
use source_nats::{NatsConfig, NatsSource};
use task_source::{now_ms, Outcome, Settlement, TaskSource, TaskState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_submits_and_reads_results() {
    let server = NatsServer::start();
    let has_nats_py = std::process::Command::new("python3")
        .args(["-c", "import nats"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_nats_py,
        "python3 with nats-py is needed: `python3 -m pip install nats-py` (cargo xtask test installs it)"
    );
    let source = NatsSource::connect(NatsConfig::new(server.url()))
        .await
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/queue_submit.py"
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(server.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Play the daemon: echo every task back until the example exits.
    let example = async {
        loop {
            tokio::select! {
                status = child.wait() => break status.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let claimed = source.claim(16, now_ms()).await.unwrap();
            let settled = claimed
                .into_iter()
                .map(|c| {
                    let payload: serde_json::Value = serde_json::from_str(&c.task.payload).unwrap();
                    let line = serde_json::json!({"id": c.task.id, "status": "ok", "result": payload, "attempts": c.attempt});
                    Settlement {
                        id: c.task.id,
                        attempt: c.attempt,
                        outcome: Outcome::Settled {
                            state: TaskState::Ok,
                            line: line.to_string(),
                            error: None,
                        },
                    }
                })
                .collect();
            source.settle(settled).await.unwrap();
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(60), example)
        .await
        .expect("the example did not finish within 60 s");
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        status.success(),
        "the example failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["status"] == "ok")
        .collect();
    assert_eq!(results.len(), 3, "{stdout}");
    assert_eq!(results[0]["result"], serde_json::json!({"n": 0}));
    // Each line read from the bucket carries its task's type and priority
    // (the example's task `n` has priority 10 n).
    for line in &results {
        let n = line["result"]["n"].as_u64().expect("the task's n");
        assert_eq!(line["type"], "echo", "{line}");
        assert_eq!(line["priority"], 10 * n, "{line}");
    }
}
