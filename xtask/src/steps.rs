//! The steps `ci`, `lint` and `test` are made of.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Features of the facade that must build on their own.
const FACADE_FEATURES: &[&str] = &["ipc", "balance", "cli"];

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub(crate) fn run(what: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("\n==> {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// `cargo fmt --check` and clippy with warnings denied.
pub(crate) fn lint() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy -D warnings", clippy)
}

/// The whole test suite.
pub(crate) fn test() -> Result<(), String> {
    ensure_nextest()?;
    let mut nextest = cargo();
    nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    run("cargo nextest run --workspace", nextest)?;
    let mut doc_tests = cargo();
    doc_tests.args(["test", "--doc", "--workspace"]);
    run("doc-tests", doc_tests)?;
    let mut docs = cargo();
    docs.args(["doc", "--no-deps", "--workspace"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc -D warnings", docs)?;
    for feature in FACADE_FEATURES {
        let mut check = cargo();
        check.args([
            "check",
            "-p",
            "cortex-pool",
            "--no-default-features",
            "--features",
            feature,
        ]);
        run(&format!("facade with feature `{feature}` alone"), check)?;
    }
    python_sdk()
}

fn ensure_nextest() -> Result<(), String> {
    let present = cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    let mut install = cargo();
    install.args(["install", "cargo-nextest", "--locked"]);
    run("install cargo-nextest", install)
}

/// The Python worker SDK's tests (needs python3; installs msgpack from PyPI).
fn python_sdk() -> Result<(), String> {
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        eprintln!("\n==> Python SDK tests SKIPPED: python3 is not installed");
        return Ok(());
    }
    let has_msgpack = Command::new("python3")
        .args(["-c", "import msgpack"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_msgpack {
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "install", "--quiet", "msgpack"]);
        run("pip install msgpack", pip)?;
    }
    let mut unittest = Command::new("python3");
    unittest
        .args(["-m", "unittest", "-v"])
        .current_dir(root().join("sdk/python"));
    run("Python SDK tests", unittest)
}
