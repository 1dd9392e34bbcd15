//! What the shipped binary links: no test-only machinery.

use std::process::Command;

/// Cargo unifies features across the graph, so one dependency that turns on
/// tokio's `test-util` makes the `cortex-pool` binary read every
/// `tokio::time::Instant` through the mockable test clock. `tryhard` 0.5 did
/// (through `async-nats`' JetStream); the workspace patches it with
/// `tryhard-shim`. Dev-dependencies (the tests' own paused clocks) are left out.
#[test]
fn the_shipped_binary_links_tokio_without_its_test_clock() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "--package",
            "cortex-pool",
            "--edges",
            "normal,build,features",
            "--invert",
            "tokio",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run `cargo tree`");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tree.contains("tokio feature \"time\""),
        "not a feature tree of tokio:\n{tree}"
    );
    let culprits: Vec<&str> = tree
        .lines()
        .filter(|line| line.contains("tokio feature \"test-util\""))
        .collect();
    assert!(
        culprits.is_empty(),
        "a normal dependency turns on tokio's test-util:\n{tree}"
    );
}
