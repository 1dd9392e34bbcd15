//! A worker's stderr: bytes that are not UTF-8 and floods without newlines neither
//! stop the pool reading it nor cost unbounded memory; its tail reaches crash reports.

mod common;

#[test]
fn stderr_with_bad_bytes_and_no_newlines_is_read_on_and_its_tail_reported() {
    // 0xff alone is not UTF-8; then 32 MiB without a newline; then a marker
    // line that ends in 0xff too.
    let flood = "79".repeat(1024 * 1024);
    let tasks = format!(
        concat!(
            "{{\"id\":\"bad\",\"type\":\"stderr\",\"payload\":{{\"hex\":\"626164ff0a\"}}}}\n",
            "{{\"id\":\"flood\",\"type\":\"stderr\",\"payload\":{{\"hex\":\"{}\",\"repeat\":32}}}}\n",
            "{{\"id\":\"after\",\"type\":\"stderr\",\"payload\":{{\"hex\":\"0a616674657220746865206261642062797465ff0a\"}}}}\n",
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
    // The tail is the crashing worker's, its last output the marker line with
    // its bad byte replaced. The first task's bad byte is in it too when the
    // crash ran on the first worker; when the SDK still held `after`'s reply
    // as the crash killed it, both reran alone on a replacement, whose stderr
    // began with `after`.
    assert!(message.contains("after the bad byte\u{fffd}"), "{message}");
    if crash["worker"] == "worker-0" {
        assert!(message.contains("bad\u{fffd}"), "{message}");
    }
    assert!(
        message.len() < 16 * 1024,
        "the tail is bounded: {}",
        message.len()
    );
}
