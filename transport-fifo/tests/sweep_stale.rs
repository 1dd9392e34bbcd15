//! `sweep_stale` removes exactly the directories of dead pools (and dead staging
//! directories) and returns their paths; a live pool's directory, a directory
//! holding something foreign and a symlink are left alone.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::Mode;
use transport_fifo::{sweep_stale, FifoTransport};

/// Above Linux's largest `pid_max` (2^22): no process has it.
const DEAD_PID: u32 = 4_194_305;

/// A fresh private directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "transport-fifo-{name}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pool directory as a crashed pool leaves it: an unlocked `pool.lock` and FIFOs.
fn dead_pool(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    std::fs::write(dir.join("pool.lock"), b"").unwrap();
    for fifo in ["w0.to.fifo", "w0.from.fifo"] {
        rustix::fs::mkfifoat(rustix::fs::CWD, dir.join(fifo), Mode::RUSR | Mode::WUSR).unwrap();
    }
    dir
}

#[test]
fn sweep_stale_returns_exactly_the_dead_dirs_it_removed() {
    let scratch = Scratch::new("sweep");
    let base = &scratch.0;
    // A live pool: its lock is held while the transport lives.
    let live = FifoTransport::in_dir(base).unwrap();
    let live_dir = base.join(live.dir().file_name().unwrap());
    assert!(live_dir.is_dir());

    let dead = dead_pool(base, "cortex-fifo-1-00000000000000aa");
    let staging = base.join(format!(".cortex-fifo-staging-{DEAD_PID}-00000000000000bb"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .unwrap();
    // Dead, but holding a file the pool did not create: kept whole.
    let foreign = dead_pool(base, "cortex-fifo-1-00000000000000cc");
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    // A symlink of the scheme's name to a dead pool's directory: not followed.
    let target = dead_pool(base, "not-a-pool");
    let link = base.join("cortex-fifo-1-00000000000000dd");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let removed: BTreeSet<PathBuf> = sweep_stale(base).unwrap().into_iter().collect();
    assert_eq!(removed, BTreeSet::from([dead.clone(), staging.clone()]));
    assert!(!dead.exists() && !staging.exists());
    assert!(
        live_dir.join("pool.lock").is_file(),
        "the live pool's dir was touched"
    );
    assert!(foreign.join("notes.txt").is_file() && foreign.join("w0.to.fifo").exists());
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(target.join("w0.to.fifo").exists());

    // Nothing stale is left: a second sweep removes nothing.
    assert_eq!(sweep_stale(base).unwrap(), Vec::<PathBuf>::new());
    drop(live);
    assert!(!live_dir.exists());
}

#[test]
fn a_missing_base_has_nothing_to_sweep_and_is_not_created() {
    let scratch = Scratch::new("missing");
    let base = scratch.0.join("absent");
    assert_eq!(sweep_stale(&base).unwrap(), Vec::<PathBuf>::new());
    assert!(!base.exists());
}
