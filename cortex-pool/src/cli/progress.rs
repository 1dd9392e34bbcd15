//! The progress line `cortex-pool run` draws on standard error: `N / TOTAL tasks
//! done`, with the real total when the input is a file. When standard output and
//! standard error are the same file (one terminal), the line is cleared before each
//! result line, so the two never share a line.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// `--progress`: when to draw the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProgressMode {
    /// When standard error is a terminal.
    Auto,
    /// Always (also into a file or pipe).
    Always,
    /// Never.
    Never,
}

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// The progress line's state, owned by the output writer.
#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    /// Standard output is the same file as standard error.
    shared: bool,
    /// The number of tasks in the input file, when known.
    total: Option<u64>,
    drawn: bool,
    last: Option<Instant>,
}

impl Progress {
    /// Decides from the mode and the standard streams; `total` is the task count
    /// when the input is a file.
    pub(crate) fn new(mode: ProgressMode, total: Option<u64>) -> Self {
        let enabled = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        Self {
            enabled,
            shared: same_file(&std::io::stdout(), &std::io::stderr()),
            total,
            drawn: false,
            last: None,
        }
    }

    /// Whether the line is drawn at all.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Call before writing a result line: clears the progress line if it shares
    /// the result's file.
    pub(crate) fn before_line(&mut self) {
        if self.shared && self.drawn {
            clear();
            self.drawn = false;
        }
    }

    /// Call after standard output was flushed: redraws the line when it is due.
    pub(crate) fn after_flush(&mut self, done: u64, read: u64) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = match self.total {
            Some(total) => write!(err, "\r\x1b[2K{done} / {total} tasks done"),
            None => write!(
                err,
                "\r\x1b[2K{done} / {read} tasks done (input still open)"
            ),
        };
        let _ = err.flush();
        self.drawn = true;
    }

    /// Call at the end: removes the line.
    pub(crate) fn finish(&mut self) {
        if self.drawn {
            clear();
            self.drawn = false;
        }
    }
}

fn clear() {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\r\x1b[2K");
    let _ = err.flush();
}

/// Whether two streams are the same open file (device and inode).
fn same_file(a: &impl AsFd, b: &impl AsFd) -> bool {
    let meta = |fd: &dyn AsFd| {
        let file = std::fs::File::from(fd.as_fd().try_clone_to_owned().ok()?);
        let m = file.metadata().ok()?;
        Some(std::os::unix::fs::MetadataExt::dev(&m))
            .zip(Some(std::os::unix::fs::MetadataExt::ino(&m)))
    };
    match (meta(a), meta(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The number of tasks (non-blank lines) in a regular file; `None` for anything
/// else (a pipe, a terminal) or when it cannot be read.
pub(crate) fn count_tasks(path: &Path) -> Option<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let (mut count, mut blank) = (0u64, true);
    loop {
        let chunk = reader.fill_buf().ok()?;
        if chunk.is_empty() {
            break;
        }
        for &b in chunk {
            match b {
                b'\n' => {
                    count += u64::from(!blank);
                    blank = true;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => blank = false,
            }
        }
        let n = chunk.len();
        reader.consume(n);
    }
    Some(count + u64::from(!blank))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_the_non_blank_lines_of_a_file() {
        let dir = std::env::temp_dir().join(format!("progress-count-{}", std::process::id()));
        std::fs::write(&dir, "{}\n\n  \n{}\r\n{}").unwrap();
        let count = count_tasks(&dir);
        let _ = std::fs::remove_file(&dir);
        assert_eq!(count, Some(3));
        assert_eq!(count_tasks(Path::new("/dev/null")), None);
    }
}
