//! Reading a process's vitals from `/proc`, so the pool need not trust its workers.

/// The resident set size of process `pid` in bytes, from `/proc/<pid>/statm`
/// (`None` where `/proc` is not available or the process is gone).
pub fn process_rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_rss_is_readable_and_plausible() {
        let rss = process_rss(std::process::id()).unwrap();
        assert!(rss > 100 * 1024, "{rss}");
    }

    #[test]
    fn a_missing_process_has_no_rss() {
        assert_eq!(process_rss(u32::MAX), None);
    }
}
