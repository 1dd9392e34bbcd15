//! `cortex-pool run`: the JSON-lines contract, exit codes and invalid lines.

mod common;

use serde_json::json;

#[test]
fn the_shipped_example_runs_every_task_ok_and_exits_0() {
    let tasks = std::fs::read_to_string(common::example("tasks.jsonl")).unwrap();
    let run = common::run(&["-w", "2", "--backoff-ms", "10"], &tasks);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.lines.len(), tasks.lines().count());
    for line in &run.lines {
        assert_eq!(line["status"], "ok", "{line}");
        assert!(line["attempts"].as_u64().unwrap() >= 1);
        assert!(line["worker"].as_str().unwrap().starts_with("worker-"));
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(
        run.line("hello")["result"],
        json!({"greeting": "hello, pool"})
    );
    assert_eq!(run.line("flaky")["attempts"], 2);
    assert_eq!(
        run.line("9")["result"],
        json!([1, 2, 3]),
        "no id: the line number"
    );
    assert_eq!(
        run.line("chatty")["result"],
        "ok",
        "println! in a handler is harmless"
    );
    assert!(run.stderr.contains("10 ok, 0 failed"), "{}", run.stderr);
}

#[test]
fn failures_dead_letters_and_invalid_lines_are_reported_and_exit_1() {
    let tasks = std::fs::read_to_string(common::example("reliability.jsonl")).unwrap();
    let run = common::run(
        &["-w", "2", "--backoff-ms", "10", "--max-retries", "2"],
        &tasks,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.lines.len(), 6);
    assert_eq!(run.line("ok")["status"], "ok");
    assert_eq!(run.line("retried")["attempts"], 3);
    let poison = run.line("poison");
    assert_eq!(poison["status"], "dead_letter");
    assert_eq!(poison["error"]["kind"], "worker_crashed");
    assert!(poison["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exit code 3"));
    let stuck = run.line("stuck");
    assert_eq!(
        (stuck["status"].as_str(), stuck["attempts"].as_u64()),
        (Some("dead_letter"), Some(3))
    );
    assert_eq!(stuck["error"]["kind"], "timeout");
    assert_eq!(run.line("always-fails")["error"]["kind"], "handler");
    let invalid = run.line("6");
    assert_eq!(
        (invalid["status"].as_str(), invalid["line"].as_u64()),
        (Some("invalid"), Some(6))
    );
}

#[test]
fn a_non_retryable_failure_is_failed_not_dead_lettered() {
    let input = "{\"id\":\"x\",\"type\":\"sleep\",\"payload\":{\"ms\":\"soon\"}}\n";
    let run = common::run(&["-w", "1"], input);
    assert_eq!(run.code, 1);
    let x = run.line("x");
    assert_eq!(
        (x["status"].as_str(), x["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert_eq!(x["error"]["kind"], "bad_input");
}

#[test]
fn an_empty_input_is_fine() {
    let run = common::run(&["-w", "1"], "");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.lines.is_empty());
}

#[test]
fn usage_and_configuration_errors_exit_2_with_a_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["--policy", "fastest"], "fastest"),
        (&["--workers", "0"], "--workers"),
        (&["--transport", "carrier-pigeon"], "carrier-pigeon"),
        (&["/no/such/tasks.jsonl"], "/no/such/tasks.jsonl"),
        (&["/"], "it is a directory"),
        (
            &["--heartbeat-ms", "5000", "--suspect-ms", "1000"],
            "--heartbeat-ms: must be shorter than --suspect-ms",
        ),
        (
            &["-w", "1", "--worker", "/no/such/worker-binary"],
            "/no/such/worker-binary",
        ),
        (&["--bogus-flag"], "--bogus-flag"),
        (&["--max-line-bytes", "0"], "--max-line-bytes"),
        (&["--prefetch-bytes", "0"], "--prefetch-bytes"),
    ];
    for (args, needle) in cases {
        let run = common::run(args, "");
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(run.lines.is_empty());
    }
}

#[test]
fn a_worker_that_dies_at_start_fails_with_its_exit_status_and_stderr() {
    let run = common::run(
        &[
            "-w",
            "2",
            "--",
            "sh",
            "-c",
            "echo 'no config file' >&2; exit 3",
        ],
        "{\"type\":\"echo\"}\n",
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("exit code 3"), "{}", run.stderr);
    assert!(run.stderr.contains("no config file"), "{}", run.stderr);
}

