//! `cortex-pool run` against hostile input: huge durations, bytes that are not
//! UTF-8, oversized lines, repeated ids. One output line per input line, always.

mod common;

#[test]
fn a_huge_task_timeout_is_refused_and_the_next_task_still_runs() {
    let run = common::run(
        &["-w", "1"],
        "{\"type\":\"echo\",\"payload\":1,\"timeout_ms\":68719476735}\n{\"type\":\"echo\",\"payload\":2}\n",
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(run.lines.len(), 2, "{}", run.stderr);
    let huge = run.line("1");
    assert_eq!(huge["status"], "invalid");
    assert!(
        huge["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout_ms 68719476735 is above the maximum"),
        "{huge}"
    );
    assert_eq!(run.line("2")["status"], "ok", "{}", run.stderr);
    assert_eq!(run.line("2")["result"], 2);
}

#[test]
fn huge_duration_flags_are_usage_errors_not_panics() {
    for flag in [
        "--timeout-ms",
        "--backoff-ms",
        "--heartbeat-ms",
        "--suspect-ms",
        "--zombie-ms",
    ] {
        let run = common::run(
            &["-w", "1", flag, "100000000000"],
            "{\"type\":\"echo\",\"payload\":1}\n",
        );
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{flag}: {}", run.stderr);
    }
    let rss = common::run(&["-w", "1", "--max-rss-mb", "18446744073709551615"], "");
    assert_eq!(rss.code, 2, "{}", rss.stderr);
    assert!(!rss.stderr.contains("panicked"), "{}", rss.stderr);
}

#[test]
fn a_line_that_is_not_utf8_is_invalid_and_every_later_line_still_runs() {
    let mut input = Vec::new();
    for i in 1..=2000 {
        if i == 1000 {
            input.extend_from_slice(b"{\"type\":\"echo\",\"payload\":\"\xff\xfe\"}\n");
        } else {
            input.extend_from_slice(format!("{{\"type\":\"echo\",\"payload\":{i}}}\n").as_bytes());
        }
    }
    let run = common::run_bytes(&["-w", "2"], &input);
    assert_eq!(run.lines.len(), 2000, "{}", run.stderr);
    let bad = run.line("1000");
    assert_eq!(bad["status"], "invalid");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1000 is not valid UTF-8"),
        "{bad}"
    );
    assert_eq!(run.line("2000")["result"], 2000);
    let ok = run.lines.iter().filter(|l| l["status"] == "ok").count();
    assert_eq!(ok, 1999);
}

#[test]
fn a_line_longer_than_max_line_bytes_is_invalid_and_the_next_runs() {
    let mut input = String::from("{\"type\":\"echo\",\"payload\":\"");
    input.push_str(&"x".repeat(5 * 1024 * 1024));
    input.push_str("\"}\n{\"type\":\"echo\",\"payload\":2}\n");
    let run = common::run(&["-w", "1"], &input);
    assert_eq!(run.lines.len(), 2, "{}", run.stderr);
    let long = run.line("1");
    assert_eq!(long["status"], "invalid");
    assert!(
        long["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than --max-line-bytes (4194304)"),
        "{long}"
    );
    assert_eq!(run.line("2")["result"], 2);

    let small = common::run(
        &["-w", "1", "--max-line-bytes", "40"],
        "{\"type\":\"echo\",\"payload\":\"this one is too long for forty bytes\"}\n{\"type\":\"echo\"}\n",
    );
    assert_eq!(small.line("1")["status"], "invalid");
    assert_eq!(small.line("2")["status"], "ok");
}

#[test]
fn an_invalid_line_keeps_its_id_and_a_duplicate_id_is_invalid() {
    let run = common::run(
        &["-w", "1"],
        concat!(
            "{\"id\":\"a\",\"type\":\"echo\",\"payload\":1}\n",
            "{\"id\":\"mine\",\"type\":\"echo\",\"priority\":500}\n",
            "{\"id\":\"a\",\"type\":\"echo\",\"payload\":2}\n",
            "\n",
            "{\"type\": 1}\n",
        ),
    );
    assert_eq!(run.lines.len(), 4, "{}", run.stderr);
    let mine = run.line("mine");
    assert_eq!(
        (mine["status"].as_str(), mine["line"].as_u64()),
        (Some("invalid"), Some(2))
    );
    let dup = run
        .lines
        .iter()
        .find(|l| l["id"] == "a" && l["status"] == "invalid")
        .unwrap_or_else(|| panic!("no duplicate reported: {:#?}", run.lines));
    assert_eq!(dup["line"], 3);
    assert!(
        dup["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate id \"a\""),
        "{dup}"
    );
    let first = run
        .lines
        .iter()
        .find(|l| l["id"] == "a" && l["status"] == "ok")
        .expect("the first \"a\" ran");
    assert_eq!(first["result"], 1);
    let parse = run.line("5");
    assert!(
        parse["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("at line 5 column 10"),
        "{parse}"
    );
}

#[test]
fn a_stalled_reader_of_the_output_stops_the_reading_of_input() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const TASKS: u64 = 40_000;
    let mut child = common::Killed(
        std::process::Command::new(common::bin())
            .args(["run", "-w", "2"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cortex-pool starts"),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    let feeder = std::thread::spawn(move || {
        let chunk: String = (0..100)
            .map(|_| "{\"type\":\"echo\",\"payload\":1}\n")
            .collect();
        for _ in 0..TASKS / 100 {
            if stdin.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            count.fetch_add(100, Ordering::Relaxed);
        }
    });
    // Nobody reads the output: the input must stop being read well before its end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut still_since) = (0, Instant::now());
    loop {
        let now = written.load(Ordering::Relaxed);
        assert!(
            now < TASKS,
            "run read all {TASKS} lines while its output was not read"
        );
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if still_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the input never stalled");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("stalled after {last} lines");
    assert!(last < TASKS / 2, "{last} lines were read before it stalled");
    // Reading the output lets everything through, one line per task.
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    feeder.join().unwrap();
    assert_eq!(out.lines().count() as u64, TASKS);
    assert!(child.0.wait().unwrap().success());
}
