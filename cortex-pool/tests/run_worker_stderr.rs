//! A worker's stderr: bytes that are not UTF-8 and floods without newlines neither
//! stop the pool reading it nor cost unbounded memory; its tail reaches crash reports.

mod common;

#[test]
fn stderr_with_bad_bytes_and_no_newlines_is_read_on_and_its_tail_reported() {
    // 0xff alone is not UTF-8; then 32 MiB without a newline; then a marker line.
    let flood = "79".repeat(1024 * 1024);
    let tasks = format!(
        concat!(
            "{{\"id\":\"bad\",\"type\":\"stderr\",\"payload\":{{\"hex\":\"626164ff0a\"}}}}\n",
            "{{\"id\":\"flood\",\"type\":\"stderr\",\"payload\":{{\"hex\":\"{}\",\"repeat\":32}}}}\n",
            "{{\"id\":\"after\",\"type\":\"stderr\",\"payload\":{{\"hex\":\"0a6166746572207468652062616420627974650a\"}}}}\n",
            "{{\"id\":\"crash\",\"type\":\"crash\",\"payload\":{{\"code\":3}}}}\n",
        ),
        flood
    );
    let run = common::run(
        &["-w", "1", "--policy", "round-robin", "--max-retries", "0"],
        &tasks,
    );
    assert_eq!(run.lines.len(), 4, "{}", run.stderr);
    for id in ["bad", "flood", "after"] {
        assert_eq!(run.line(id)["status"], "ok", "{id}: {}", run.line(id));
        assert_eq!(run.line(id)["attempts"], 1, "{id}: {}", run.line(id));
    }
    // The stderr flood did not cost the worker its life: the tasks up to it were
    // answered by the first worker. (`after` may run again on its replacement:
    // the SDK batches replies, and when its reply was still held as the crash
    // task killed the worker, both rerun alone without losing an attempt.)
    for id in ["bad", "flood"] {
        assert_eq!(
            run.line(id)["worker"],
            "worker-0",
            "no restart: {}",
            run.line(id)
        );
    }
    let crash = run.line("crash");
    let message = crash["error"]["message"].as_str().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(message.contains("after the bad byte"), "{message}");
    assert!(message.contains("bad\u{fffd}"), "{message}");
    assert!(
        message.len() < 16 * 1024,
        "the tail is bounded: {}",
        message.len()
    );
}
