//! The control socket's defences and limits: file permissions, the credential
//! check, the clients' requests within `max_request_bytes`, and thousands of
//! random and truncated frames that must not take the daemon down.

mod daemon_util;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use daemon_util::{text, Daemon};

#[test]
fn the_runtime_dir_is_0700_and_the_socket_and_pid_file_0600() {
    let mut d = Daemon::new("perms", &[]);
    d.watchdog(60);
    d.run_foreground();
    let mode = |name: &str| std::fs::metadata(d.dir.join(name)).unwrap().mode() & 0o777;
    assert_eq!(std::fs::metadata(&d.dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(mode("daemon.sock"), 0o600);
    assert_eq!(mode("daemon.pid"), 0o600);
    assert_eq!(d.stop().status.code(), Some(0));
}

#[test]
fn a_peer_that_fails_the_credential_check_is_refused_and_others_still_served() {
    // Only uid 4242 is allowed: our own connections fail the check.
    let mut d = Daemon::new("creds", &[("CORTEX_POOL_ALLOWED_UIDS", "[4242]")]);
    d.watchdog(60);
    let pid = d.start();
    let out = d.cli(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out)
    );
    let out = d.cli(&["submit", "--type", "echo", "--payload", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    // The daemon is still there and stops normally (stop uses the PID file).
    assert!(daemon_util::alive(pid));
    assert_eq!(d.stop().status.code(), Some(0));
}

/// Another user cannot connect: the socket's directory is 0700. Switching
/// users needs root, which the test suite runs as (README); run as another
/// user, the test fails saying so rather than passing untested.
#[test]
fn another_local_user_cannot_reach_the_daemon() {
    assert_eq!(
        rustix_uid(),
        0,
        "this test switches to uid 65534 and needs root; run the test suite as root (README.md says so)"
    );
    let mut d = Daemon::new("other-user", &[]);
    d.watchdog(60);
    d.run_foreground();
    use std::os::unix::process::CommandExt;
    let out = d
        .command(&["daemon", "status"])
        .uid(65534)
        .gid(65534)
        .output();
    let out = match out {
        // The checkout is under a directory only root enters: the other
        // user runs a copy of the binary it can read.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let copy = OtherUsersCopy::new(daemon_util::bin());
            let other = d.command(&["daemon", "status"]);
            let other = std::process::Command::new(&copy.path)
                .args(other.get_args())
                .envs(other.get_envs().filter_map(|(k, v)| Some((k, v?))))
                .uid(65534)
                .gid(65534)
                .output();
            other.expect("the other user runs its copy of the binary")
        }
        out => out.expect("the other user runs the binary"),
    };
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("running (pid"));
    assert!(d.cli(&["daemon", "status"]).status.success());
    assert_eq!(d.stop().status.code(), Some(0));
}

/// A copy of a binary in a fresh 0755 directory, removed on drop.
struct OtherUsersCopy {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl OtherUsersCopy {
    fn new(bin: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cp-other-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the copy");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("the copy's directory opened to others");
        let path = dir.join("cortex-pool");
        std::fs::copy(bin, &path).expect("the binary copied");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("the copy made executable");
        Self { dir, path }
    }
}

impl Drop for OtherUsersCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rustix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A frame: u32 big-endian length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A seeded xorshift, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn ping(d: &Daemon) -> bool {
    let Ok(mut s) = UnixStream::connect(d.socket()) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    // {"op": "ping"} as a MessagePack map.
    let body = [0x81, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
    if s.write_all(&frame(&body)).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).is_ok() && reply.windows(3).any(|w| w == b"pid")
}

#[test]
fn random_and_truncated_frames_never_take_the_daemon_down() {
    let mut d = Daemon::new("fuzz", &[("CORTEX_POOL_MAX_REQUEST_BYTES", "4096")]);
    d.watchdog(120);
    let pid = d.run_foreground();
    assert!(ping(&d));
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    for i in 0..3000u32 {
        let Ok(mut s) = UnixStream::connect(d.socket()) else {
            panic!("connection {i} refused");
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let len = (rng.next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let bytes = match i % 5 {
            0 => body,                                                         // raw garbage
            1 => frame(&body),                                                 // a frame of garbage
            2 => frame(&body)[..(len / 2).max(1)].to_vec(),                    // truncated frame
            3 => (u32::MAX - (rng.next() % 16) as u32).to_be_bytes().to_vec(), // oversized
            _ => {
                // A valid map with a wrong or missing op.
                let mut m = vec![0x81, 0xa2, b'o', b'p', 0xa3];
                m.extend((0..3).map(|_| b'a' + (rng.next() % 26) as u8));
                frame(&m)
            }
        };
        let _ = s.write_all(&bytes);
        if i % 5 == 3 || i % 5 == 4 || i % 5 == 1 {
            // Complete but bad frames get an error reply, then the connection closes.
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            if i % 5 != 1 || len > 0 {
                assert!(
                    !reply.is_empty() || i % 5 == 1,
                    "no error reply for case {}",
                    i % 5
                );
            }
        }
        drop(s);
        if i % 500 == 0 {
            assert!(
                ping(&d),
                "the daemon stopped answering after {i} bad connections"
            );
        }
    }
    assert!(ping(&d));
    assert!(daemon_util::alive(pid));
    let out = d.cli(&[
        "submit",
        "--type",
        "echo",
        "--payload",
        "{\"x\":1}",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.stop().status.code(), Some(0));
}

#[test]
fn submit_and_wait_keep_within_max_request_bytes_and_name_a_request_over_it() {
    let d = Daemon::new(
        "request-limit",
        &[("CORTEX_POOL_MAX_REQUEST_BYTES", "4096")],
    );
    d.watchdog(60);
    d.start();
    // 200 lines of about 60 bytes: more than one request of 4 096 bytes.
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\":\"s{i}\",\"type\":\"echo\",\"payload\":{i}}}\n"))
        .collect();
    let out = d.cli_with_input(&["submit", "--wait"], &lines);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 200);
    // One line over the limit, larger than the socket holds: the daemon
    // answers and closes while the client still writes. Its reason is the
    // answer, not a lost connection.
    let big = format!(
        "{{\"id\":\"big\",\"type\":\"echo\",\"payload\":\"{}\"}}\n",
        "x".repeat(4 << 20)
    );
    let out = d.cli_with_input(&["submit"], &big);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too_large"), "{stderr}");
    assert!(!stderr.contains("does not answer"), "{stderr}");
    // A wait the daemon refuses ends with its reason, not asked again.
    let long_id = "k".repeat(5000);
    let out = d.cli(&["wait", &long_id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the request: too_large"),
        "{stderr}"
    );
}

#[test]
fn a_wait_split_over_requests_answers_an_id_named_in_two_of_them_once() {
    let d = Daemon::new("split-wait", &[("CORTEX_POOL_MAX_REQUEST_BYTES", "4096")]);
    d.watchdog(60);
    d.start();
    let out = d.cli_with_input(
        &["submit", "--wait"],
        "{\"id\":\"s7\",\"type\":\"echo\",\"payload\":7}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // 302 ids of about 10 bytes: more than one request of 4 096 bytes.
    let mut ids: Vec<String> = vec!["s7".to_owned()];
    ids.extend((0..300).map(|i| format!("unknown-{i}")));
    ids.push("s7".to_owned());
    let args: Vec<&str> = std::iter::once("wait")
        .chain(ids.iter().map(String::as_str))
        .collect();
    let out = d.cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 301, "{}", text(&out));
    assert_eq!(
        stdout.lines().filter(|l| l.contains("\"s7\"")).count(),
        1,
        "{stdout}"
    );
}