#[test]
fn priority_zero_is_served_before_the_default() {
    // `block` holds the only worker while the others wait; it has priority 0 as
    // well, so the order is the same whether `run` submits it alone or in one
    // batch with the rest (FIFO within a level).
    let mut tasks = String::from(
        "{\"id\":\"block\",\"type\":\"sleep\",\"payload\":{\"ms\":300},\"priority\":0}\n",
    );
    for i in 0..5 {
        tasks.push_str(&format!(
            "{{\"id\":\"d{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"
        ));
    }
    tasks.push_str("{\"id\":\"first\",\"type\":\"echo\",\"payload\":0,\"priority\":0}\n");
    // Strict priority order is what `--prefetch 0` promises.
    let run = common::run(
        &["-w", "1", "--policy", "round-robin", "--prefetch", "0"],
        &tasks,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let order: Vec<&str> = run
        .lines
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["block", "first", "d0", "d1", "d2", "d3", "d4"]);
}

#[test]
fn a_window_bounded_to_one_waiting_task_runs_every_task() {
    let tasks: String = (0..50)
        .map(|i| format!("{{\"id\":\"t{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"))
        .collect();
    let run = common::run(&["-w", "2", "--prefetch-bytes", "1"], &tasks);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut ids: Vec<&str> = run
        .lines
        .iter()
        .filter(|l| l["status"] == "ok")
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
}

/// `run` with its standard output or error on `/dev/full` (every write fails).
fn run_with(args: &[&str], stdout_full: bool, stderr_full: bool) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let mut child = Command::new(common::bin())
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(if stdout_full {
            full().into()
        } else {
            Stdio::piped()
        })
        .stderr(if stderr_full {
            full().into()
        } else {
            Stdio::piped()
        })
        .spawn()
        .expect("cortex-pool starts");
    let tasks: String = (1..=5)
        .map(|i| format!("{{\"id\":\"t{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"))
        .collect();
    let _ = child.stdin.take().unwrap().write_all(tasks.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn results_that_cannot_be_written_stop_the_run_and_exit_1_saying_so() {
    let (code, _, stderr) = run_with(&["-w", "1"], true, false);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot write the results to standard output"),
        "{stderr}"
    );
}

#[test]
fn a_standard_error_that_cannot_be_written_changes_nothing() {
    let (code, stdout, _) = run_with(&["-w", "1"], false, true);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 5);
}

/// An events file whose writes fail (`/dev/full`) does not stop the tasks,
/// and the run says so and exits 1 (as for a metrics file that could not be
/// written), instead of leaving an incomplete file unnoticed.
#[test]
fn an_events_file_that_cannot_be_written_exits_1_saying_so() {
    let (code, stdout, stderr) = run_with(&["-w", "1", "--events", "/dev/full"], false, false);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout.lines().count(), 5, "every task still ran");
    assert!(
        stderr.contains("cannot write the events to /dev/full"),
        "{stderr}"
    );
}

#[test]
fn a_metrics_file_that_cannot_be_made_is_a_usage_error_before_any_task_runs() {
    let (code, stdout, stderr) = run_with(
        &["-w", "1", "--metrics-json", "/nonexistent-dir/m.json"],
        false,
        false,
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "", "no task ran");
    assert!(stderr.contains("/nonexistent-dir/m.json"), "{stderr}");
}

