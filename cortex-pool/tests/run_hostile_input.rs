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
