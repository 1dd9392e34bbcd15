//! The steps `ci`, `lint` and `test` are made of.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::deps;

/// Features of the facade that must build on their own.
const FACADE_FEATURES: &[&str] = &["ipc", "fifo", "balance", "cli"];

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
    deps::rust_components()?;
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
    deps::nextest()?;
    // Before nextest: `cortex-pool/tests/python_worker.rs` runs the Python SDK's
    // example worker and fails when python3 or msgpack is missing.
    let python = deps::python_msgpack()?;
    deps::tmux()?;
    deps::procps()?;
    // Before nextest too: `cortex-pool/tests/node_worker.rs` needs sdk/node's
    // dependencies, installed from its committed lock file.
    deps::node_sdk()?;
    // The JetStream tests start this server (and fail when it is missing).
    let nats_server = crate::nats::ensure_nats()?;
    let mut nextest = cargo();
    nextest
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .env("NATS_SERVER_BIN", &nats_server);
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
    examples()?;
    quickstart()?;
    crate::chaos::chaos()?;
    if python {
        python_sdk()?;
    }
    node_sdk()?;
    Ok(())
}

/// The facade's examples, found in `cortex-pool/examples/` (`NAME.rs` or
/// `NAME/main.rs`), so a new example is never forgotten.
fn example_names(dir: &Path) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        let name = if path.is_dir() {
            path.join("main.rs").is_file().then(|| path.file_name())
        } else {
            (path.extension() == Some("rs".as_ref())).then(|| path.file_stem())
        };
        if let Some(name) = name.flatten() {
            names.push(name.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds and runs every example; each asserts what it shows and must exit 0.
pub(crate) fn examples() -> Result<(), String> {
    let names = example_names(&root().join("cortex-pool/examples"))?;
    if names.is_empty() {
        return Err("no examples found in cortex-pool/examples".into());
    }
    let mut build = cargo();
    build.args(["build", "-p", "cortex-pool", "--examples"]);
    run("build the examples", build)?;
    for name in &names {
        let mut example = cargo();
        example.args(["run", "--quiet", "-p", "cortex-pool", "--example", name]);
        run(&format!("example `{name}`"), example)?;
    }
    Ok(())
}

/// Runs the commands of `docs/quickstart.md` (its blocks marked `sh quickstart`),
/// in order, as one bash script from the repository root, with the guide's
/// `../hello-worker` moved to a temporary directory; then checks the results the
/// guide shows.
pub(crate) fn quickstart() -> Result<(), String> {
    let guide = root().join("docs/quickstart.md");
    let text = std::fs::read_to_string(&guide)
        .map_err(|e| format!("cannot read {}: {e}", guide.display()))?;
    let mut script = String::new();
    let mut inside = false;
    for line in text.lines() {
        match (inside, line.trim_end()) {
            (false, "```sh quickstart") => inside = true,
            (true, "```") => inside = false,
            (true, _) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    if script.is_empty() || inside {
        return Err("docs/quickstart.md: no complete `sh quickstart` blocks".into());
    }
    let dir = std::env::temp_dir().join(format!("cortex-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The new crate starts from the workspace's lock file (trimmed by cargo
    // to what it uses), so its build takes the versions the workspace was
    // tested with where it can, not whatever was released today.
    const NEW: &str = "cargo new --vcs none ../hello-worker";
    if !script.contains(NEW) {
        return Err(format!("docs/quickstart.md: no `{NEW}` step"));
    }
    let script = script
        .replace(
            NEW,
            &format!("{NEW} && cp Cargo.lock ../hello-worker/Cargo.lock"),
        )
        .replace(
            "../hello-worker",
            &format!("{}/hello-worker", dir.display()),
        );
    eprintln!("\n==> quickstart (docs/quickstart.md)");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let output = output.map_err(|e| format!("quickstart: cannot run bash: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("quickstart failed ({}):\n{stdout}", output.status));
    }
    for expected in [
        r#""result":{"greeting":"hello, pool"}"#,
        "custom_worker: ok",
        r#""id":"ada","result":{"greeting":"Hello, Ada!"},"status":"ok""#,
        r#""message":"name is empty"},"id":"nobody","status":"failed""#,
    ] {
        if !stdout.contains(expected) {
            return Err(format!(
                "quickstart: the output lacks {expected}:\n{stdout}"
            ));
        }
    }
    Ok(())
}

/// The Python worker SDK's own unit tests.
fn python_sdk() -> Result<(), String> {
    let mut unittest = Command::new("python3");
    unittest
        .args(["-m", "unittest", "-v"])
        .current_dir(root().join("sdk/python"));
    run("Python SDK tests", unittest)
}

/// The Node SDK's own tests (`node --test`, through `npm test`).
fn node_sdk() -> Result<(), String> {
    let mut test = Command::new("npm");
    test.args(["test", "--silent"])
        .current_dir(root().join("sdk/node"));
    run("Node SDK tests", test)
}
