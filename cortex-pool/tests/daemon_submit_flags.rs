//! `submit`'s and `tasks`' flags through the real binary and daemon: a
//! `--payload` is the payload of an input line, sent as written and checked
//! as one; `--timeout-ms` takes what the daemon takes (up to 365 days); a
//! `tasks --status` that names no state is a usage error.

mod daemon_util;

use daemon_util::{json_lines, text, Daemon};

/// A daemon with `env` running in the foreground, watched for a minute.
fn running(name: &str, env: &[(&str, &str)]) -> Daemon {
    let mut d = Daemon::new(name, env);
    d.watchdog(60);
    d.run_foreground();
    d
}

#[test]
fn a_payload_flag_is_sent_as_written_and_checked_as_an_input_line() {
    let mut d = running("submit-payload-flag", &[]);

    // Key order and numbers reach the worker as written: the echo worker's
    // result is the payload, decoded from MessagePack in its own key order.
    let out = d.cli(&[
        "submit",
        "--type",
        "echo",
        "--payload",
        r#"{"z":1,"a":2,"n":18446744073709551615}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#""result":{"z":1,"a":2,"n":18446744073709551615}"#),
        "{stdout}"
    );

    // An integer MessagePack cannot carry is refused, as on an input line:
    // the same reason, exit 1.
    let flag = d.cli(&[
        "submit",
        "--type",
        "echo",
        "--payload",
        "18446744073709551616",
    ]);
    let line = d.cli_with_input(
        &["submit", "-"],
        "{\"type\":\"echo\",\"payload\":18446744073709551616}\n",
    );
    for out in [&flag, &line] {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
    }
    let (flag, line) = (json_lines(&flag.stdout), json_lines(&line.stdout));
    assert_eq!((flag.len(), line.len()), (1, 1), "{flag:?} {line:?}");
    assert_eq!(flag[0]["status"], "refused", "{flag:?}");
    assert_eq!(flag[0]["error"], line[0]["error"]);
    let error = flag[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("invalid_input: payload: integer 18446744073709551616 is outside"),
        "{error}"
    );

    // What is not one JSON value is a bad flag value, and sends nothing.
    let injected = d.cli(&["submit", "--type", "echo", "--payload", r#"1,"id":"x""#]);
    assert_eq!(injected.status.code(), Some(2), "{}", text(&injected));
    assert!(
        String::from_utf8_lossy(&injected.stderr).contains("--payload is not JSON"),
        "{}",
        text(&injected)
    );
    let x = d.cli(&["result", "x"]);
    assert!(
        String::from_utf8_lossy(&x.stdout).contains(r#""status":"unknown""#),
        "{}",
        text(&x)
    );
    assert_eq!(d.stop().status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// `submit --timeout-ms` takes up to 365 days, and so does the daemon (it
/// refused every line above 30 days).
#[test]
fn the_daemon_takes_the_longest_timeout_submit_accepts() {
    let mut d = running("submit-longest-timeout", &[]);
    let out = d.cli(&[
        "submit",
        "--type",
        "echo",
        "--payload",
        "1",
        "--timeout-ms",
        "31536000000",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{}", text(&out));
    assert_eq!(lines[0]["status"], "ok", "{}", text(&out));
    let longer = d.cli(&["submit", "--type", "echo", "--timeout-ms", "31536000001"]);
    assert_eq!(longer.status.code(), Some(2), "{}", text(&longer));
    assert_eq!(d.stop().status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// A status that names no state is a usage error (exit 2) naming it and the
/// states, said before any daemon is asked: the same with one running (it
/// refused the request, exit 1) and without (exit 3).
#[test]
fn a_tasks_status_that_names_no_state_exits_2_before_connecting() {
    let mut d = Daemon::new("tasks-bad-status", &[]);
    d.watchdog(60);
    let check = |d: &Daemon| {
        let out = d.cli(&["tasks", "--status", "bogus"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(out.stdout.is_empty(), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "unknown status \"bogus\": expected one of queued, running, retrying, ok, \
                 failed, dead_letter, cancelled"
            ),
            "{stderr}"
        );
    };
    check(&d);
    d.run_foreground();
    check(&d);
    let ok = d.cli(&["tasks", "--status", "dead_letter", "--json"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(d.stop().status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// A refused line without an `id` is named by its line number (the id
/// `submit` generated for it names no task), and the column its error names
/// is the column in the line as written (the generated id goes after the
/// line's own keys).
#[test]
fn a_refused_line_without_an_id_is_named_by_its_number_and_its_own_column() {
    let d = running("submit-refused-number", &[]);
    let line = r#"{"type":"echo", "priority": 300}"#;
    let column = line.find("300").expect("in the line") + 3;
    let out = d.cli_with_input(
        &["submit", "-"],
        &format!("{{\"id\":\"fine\",\"type\":\"echo\"}}\n{line}\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = json_lines(&out.stdout);
    let refused = lines
        .iter()
        .find(|l| l["status"] == "refused")
        .unwrap_or_else(|| panic!("a refused line: {lines:?}"));
    assert_eq!(refused["id"], "2", "{refused}");
    assert_eq!(refused["line"], 2, "{refused}");
    let error = refused["error"].as_str().expect("a reason");
    assert!(
        error.ends_with(&format!("at line 1 column {column}")),
        "column {column} of the line as written: {error}"
    );
}

/// A line without a `type` is sent as written (the daemon names the end of
/// the user's line), and a line the store refuses (here `queue_full`) is
/// named by its number too when `submit` generated its id.
#[test]
fn id_less_lines_refused_for_a_missing_type_or_a_full_queue_are_named_by_number() {
    let d = running(
        "submit-refused-full",
        &[
            ("CORTEX_POOL_MAX_QUEUE_LEN", "1"),
            ("CORTEX_POOL_POOL_SIZE", "1"),
        ],
    );
    let sleep = r#"{"type":"sleep","payload":{"ms":1000}}"#;
    let no_type = r#"{"payload":1}"#;
    let out = d.cli_with_input(&["submit", "-"], &format!("{sleep}\n{sleep}\n{no_type}\n"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = json_lines(&out.stdout);
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no line named {id}: {lines:?}"))
    };
    assert_eq!(by_id("2")["status"], "refused", "{lines:?}");
    assert!(
        by_id("2")["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("queue_full")),
        "{lines:?}"
    );
    let missing = by_id("3")["error"].as_str().expect("a reason");
    assert!(
        missing.ends_with(&format!("column {}", no_type.len())),
        "the end of the line as written: {missing}"
    );
}