/// An invalid line answers under its own id, else its line number; a later
/// line with that id runs no task under it (it is a duplicate), so a result
/// never shares its id with an invalid line.
#[test]
fn no_task_runs_under_an_id_an_invalid_line_answered_under() {
    let long = format!(r#"{{"type":"echo","payload":"{}"}}"#, "x".repeat(100));
    let input = format!(
        "{long}\nnot json\n{}\n{}\n",
        r#"{"id":"1","type":"echo"}"#, r#"{"id":"2","type":"echo"}"#
    );
    let run = common::run(&["-w", "1", "--max-line-bytes", "60"], &input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.lines.len(), 4);
    for line in &run.lines {
        assert_eq!(line["status"], "invalid", "{line}");
    }
    for line in &run.lines[2..] {
        let message = line["error"]["message"].as_str().unwrap();
        assert!(message.contains("duplicate id"), "{line}");
    }
}

#[test]
fn a_directory_on_standard_input_is_a_usage_error() {
    let out = std::process::Command::new(common::bin())
        .args(["run", "-w", "1"])
        .stdin(std::fs::File::open("/").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no line");
    assert!(
        stderr.contains("standard input: it is a directory"),
        "{stderr}"
    );
}

/// A busy run's events file holds every event: each task's completion, and
/// no `events-lost` line (a writer that read the pool's channel itself fell
/// behind and lost up to half of a 2 000-task run's events while `run`
/// still exited 0).
#[test]
fn a_busy_runs_events_file_loses_no_event() {
    let dir = common::Scratch::new("events-busy");
    let events_path = dir.0.join("events.jsonl");
    let tasks: String = (0..5_000)
        .map(|i| format!("{{\"id\":\"e{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"))
        .collect();
    // From a file: standard input written whole before the output is read
    // would fill both pipes.
    let tasks_path = dir.0.join("tasks.jsonl");
    std::fs::write(&tasks_path, tasks).expect("tasks file");
    let run = common::run(
        &[
            "-w",
            "2",
            "--events",
            events_path.to_str().unwrap(),
            tasks_path.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.lines.len(), 5_000);
    let events = std::fs::read_to_string(&events_path).expect("events file");
    let count = |name: &str| {
        events
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{name}\"")))
            .count()
    };
    assert_eq!(count("events-lost"), 0);
    assert_eq!(count("task-queued"), 5_000);
    assert_eq!(count("task-completed"), 5_000);
    assert_eq!(count("pool-shutdown"), 1);
}

/// A byte-order mark before the first line (files saved by some Windows
/// editors) is not part of the line; one anywhere else is.
#[test]
fn a_byte_order_mark_before_the_first_line_is_skipped() {
    let run = common::run(
        &["-w", "1"],
        "\u{feff}{\"id\":\"bom\",\"type\":\"echo\",\"payload\":1}\n\
         \u{feff}{\"id\":\"second\",\"type\":\"echo\",\"payload\":2}\n",
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let status = |id: &str| {
        run.lines
            .iter()
            .find(|l| l["id"] == id)
            .map(|l| l["status"].clone())
    };
    assert_eq!(
        status("bom"),
        Some(serde_json::json!("ok")),
        "{:?}",
        run.lines
    );
    assert_eq!(
        status("2"),
        Some(serde_json::json!("invalid")),
        "{:?}",
        run.lines
    );
}

/// A flag value the pool refuses is named as the flag the user typed, not as
/// the settings key behind it.
#[test]
fn a_refused_flag_value_is_named_by_its_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--kill-rss-mb", "10", "--max-rss-mb", "20"],
            "invalid flags: --kill-rss-mb: must not be below --max-rss-mb",
        ),
        (
            &["--heartbeat-ms", "2000", "--suspect-ms", "1000"],
            "--heartbeat-ms: must be shorter than --suspect-ms",
        ),
        // The suspect limit derived from the zombie limit: the flag given is named.
        (
            &["--zombie-ms", "1000"],
            "--zombie-ms: must be longer than --heartbeat-ms (5000 ms, the default)",
        ),
    ];
    for (args, said) in cases {
        let run = common::run(args, "");
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(said), "{}", run.stderr);
    }
}

/// A payload that cannot be carried (a number out of range) makes its line
/// invalid under the line's own id, and the error's column counts from the
/// start of the line, as every other JSON error's does.
#[test]
fn a_payload_error_keeps_the_lines_id_and_names_its_column_in_the_line() {
    let run = common::run(
        &["-w", "1"],
        "{\"id\":\"a\",\"type\":\"echo\",\"payload\":1}\n\
         {\"id\":\"p\",\"type\":\"echo\",\"payload\":{\"a\":[1,2,1e999]}}\n",
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let bad = run
        .lines
        .iter()
        .find(|l| l["status"] == "invalid")
        .expect("an invalid line");
    assert_eq!(bad["id"], "p", "{bad}");
    assert_eq!(
        bad["error"]["message"], "payload: number out of range at line 2 column 49",
        "{bad}"
    );
}
