//! Issue 13's `queue_credentials` and TLS options, through the real binary
//! and a real `nats-server` secured with throwaway secrets made at test time:
//! a daemon with the right ones (mutual TLS, an nkey seed, a `.creds` file)
//! runs tasks; a wrong or missing one stops the start with an error naming
//! what failed.

mod daemon_util;

use std::path::PathBuf;

use daemon_util::{text, Daemon};
use source_nats::test_server::{NatsServer, Security};

fn path(p: Option<&PathBuf>) -> String {
    p.expect("the server made this file").display().to_string()
}

/// `submit --queue` then `wait --queue` with the daemon's environment (so the
/// same `queue_*` keys): both tasks come back ok.
fn round_trip(daemon: &Daemon, url: &str) {
    let input = concat!(
        r#"{"id":"s1","type":"echo","payload":{"n":1}}"#,
        "\n",
        r#"{"id":"s2","type":"echo","payload":{"n":2}}"#,
        "\n"
    );
    let out = daemon.cli_with_input(&["submit", "--queue", url, "-"], input);
    assert!(out.status.success(), "submit failed: {}", text(&out));
    let out = daemon.cli(&["wait", "--queue", url, "--timeout-s", "30", "s1", "s2"]);
    assert!(out.status.success(), "wait failed: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(r#""status":"ok""#)
            .count(),
        2,
        "{}",
        text(&out)
    );
}

/// `daemon run` with `env` must fail at once; returns its stderr.
fn refused_start(name: &str, env: &[(&str, &str)]) -> String {
    let daemon = Daemon::new(name, env);
    let out = daemon.cli(&["daemon", "run"]);
    assert!(!out.status.success(), "the daemon started: {}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_daemon_reaches_a_mutual_tls_server_and_a_bad_certificate_is_named() {
    let server = NatsServer::start_with(Security::Tls { verify: true });
    let url = server.url();
    let files = server.client().clone();
    let (ca, cert, key) = (
        path(files.ca.as_ref()),
        path(files.cert.as_ref()),
        path(files.key.as_ref()),
    );
    let mut daemon = Daemon::new(
        "queue-tls",
        &[
            ("CORTEX_POOL_QUEUE", &url),
            ("CORTEX_POOL_QUEUE_TLS_CA", &ca),
            ("CORTEX_POOL_QUEUE_TLS_CERT", &cert),
            ("CORTEX_POOL_QUEUE_TLS_KEY", &key),
        ],
    );
    daemon.watchdog(90);
    daemon.run_foreground();
    assert_eq!(daemon.status()["queue"]["connection"], "connected");
    round_trip(&daemon, &url);
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "stop failed: {}", text(&stopped));

    // The server's certificate is not signed by the CA the daemon trusts.
    let other_ca = path(files.other_ca.as_ref());
    let err = refused_start(
        "queue-tls-other-ca",
        &[
            ("CORTEX_POOL_QUEUE", &url),
            ("CORTEX_POOL_QUEUE_TLS_CA", &other_ca),
            ("CORTEX_POOL_QUEUE_TLS_CERT", &cert),
            ("CORTEX_POOL_QUEUE_TLS_KEY", &key),
        ],
    );
    assert!(
        err.contains(&format!("TLS with the NATS server at {url} failed"))
            && err.contains("queue_tls_ca"),
        "{err}"
    );
    // No TLS options at all: the server's certificate is not trusted either.
    let err = refused_start("queue-tls-none", &[("CORTEX_POOL_QUEUE", &url)]);
    assert!(
        err.contains(&format!("TLS with the NATS server at {url} failed")),
        "{err}"
    );
    // No client certificate for a server that asks for one.
    let err = refused_start(
        "queue-tls-no-cert",
        &[
            ("CORTEX_POOL_QUEUE", &url),
            ("CORTEX_POOL_QUEUE_TLS_CA", &ca),
        ],
    );
    assert!(
        err.contains(&format!("TLS with the NATS server at {url} failed")),
        "{err}"
    );
    // A key without its certificate is a configuration error naming the key.
    let err = refused_start(
        "queue-tls-half",
        &[
            ("CORTEX_POOL_QUEUE", &url),
            ("CORTEX_POOL_QUEUE_TLS_KEY", &key),
        ],
    );
    assert!(err.contains("queue_tls_cert"), "{err}");
}

#[test]
fn a_daemon_reaches_an_nkey_server_and_a_wrong_seed_is_named() {
    let server = NatsServer::start_with(Security::Nkey);
    let url = server.url();
    let files = server.client().clone();
    serves_with_credentials("queue-nkey", &url, &path(files.seed.as_ref()));
    let wrong = path(files.wrong_seed.as_ref());
    let err = refused_credentials("queue-nkey-wrong", &url, &wrong);
    assert!(err.contains("authorization violation"), "{err}");
    let err = refused_start("queue-nkey-none", &[("CORTEX_POOL_QUEUE", &url)]);
    assert!(
        err.contains("no queue_credentials are set") && err.contains("authorization violation"),
        "{err}"
    );
    // The clients say the same: `submit --queue` with the wrong seed.
    let client = Daemon::new(
        "queue-nkey-client",
        &[
            ("CORTEX_POOL_QUEUE", &url),
            ("CORTEX_POOL_QUEUE_CREDENTIALS", &wrong),
        ],
    );
    let out = client.cli_with_input(
        &["submit", "--queue", &url, "-"],
        "{\"type\":\"echo\",\"payload\":1}\n",
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(queue_credentials)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_daemon_reaches_a_jwt_server_with_a_creds_file_and_a_wrong_one_is_named() {
    let server = NatsServer::start_with(Security::Creds);
    let url = server.url();
    let files = server.client().clone();
    serves_with_credentials("queue-creds", &url, &path(files.creds.as_ref()));
    // A user of an account the server does not know.
    refused_credentials("queue-creds-wrong", &url, &path(files.wrong_creds.as_ref()));
}

/// A daemon with `credentials` connects to `url` and runs a task through it.
fn serves_with_credentials(name: &str, url: &str, credentials: &str) {
    let mut daemon = Daemon::new(
        name,
        &[
            ("CORTEX_POOL_QUEUE", url),
            ("CORTEX_POOL_QUEUE_CREDENTIALS", credentials),
        ],
    );
    daemon.watchdog(90);
    daemon.run_foreground();
    assert_eq!(daemon.status()["queue"]["connection"], "connected");
    round_trip(&daemon, url);
    // A host with no `queue` key of its own: `--queue URL` is the queue the
    // other keys (here the credentials, given by `--set`) apply to.
    let out = daemon
        .command(&[
            "result",
            "--queue",
            url,
            "--set",
            &format!("queue_credentials={credentials}"),
            "s1",
        ])
        .env_remove("CORTEX_POOL_QUEUE")
        .env_remove("CORTEX_POOL_QUEUE_CREDENTIALS")
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "result failed: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""status":"ok""#),
        "{}",
        text(&out)
    );
    let stopped = daemon.stop();
    assert!(stopped.status.success(), "stop failed: {}", text(&stopped));
}

/// A daemon with `credentials` the server refuses does not start, naming the
/// file and the key; returns what it said.
fn refused_credentials(name: &str, url: &str, credentials: &str) -> String {
    let err = refused_start(
        name,
        &[
            ("CORTEX_POOL_QUEUE", url),
            ("CORTEX_POOL_QUEUE_CREDENTIALS", credentials),
        ],
    );
    assert!(
        err.contains(&format!(
            "the NATS server at {url} refused the credentials in {credentials} (queue_credentials)"
        )),
        "{err}"
    );
    err
}
