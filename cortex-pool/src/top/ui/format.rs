//! Number formats shared by the panels.

/// Milliseconds as `0.25ms`, `12.5ms` or `1.2s`.
pub(super) fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// A duration in milliseconds as `850ms`, `42s`, `7m05s`, `3h12m` or `2d04h`.
pub(super) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Bytes as `812K`, `45.3M` or `1.2G`.
pub(super) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1024.0 * 1024.0 {
        format!("{:.0}K", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}M", n / 1_048_576.0)
    } else {
        format!("{:.1}G", n / 1_073_741_824.0)
    }
}

/// Wall-clock `HH:MM:SS` (UTC) of a time in milliseconds since the epoch.
pub(super) fn clock(at_ms: u64) -> String {
    let s = (at_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(millis(0.25), "0.25ms");
        assert_eq!(millis(12.54), "12.5ms");
        assert_eq!(millis(1234.0), "1.2s");
        assert_eq!(age(850), "850ms");
        assert_eq!(age(425_000), "7m05s");
        assert_eq!(age(3 * 3_600_000 + 12 * 60_000), "3h12m");
        assert_eq!(bytes(47_500_000), "45.3M");
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
