//! `cortex-pool run --transport fifo`: the same results as stdio, no FIFO left
//! behind, and a stale directory from a SIGKILLed pool cleaned on the next start.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Scratch;
use serde_json::Value;

/// What must match between transports for one line (workers and times may differ).
fn essence(line: &Value) -> (String, String, u64, String) {
    (
        line["id"].as_str().unwrap_or_default().to_owned(),
        line["status"].as_str().unwrap_or_default().to_owned(),
        line["attempts"].as_u64().unwrap_or_default(),
        line["error"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn sorted(run: &common::Run) -> Vec<(String, String, u64, String)> {
    let mut v: Vec<_> = run.lines.iter().map(essence).collect();
    v.sort();
    v
}

#[test]
fn fifo_gives_the_same_results_as_stdio_including_crash_timeout_and_retry() {
    let mut tasks = std::fs::read_to_string(common::example("tasks.jsonl")).unwrap();
    tasks.push_str(&std::fs::read_to_string(common::example("reliability.jsonl")).unwrap());
    let tasks = tasks.replace("\"id\": \"ok\"", "\"id\": \"ok2\"");
    let args = ["-w", "2", "--backoff-ms", "10", "--max-retries", "2"];
    let stdio = common::run(&args, &tasks);
    let dir = Scratch::new("fifo-same");
    let mut fifo_args = args.to_vec();
    fifo_args.extend(["--transport", "fifo", "--fifo-dir", dir.path()]);
    let fifo = common::run(&fifo_args, &tasks);
    assert_eq!(
        (stdio.code, fifo.code),
        (1, 1),
        "{}\n{}",
        stdio.stderr,
        fifo.stderr
    );
    assert_eq!(sorted(&stdio), sorted(&fifo));
    assert_eq!(fifo.lines.len(), 16);
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

#[test]
fn a_sigkilled_pool_leaves_a_stale_fifo_dir_that_the_next_start_removes() {
    let dir = Scratch::new("fifo-stale");
    let mut child = Command::new(common::bin())
        .args([
            "run",
            "-w",
            "2",
            "--transport",
            "fifo",
            "--fifo-dir",
            dir.path(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir
        .entries()
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".fifo"))
    {
        assert!(
            Instant::now() < deadline,
            "the pool never created its FIFOs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.entries().is_empty(),
        "SIGKILL leaves the directory behind"
    );
    // Orphaned workers notice: those connected see EOF, those still waiting for the
    // manager to open its FIFOs see they were re-parented. None lingers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !workers_of(dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "orphaned workers linger: {:?}",
            workers_of(dir.path())
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let run = common::run(
        &["-w", "1", "--transport", "fifo", "--fifo-dir", dir.path()],
        "{\"id\":\"a\",\"type\":\"echo\",\"payload\":\"again\"}\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.line("a")["result"], "again");
    assert!(dir.entries().is_empty(), "left behind: {:?}", dir.entries());
}

/// Processes whose FIFOs live under `dir`.
fn workers_of(dir: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| String::from_utf8_lossy(&env).contains(dir))
        })
        .collect()
}

#[test]
fn fifo_dir_without_the_fifo_transport_is_a_usage_error() {
    let run = common::run(&["--fifo-dir", "/tmp"], "");
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--transport fifo"), "{}", run.stderr);
}

#[test]
fn a_missing_fifo_dir_is_created_private_and_a_bad_one_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("fifo-create");
    let missing = dir.0.join("made/by/run");
    let run = common::run(
        &[
            "-w",
            "1",
            "--transport",
            "fifo",
            "--fifo-dir",
            missing.to_str().unwrap(),
        ],
        "{\"id\":\"a\",\"type\":\"echo\",\"payload\":1}\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.line("a")["result"], 1);
    for made in [dir.0.join("made"), dir.0.join("made/by"), missing.clone()] {
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", made.display());
    }
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let under_file = file.join("sub");
    let run = common::run(
        &[
            "-w",
            "1",
            "--transport",
            "fifo",
            "--fifo-dir",
            under_file.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&under_file.display().to_string()),
        "{}",
        run.stderr
    );
}
