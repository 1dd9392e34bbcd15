//! Health through the CLI: a SIGSTOPped worker is recovered, a bloated worker is
//! recycled, and the metrics JSON shows it.

mod common;

use common::Scratch;

fn metrics(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("metrics file")).expect("metrics JSON")
}

fn recovers_from_a_stopped_worker(transport: &str) {
    let dir = Scratch::new("stop");
    let metrics_path = dir.0.join("metrics.json");
    let events_path = dir.0.join("events.jsonl");
    let tasks = "{\"id\":\"frozen\",\"type\":\"stop\",\"payload\":{\"times\":1}}\n\
                 {\"id\":\"fine\",\"type\":\"echo\",\"payload\":1}\n";
    let run = common::run(
        &[
            "-w",
            "2",
            "--heartbeat-ms",
            "100",
            "--zombie-ms",
            "1000",
            "--backoff-ms",
            "10",
            "--transport",
            transport,
            "--metrics-json",
            metrics_path.to_str().unwrap(),
            "--events",
            events_path.to_str().unwrap(),
        ],
        tasks,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let frozen = run.line("frozen");
    assert_eq!(
        (frozen["status"].as_str(), frozen["attempts"].as_u64()),
        (Some("ok"), Some(2))
    );
    let m = metrics(&metrics_path);
    assert_eq!(m["performance"]["zombiesKilled"], 1, "{m:#}");
    assert_eq!(m["tasks"]["completed"], 2);
    let events = std::fs::read_to_string(&events_path).unwrap();
    let zombies = events
        .lines()
        .filter(|l| l.contains("\"zombie-detected\""))
        .count();
    assert!(zombies >= 1, "{events}");
    let detected: Vec<_> = events
        .lines()
        .filter(|l| l.contains("\"event\":\"zombie-detected\""))
        .collect();
    assert_eq!(
        detected.len(),
        1,
        "killed and replaced exactly once: {events}"
    );
}

#[test]
fn a_sigstopped_worker_is_killed_replaced_and_its_task_completes_over_stdio() {
    recovers_from_a_stopped_worker("stdio");
}

#[test]
fn a_sigstopped_worker_is_killed_replaced_and_its_task_completes_over_fifo() {
    recovers_from_a_stopped_worker("fifo");
}

#[test]
fn a_worker_over_its_rss_limit_is_recycled_and_every_task_completes() {
    let dir = Scratch::new("rss");
    let metrics_path = dir.0.join("metrics.json");
    let mut tasks = String::from("{\"id\":\"big\",\"type\":\"alloc\",\"payload\":{\"mb\":96}}\n");
    for i in 0..20 {
        tasks.push_str(&format!(
            "{{\"id\":\"s{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":20}}}}\n"
        ));
    }
    let run = common::run(
        &[
            "-w",
            "2",
            "--max-rss-mb",
            "48",
            "--heartbeat-ms",
            "50",
            "--metrics-json",
            metrics_path.to_str().unwrap(),
        ],
        &tasks,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.lines.len(), 21);
    let m = metrics(&metrics_path);
    assert!(
        m["performance"]["workersRecycled"].as_u64().unwrap() >= 1,
        "{m:#}"
    );
    assert_eq!(m["tasks"]["completed"], 21);
}

#[test]
fn max_tasks_per_worker_recycles_workers() {
    let dir = Scratch::new("maxtasks");
    let metrics_path = dir.0.join("metrics.json");
    let tasks: String = (0..40)
        .map(|_| "{\"type\":\"sleep\",\"payload\":{\"ms\":20}}\n".to_owned())
        .collect();
    let run = common::run(
        &[
            "-w",
            "2",
            "--max-tasks-per-worker",
            "5",
            "--metrics-json",
            metrics_path.to_str().unwrap(),
        ],
        &tasks,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = metrics(&metrics_path);
    // Limits are soft: a worker keeps serving until its replacement is ready.
    assert!(
        m["performance"]["workersRecycled"].as_u64().unwrap() >= 2,
        "{m:#}"
    );
    assert!(m["performance"]["workersSpawned"].as_u64().unwrap() >= 4);
}

#[test]
fn kill_rss_mb_kills_a_worker_over_the_hard_limit_mid_task() {
    let run = common::run(
        &["-w", "1", "--kill-rss-mb", "50", "--max-retries", "0"],
        // It holds its memory until it is killed: the pool's health check (every
        // second by default) finds it over the limit while it runs.
        "{\"id\":\"big\",\"type\":\"alloc\",\"payload\":{\"mb\":200,\"hold_ms\":60000}}\n",
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let big = run.line("big");
    assert_eq!(big["error"]["kind"], "unhealthy", "{big}");
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the hard limit of 50 MiB"),
        "{big}"
    );
}

#[test]
fn the_soft_rss_limit_is_checked_when_the_task_that_crossed_it_completes() {
    let dir = Scratch::new("rss-prompt");
    let events_path = dir.0.join("events.jsonl");
    let mut tasks = String::from("{\"id\":\"big\",\"type\":\"alloc\",\"payload\":{\"mb\":96}}\n");
    for i in 0..5 {
        tasks.push_str(&format!(
            "{{\"id\":\"s{i}\",\"type\":\"sleep\",\"payload\":{{\"ms\":20}}}}\n"
        ));
    }
    let run = common::run(
        &[
            "-w",
            "1",
            "--max-rss-mb",
            "48",
            "--events",
            events_path.to_str().unwrap(),
        ],
        &tasks,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&events_path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event line"))
        .collect();
    let pos = |event: &str, key: &str, value: &serde_json::Value| {
        events
            .iter()
            .position(|e| e["event"] == event && e[key] == *value)
    };
    // The first line is the pool's task 1.
    let assigned = pos("task-assigned", "task", &serde_json::json!(1)).expect("alloc assigned");
    let worker = events[assigned]["worker"].clone();
    let recycled = pos("worker-recycled", "worker", &worker).expect("the bloated worker recycled");
    let completed = pos("task-completed", "task", &serde_json::json!(1)).expect("alloc completed");
    assert!(
        recycled < completed,
        "RSS is read as the task completes, not on a later health tick: {events:#?}"
    );
}
