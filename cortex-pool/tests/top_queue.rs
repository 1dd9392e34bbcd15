//! `top --queue URL --once` against a real `nats-server`: the shared queue's
//! state (what waits, what daemons hold, dead letters) without any daemon, and
//! a clear exit 3 naming the URL when the queue cannot be reached.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use source_nats::test_server::NatsServer;

/// A scratch runtime directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("top-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cortex-pool"))
            .args(args)
            .env("CORTEX_POOL_RUNTIME_DIR", &self.0)
            .output()
            .expect("cortex-pool runs")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn top_once_shows_the_shared_queue_without_a_daemon() {
    let server = NatsServer::start();
    let url = server.url();
    let scratch = Scratch::new("once");
    let file = scratch.0.join("tasks.jsonl");
    let lines: String = (0..3)
        .map(|n| format!("{{\"id\":\"t{n}\",\"type\":\"echo\",\"payload\":{n}}}\n"))
        .collect();
    std::fs::write(&file, lines).expect("tasks file");
    let submit = scratch.cli(&["submit", "--queue", &url, &file.to_string_lossy()]);
    assert!(submit.status.success(), "{}", text(&submit));

    let out = scratch.cli(&["top", "--queue", &url, "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let screen = String::from_utf8_lossy(&out.stdout);
    for needle in [
        format!("HEALTHY  shared queue {url} │ connected"),
        "why: nothing wrong".to_owned(),
        "waiting 3 │ held by daemons 0 │ DLQ 0".to_owned(),
    ] {
        assert!(screen.contains(&needle), "{needle:?} not in\n{screen}");
    }
}

#[test]
fn top_exits_3_naming_a_queue_it_cannot_reach() {
    let scratch = Scratch::new("unreachable");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    let url = format!("nats://127.0.0.1:{port}");
    let out = scratch.cli(&["top", "--queue", &url, "--once"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the queue at {url}")),
        "{stderr}"
    );
}
