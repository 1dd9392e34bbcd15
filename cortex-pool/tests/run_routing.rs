//! `cortex-pool run` routes by task type: the demo worker lists the types it has
//! handlers for, so a task of another type is never sent to it and fails
//! `unroutable`, while the other lines run.

mod common;

#[test]
fn a_task_type_no_worker_lists_fails_unroutable_and_the_others_run() {
    let input = concat!(
        "{\"id\":\"a\",\"type\":\"echo\",\"payload\":1}\n",
        "{\"id\":\"up\",\"type\":\"upper\",\"payload\":\"hi\"}\n",
        "{\"id\":\"b\",\"type\":\"echo\",\"payload\":2}\n",
        "{\"id\":\"c\",\"type\":\"echo\",\"payload\":3}\n",
    );
    let run = common::run(&["-w", "2"], input);
    assert_eq!(
        run.code, 1,
        "a failed line makes the exit code 1: {}",
        run.stderr
    );
    assert_eq!(
        run.lines.len(),
        4,
        "one line per input line: {:#?}",
        run.lines
    );
    for (id, payload) in [("a", 1), ("b", 2), ("c", 3)] {
        let line = run.line(id);
        assert_eq!(line["status"], "ok", "{line}");
        assert_eq!(line["result"], payload);
    }
    let up = run.line("up");
    assert_eq!(
        (up["status"].as_str(), up["attempts"].as_u64()),
        (Some("failed"), Some(0)),
        "{up}"
    );
    assert_eq!(up["error"]["kind"], "unroutable", "{up}");
    let message = up["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("no worker takes task type `upper` (the workers take: ")
            && message.contains("echo")
            && message.contains("sleep"),
        "{message}"
    );
}
