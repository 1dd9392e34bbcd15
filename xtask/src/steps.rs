//! The steps `ci`, `lint` and `test` are made of.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    // Before nextest: `cortex-pool/tests/python_worker.rs` runs the Python SDK's
    // example worker and fails when python3 or msgpack is missing.
    let python = ensure_python_msgpack()?;
    ensure_tmux()?;
    // Before nextest too: `cortex-pool/tests/node_worker.rs` needs sdk/node's
    // dependencies, installed from its committed lock file.
    ensure_node_sdk()?;
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
    let script = script.replace(
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

/// Makes sure `python3` can `import msgpack` (installing msgpack from PyPI if
/// needed). Without python3 the suite fails, unless `CORTEX_SKIP_PYTHON=1` asks to
/// skip the Python tests (SDK unit tests and `cortex-pool/tests/python_worker.rs`);
/// returns whether they run.
fn ensure_python_msgpack() -> Result<bool, String> {
    if std::env::var_os("CORTEX_SKIP_PYTHON").is_some_and(|v| v == "1") {
        eprintln!("\n==> CORTEX_SKIP_PYTHON=1: the Python tests are SKIPPED");
        return Ok(false);
    }
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        return Err("python3 is not installed: the Python worker tests need it \
             (install python3, or set CORTEX_SKIP_PYTHON=1 to skip them)"
            .into());
    }
    let has_msgpack = Command::new("python3")
        .args(["-c", "import msgpack"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_msgpack {
        pip_install("msgpack")?;
    }
    Ok(true)
}

/// `python3 -m pip install --user PACKAGE`. Where the system's Python is
/// marked externally managed (Debian 12, Ubuntu 23.04 and later refuse a
/// plain install), the install is made again into the user's site with
/// `--break-system-packages`, which touches nothing of the system's.
pub(crate) fn pip_install(package: &str) -> Result<(), String> {
    let what = format!("pip install --user {package}");
    eprintln!("\n==> {what}");
    let attempt = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--user"])
            .args(extra)
            .arg(package)
            .output()
            .map_err(|e| format!("{what}: cannot run python3: {e}"))
    };
    let first = attempt(&[])?;
    if first.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&first.stderr).into_owned();
    if said.contains("No module named pip") {
        return Err(format!(
            "{what}: python3 has no pip (install it: `apt-get install python3-pip`)"
        ));
    }
    if said.contains("externally-managed-environment") {
        let second = attempt(&["--break-system-packages"])?;
        if second.status.success() {
            return Ok(());
        }
        return Err(format!(
            "{what} --break-system-packages failed:\n{}",
            String::from_utf8_lossy(&second.stderr)
        ));
    }
    Err(format!("{what} failed ({}):\n{said}", first.status))
}

/// Installs `tmux` with apt-get when it is missing: `cortex-pool/tests/top_tmux.rs`
/// runs `cortex-pool top` under it (and fails, saying so, without it).
fn ensure_tmux() -> Result<(), String> {
    let present = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    let install = || {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "tmux"]);
        run("apt-get install -y tmux", apt)
    };
    if install().is_ok() {
        return Ok(());
    }
    // A fresh image has no package lists yet.
    let mut update = Command::new("apt-get");
    update.arg("update");
    run("apt-get update", update)
        .and_then(|()| install())
        .map_err(|e| {
            format!(
                "{e}: tmux is needed by the `top` tests (cortex-pool/tests/top_tmux.rs); \
                 install it as root (`apt-get update && apt-get install -y tmux`)"
            )
        })
}

/// The Python worker SDK's own unit tests.
fn python_sdk() -> Result<(), String> {
    let mut unittest = Command::new("python3");
    unittest
        .args(["-m", "unittest", "-v"])
        .current_dir(root().join("sdk/python"));
    run("Python SDK tests", unittest)
}

/// Installs the Node SDK's dependencies with `npm ci` from `sdk/node/package-lock.json`.
/// Fails (never skips) when `node` or `npm` is missing, saying how to install them.
fn ensure_node_sdk() -> Result<(), String> {
    for tool in ["node", "npm"] {
        let present = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            return Err(format!(
                "`{tool}` is not installed: the Node.js worker SDK's tests need Node.js 18 \
                 or later with npm (https://nodejs.org/en/download, or \
                 `apt-get install nodejs npm`)"
            ));
        }
    }
    let mut ci = Command::new("npm");
    ci.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root().join("sdk/node"));
    run("npm ci (sdk/node)", ci)
}

/// The Node SDK's own tests (`node --test`, through `npm test`).
fn node_sdk() -> Result<(), String> {
    let mut test = Command::new("npm");
    test.args(["test", "--silent"])
        .current_dir(root().join("sdk/node"));
    run("Node SDK tests", test)
}
