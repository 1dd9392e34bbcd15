//! Filesystem errors of the daemon and its clients name the path at fault, once,
//! through the real binary.

mod daemon_util;

use daemon_util::{text, Daemon};

/// A daemon whose runtime directory is under a scratch directory holding one
/// regular file, `file`.
fn with_a_file(name: &str) -> (Daemon, std::path::PathBuf) {
    let d = Daemon::new(name, &[]);
    std::fs::create_dir_all(&d.dir).expect("the scratch directory");
    let file = d.dir.join("file");
    std::fs::write(&file, b"not a directory").expect("a regular file");
    (d, file)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_runtime_dir_that_is_a_file_is_named_as_not_a_directory() {
    let (d, file) = with_a_file("fs-runtime");
    d.watchdog(60);
    let rt = format!("runtime_dir={}", file.display());
    let out = d.cli(&["daemon", "start", "--set", &rt]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{}: is not a directory", file.display())),
        "{err}"
    );
    let run = d.cli(&["daemon", "run", "--set", &rt]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(
        stderr_of(&run).contains(&format!("{}: is not a directory", file.display())),
        "{}",
        text(&run)
    );
}

#[test]
fn a_pid_file_under_a_file_is_named_once() {
    let (d, file) = with_a_file("fs-pid");
    d.watchdog(60);
    let pid = file.join("daemon.pid");
    let out = d.cli(&[
        "daemon",
        "run",
        "--set",
        &format!("pid_file={}", pid.display()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr_of(&out);
    assert_eq!(
        err.matches(&pid.display().to_string()).count(),
        1,
        "the path, once: {err}"
    );
    assert!(err.contains("Not a directory"), "{err}");
}

#[test]
fn submit_names_a_task_file_it_cannot_read() {
    let (d, file) = with_a_file("fs-submit");
    d.watchdog(60);
    let missing = file.with_file_name("missing.jsonl");
    let out = d.cli(&["submit", missing.to_str().expect("a UTF-8 path")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr_of(&out).contains(&missing.display().to_string()),
        "{}",
        text(&out)
    );
}

/// A `fifo_dir` and a store's directory the user named are used as they
/// are: a shared, sticky directory keeps its mode (made 0700, a `/tmp`
/// named there would lock every other user out of it).
#[test]
fn a_named_fifo_dir_and_store_directory_keep_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Daemon::new("named-dirs-scratch", &[]);
    let shared = scratch.dir.join("shared");
    let store_dir = scratch.dir.join("stores");
    for (dir, mode) in [(&shared, 0o1777), (&store_dir, 0o755)] {
        std::fs::create_dir_all(dir).expect("a directory");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("its mode");
    }
    let store = store_dir.join("store.db");
    let d = Daemon::new(
        "named-dirs",
        &[
            ("CORTEX_POOL_TRANSPORT", "fifo"),
            ("CORTEX_POOL_FIFO_DIR", shared.to_str().expect("UTF-8")),
            ("CORTEX_POOL_STORE", store.to_str().expect("UTF-8")),
        ],
    );
    d.watchdog(60);
    d.start();
    let out = d.cli(&["submit", "--type", "echo", "--payload", "1", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mode = |dir: &std::path::Path| {
        std::fs::metadata(dir)
            .expect("the directory")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(&shared), 0o1777, "the fifo_dir's mode");
    assert_eq!(mode(&store_dir), 0o755, "the store directory's mode");
}
