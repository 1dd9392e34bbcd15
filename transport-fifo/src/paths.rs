//! The naming scheme of everything the transport creates, and where it goes.
//!
//! A pool's directory is `BASE/cortex-fifo-<pid>-<nonce>` (the owning process id and
//! 16 random hex digits). Inside it live one lock file, [`LOCK_FILE`], and the FIFOs
//! of live workers, `w<seq>.to.fifo` and `w<seq>.from.fifo`, where `seq` counts the
//! launches of that transport (a replaced worker gets a fresh pair). The stale
//! sweep deletes nothing whose name is not of this scheme.

use std::ffi::OsStr;
use std::path::PathBuf;

/// Prefix of a pool directory's name.
const DIR_PREFIX: &str = "cortex-fifo-";
/// Digits of the random nonce in a pool directory's name.
const NONCE_DIGITS: usize = 16;
/// The lock file inside a pool directory, held (`flock`) while the pool lives.
pub(crate) const LOCK_FILE: &str = "pool.lock";
/// Suffix of a manager → worker FIFO.
const TO_SUFFIX: &str = ".to.fifo";
/// Suffix of a worker → manager FIFO.
const FROM_SUFFIX: &str = ".from.fifo";

/// The name of a new pool directory for process `pid`.
pub(crate) fn pool_dir_name(pid: u32, nonce: u64) -> String {
    format!("{DIR_PREFIX}{pid}-{nonce:016x}")
}

/// The name of a pool directory being set up (ignored by the sweep, which only
/// ever sees a directory once it is locked and renamed to its scheme name).
pub(crate) fn staging_dir_name(pid: u32, nonce: u64) -> String {
    format!(".{DIR_PREFIX}staging-{pid}-{nonce:016x}")
}

/// The owning pid, when `name` is a pool directory name of our scheme.
pub(crate) fn parse_pool_dir_name(name: &OsStr) -> Option<u32> {
    pid_and_nonce(name.to_str()?.strip_prefix(DIR_PREFIX)?)
}

/// The owning pid, when `name` is a staging directory name of our scheme (one
/// a process was killed while setting up stays under it).
pub(crate) fn parse_staging_dir_name(name: &OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix('.')?.strip_prefix(DIR_PREFIX)?;
    pid_and_nonce(rest.strip_prefix("staging-")?)
}

/// The pid of `<pid>-<16 hex digits>`.
fn pid_and_nonce(rest: &str) -> Option<u32> {
    let (pid, nonce) = rest.split_once('-')?;
    let nonce_ok = nonce.len() == NONCE_DIGITS
        && nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let pid_ok = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if nonce_ok && pid_ok {
        pid.parse().ok()
    } else {
        None
    }
}

/// The two FIFO names of one launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FifoNames {
    /// Manager → worker.
    pub(crate) to_worker: String,
    /// Worker → manager.
    pub(crate) from_worker: String,
}

/// The FIFO names of launch number `seq`.
pub(crate) fn fifo_names(seq: u64) -> FifoNames {
    FifoNames {
        to_worker: format!("w{seq}{TO_SUFFIX}"),
        from_worker: format!("w{seq}{FROM_SUFFIX}"),
    }
}

/// Whether `name` is a FIFO name of our scheme.
pub(crate) fn is_fifo_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"w") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return false;
    }
    let suffix = &rest[digits..];
    suffix == TO_SUFFIX.as_bytes() || suffix == FROM_SUFFIX.as_bytes()
}

/// Where pool directories go by default: `$XDG_RUNTIME_DIR` when it names an
/// absolute directory (private to the user, on tmpfs), else the system temp dir.
pub(crate) fn default_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_dir_names_round_trip() {
        let name = pool_dir_name(4242, 0xdead_beef);
        assert_eq!(name, "cortex-fifo-4242-00000000deadbeef");
        assert_eq!(parse_pool_dir_name(OsStr::new(&name)), Some(4242));
        let staging = staging_dir_name(4242, 1);
        assert_eq!(parse_pool_dir_name(OsStr::new(&staging)), None);
        assert_eq!(parse_staging_dir_name(OsStr::new(&staging)), Some(4242));
        assert_eq!(parse_staging_dir_name(OsStr::new(&name)), None);
    }

    #[test]
    fn foreign_dir_names_are_not_ours() {
        for name in [
            "cortex-fifo-",
            "cortex-fifo-12",
            "cortex-fifo-12-xyz",
            "cortex-fifo--00000000deadbeef",
            "cortex-fifo-12-00000000DEADBEEF",
            "cortex-fifo-12-00000000deadbeef0",
            "other-12-00000000deadbeef",
        ] {
            assert_eq!(parse_pool_dir_name(OsStr::new(name)), None, "{name}");
        }
    }

    #[test]
    fn fifo_names_follow_the_scheme() {
        let names = fifo_names(7);
        assert_eq!(names.to_worker, "w7.to.fifo");
        assert_eq!(names.from_worker, "w7.from.fifo");
        assert!(is_fifo_name(names.to_worker.as_bytes()));
        assert!(is_fifo_name(names.from_worker.as_bytes()));
        for other in ["w.to.fifo", "x7.to.fifo", "w7.to.fifo.bak", "w7", LOCK_FILE] {
            assert!(!is_fifo_name(other.as_bytes()), "{other}");
        }
    }
}
