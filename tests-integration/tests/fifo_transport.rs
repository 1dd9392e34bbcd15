//! cfg: unix. What only the FIFO transport has: its private directory, the FIFOs'
//! life cycle, the stale-directory sweep and the open timeout.
#![cfg(unix)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use pool_core::transport::{LaunchError, Transport, WorkerSpec};
use tests_integration::conformance::{watchdog, TestResult};
use tests_integration::fds::{entries, Scratch};
use tests_integration::{Conn, Subject};
use transport_fifo::FifoTransport;

const WORKER: &str = env!("CARGO_BIN_EXE_conformance-worker");
/// A pid above any kernel's `pid_max`: never alive.
const DEAD_PID: u32 = 2_147_483_000;

fn names(dir: &Path) -> TestResult<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn mode(path: &Path) -> TestResult<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o777)
}

fn mkfifo(path: &Path) -> TestResult {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )?;
    Ok(())
}

#[tokio::test]
async fn fifos_are_private_fresh_per_worker_and_unlinked_when_it_goes() -> TestResult {
    watchdog("fifo life cycle", async {
        let base = Scratch::new("fifo-life")?;
        let transport = FifoTransport::in_dir(base.path())?;
        let dir = transport.dir().to_owned();
        assert_eq!(
            dir.parent(),
            Some(std::fs::canonicalize(base.path())?.as_path())
        );
        assert_eq!(mode(&dir)?, 0o700);
        assert_eq!(names(&dir)?, ["pool.lock"]);

        let subject = Subject::new(transport.clone(), WORKER);
        let mut first = subject.launch("worker-0").await?;
        first.handshake("worker-0").await?;
        assert_eq!(names(&dir)?, ["pool.lock", "w0.from.fifo", "w0.to.fifo"]);
        for fifo in ["w0.from.fifo", "w0.to.fifo"] {
            let meta = std::fs::symlink_metadata(dir.join(fifo))?;
            assert!(meta.file_type().is_fifo(), "{fifo} is not a FIFO");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{fifo}");
        }

        // A replacement gets a fresh pair; the first worker's pair goes with it.
        let mut second = subject.launch("worker-1").await?;
        second.handshake("worker-1").await?;
        assert_eq!(entries(&dir)?, 5);
        first.shutdown().await?;
        assert_eq!(names(&dir)?, ["pool.lock", "w1.from.fifo", "w1.to.fifo"]);
        drop(second); // killed by the process guard: its FIFOs go at once
        assert_eq!(names(&dir)?, ["pool.lock"]);

        drop(subject);
        assert!(dir.exists(), "a clone still holds the directory");
        drop(transport);
        assert!(!dir.exists(), "the directory outlived its transport");
        assert_eq!(entries(base.path())?, 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn stale_dirs_of_dead_pools_are_swept_and_nothing_else() -> TestResult {
    watchdog("stale sweep", async {
        let base = Scratch::new("fifo-sweep")?;
        let b = base.path();
        let live = FifoTransport::in_dir(b)?;
        let own = std::process::id();
        let dir = |pid: u32, n: u64| b.join(format!("cortex-fifo-{pid}-{n:016x}"));

        // Swept: abandoned (lock file free), holding only what a pool creates.
        let abandoned = dir(DEAD_PID, 1);
        std::fs::create_dir(&abandoned)?;
        std::fs::write(abandoned.join("pool.lock"), b"")?;
        mkfifo(&abandoned.join("w0.to.fifo"))?;
        mkfifo(&abandoned.join("w0.from.fifo"))?;
        // Swept: a free lock decides, even when the pid (ours) is alive.
        let free_lock = dir(own, 2);
        std::fs::create_dir(&free_lock)?;
        std::fs::write(free_lock.join("pool.lock"), b"")?;
        // Swept: no lock file and a dead pid.
        let no_lock_dead = dir(DEAD_PID, 3);
        std::fs::create_dir(&no_lock_dead)?;
        mkfifo(&no_lock_dead.join("w4.from.fifo"))?;

        // Kept: something the pool did not create inside.
        let foreign = dir(DEAD_PID, 4);
        std::fs::create_dir(&foreign)?;
        std::fs::write(foreign.join("pool.lock"), b"")?;
        std::fs::write(foreign.join("notes.txt"), b"mine")?;
        // Kept: a FIFO name that is a regular file.
        let wrong_type = dir(DEAD_PID, 5);
        std::fs::create_dir(&wrong_type)?;
        std::fs::write(wrong_type.join("w0.to.fifo"), b"data")?;
        // Kept: a symlink with our name, and what it points at.
        let elsewhere = b.join("elsewhere");
        std::fs::create_dir(&elsewhere)?;
        mkfifo(&elsewhere.join("w0.to.fifo"))?;
        let link = dir(DEAD_PID, 6);
        std::os::unix::fs::symlink(&elsewhere, &link)?;
        // Kept: no lock file yet, owner alive.
        let no_lock_alive = dir(own, 7);
        std::fs::create_dir(&no_lock_alive)?;
        mkfifo(&no_lock_alive.join("w0.to.fifo"))?;
        // Swept: the staging directory of a process killed while setting one
        // up (its lock file made, not yet locked).
        let staging = |pid: u32, n: u64| b.join(format!(".cortex-fifo-staging-{pid}-{n:016x}"));
        let staged_dead = staging(DEAD_PID, 8);
        std::fs::create_dir(&staged_dead)?;
        std::fs::write(staged_dead.join("pool.lock"), b"")?;
        // Kept: a live process's staging directory, even with its lock free
        // (it may be about to lock it).
        let staged_alive = staging(own, 9);
        std::fs::create_dir(&staged_alive)?;
        std::fs::write(staged_alive.join("pool.lock"), b"")?;

        let fresh = FifoTransport::in_dir(b)?;
        for gone in [&abandoned, &free_lock, &no_lock_dead, &staged_dead] {
            assert!(!gone.exists(), "{} was not swept", gone.display());
        }
        for kept in [
            &foreign,
            &wrong_type,
            &link,
            &no_lock_alive,
            &elsewhere,
            &staged_alive,
        ] {
            assert!(
                std::fs::symlink_metadata(kept).is_ok(),
                "{} was removed",
                kept.display()
            );
        }
        assert_eq!(std::fs::read(foreign.join("notes.txt"))?, b"mine");
        assert_eq!(std::fs::read(wrong_type.join("w0.to.fifo"))?, b"data");
        assert!(elsewhere.join("w0.to.fifo").exists());
        assert!(
            live.dir().exists(),
            "the sweep removed a live pool's directory"
        );
        assert!(fresh.dir().exists());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_worker_that_never_opens_its_fifos_times_out() -> TestResult {
    watchdog("open timeout", async {
        let base = Scratch::new("fifo-timeout")?;
        let transport =
            FifoTransport::in_dir(base.path())?.with_open_timeout(Duration::from_millis(200));
        let spec = WorkerSpec::new("worker-0", "sleep").args(["30"]);
        match transport.launch(&spec).await {
            Err(LaunchError::Setup(e)) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => return Err(format!("expected a timeout, got {other:?}").into()),
        }
        assert_eq!(names(transport.dir())?, ["pool.lock"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_worker_that_exits_before_opening_fails_the_launch_at_once() -> TestResult {
    watchdog("early exit", async {
        let base = Scratch::new("fifo-early-exit")?;
        let transport =
            FifoTransport::in_dir(base.path())?.with_open_timeout(Duration::from_secs(60));
        let spec = WorkerSpec::new("worker-0", "sh").args(["-c", "echo bye >&2; exit 4"]);
        let started = Instant::now();
        match transport.launch(&spec).await {
            Err(LaunchError::Setup(e)) => {
                let text = e.to_string();
                assert!(
                    text.contains("exit code 4") && text.contains("bye"),
                    "{text}"
                );
            }
            other => return Err(format!("expected a setup error, got {other:?}").into()),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(names(transport.dir())?, ["pool.lock"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_base_dir_is_created_and_a_base_under_a_file_is_an_error_naming_it() -> TestResult
{
    let base = Scratch::new("fifo-missing")?;
    let missing = base.path().join("nope/deeper");
    let transport = FifoTransport::in_dir(&missing)?;
    assert!(transport.dir().starts_with(missing.canonicalize()?));
    drop(transport);
    let file = base.path().join("file");
    std::fs::write(&file, b"")?;
    let err = FifoTransport::in_dir(file.join("x")).expect_err("a file is no directory");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn the_worker_sees_eof_when_the_manager_drops_its_writer() -> TestResult {
    watchdog("manager EOF", async {
        let transport = FifoTransport::new()?;
        let mut conn: Conn = Subject::new(transport, WORKER).launch("worker-0").await?;
        conn.handshake("worker-0").await?;
        conn.writer = Box::pin(tokio::io::sink());
        let status = conn.process.wait().await?;
        assert!(status.success(), "{status}");
        assert!(conn.recv().await?.is_none());
        Ok(())
    })
    .await
}
