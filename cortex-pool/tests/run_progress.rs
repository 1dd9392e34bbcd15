//! `--progress`: never glued onto a result line when stdout and stderr are one
//! file, and the real total when the input is a file.

mod common;

use std::process::{Command, Stdio};

fn tasks_file(dir: &common::Scratch, n: usize) -> std::path::PathBuf {
    let path = dir.0.join("tasks.jsonl");
    let body: String = (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"sleep\",\"payload\":{{\"ms\":{}}}}}\n",
                5 + i % 3
            )
        })
        .collect();
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn with_stdout_and_stderr_one_file_the_progress_line_is_cleared_before_each_result() {
    let dir = common::Scratch::new("progress-shared");
    let tasks = tasks_file(&dir, 60);
    let both = dir.0.join("both.txt");
    let file = std::fs::File::create(&both).unwrap();
    let status = Command::new(common::bin())
        .args(["run", "-w", "2", "--progress", "always"])
        .arg(&tasks)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&both).unwrap();
    assert!(text.contains("tasks done"), "the line was drawn: {text}");
    let mut results = 0;
    for line in text.split('\n') {
        // What a terminal shows: the text after the last carriage return.
        let shown = line.rsplit('\r').next().unwrap_or("");
        let shown = shown.strip_prefix("\x1b[2K").unwrap_or(shown);
        if line.contains("\"status\"") {
            serde_json::from_str::<serde_json::Value>(shown)
                .unwrap_or_else(|e| panic!("result line glued to progress: {line:?}: {e}"));
            assert!(!shown.contains("tasks done"), "{line:?}");
            results += 1;
        }
    }
    assert_eq!(results, 60, "{text}");
}

#[test]
fn the_total_is_the_task_count_of_the_input_file() {
    let dir = common::Scratch::new("progress-total");
    let tasks = tasks_file(&dir, 40);
    let out = Command::new(common::bin())
        .args(["run", "-w", "2", "--progress", "always"])
        .arg(&tasks)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let totals: Vec<&str> = stderr
        .split('\r')
        .filter_map(|s| s.strip_prefix("\x1b[2K"))
        .filter(|s| s.contains("tasks done"))
        .collect();
    assert!(!totals.is_empty(), "{stderr:?}");
    for drawn in totals {
        assert!(drawn.contains(" / 40 tasks done"), "{drawn:?}");
    }
    let never = Command::new(common::bin())
        .args(["run", "-w", "1", "--progress", "never"])
        .arg(&tasks)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&never.stderr).contains("tasks done"));
}
