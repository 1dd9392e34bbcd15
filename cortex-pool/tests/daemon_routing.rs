//! The daemon routes by task type too: a task of a type no worker lists settles
//! `failed` with the kind `unroutable`, and the other tasks run.

mod daemon_util;

use daemon_util::{text, Daemon};
use serde_json::Value;

#[test]
fn a_task_no_worker_takes_settles_unroutable_in_the_store() {
    let mut d = Daemon::new("routing", &[]);
    d.watchdog(60);
    d.run_foreground();
    let input = concat!(
        "{\"id\":\"e1\",\"type\":\"echo\",\"payload\":1}\n",
        "{\"id\":\"up\",\"type\":\"upper\",\"payload\":\"hi\"}\n",
        "{\"id\":\"e2\",\"type\":\"echo\",\"payload\":2}\n",
    );
    let out = d.cli_with_input(&["submit", "--wait"], input);
    assert_eq!(out.status.code(), Some(1), "a failed task: {}", text(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l.get("error").is_some() || l.get("result").is_some())
        .collect();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no result line for {id}: {}", text(&out)))
            .clone()
    };
    assert_eq!(by_id("e1")["status"], "ok");
    assert_eq!(by_id("e2")["status"], "ok");
    let up = by_id("up");
    assert_eq!(up["status"], "failed", "{up}");
    assert_eq!(up["error"]["kind"], "unroutable", "{up}");
    assert_eq!(up["attempts"], 0, "it never ran, as `run` says: {up}");
    assert!(
        up["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("no worker takes task type `upper`"),
        "{up}"
    );
    let listed = d.cli(&["tasks", "--json", "--status", "failed"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let record: Value = serde_json::from_slice(
        listed
            .stdout
            .split(|b| *b == b'\n')
            .next()
            .expect("one failed task"),
    )
    .expect("a JSON record");
    assert_eq!(
        (record["id"].as_str(), record["error"]["kind"].as_str()),
        (Some("up"), Some("unroutable"))
    );
    assert_eq!(d.stop().status.code(), Some(0));
}
