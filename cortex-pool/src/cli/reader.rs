//! Reads input lines as bytes with a length limit, so one huge line costs at most
//! the limit in memory and bytes that are not UTF-8 spoil only their own line.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The default of `--max-line-bytes`: 4 MiB.
pub(crate) const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// One input line, without its `\n` (and a `\r` before it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawLine {
    /// The line's bytes, at most the limit.
    Bytes(Vec<u8>),
    /// The line was longer than the limit; this many bytes were skipped.
    TooLong(u64),
}

/// Splits a byte stream into lines of at most `max` bytes.
pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads lines from `inner`, refusing those longer than `max` bytes.
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self { inner, max }
    }

    /// The next line; `None` at the end of the input. A line longer than the limit
    /// is skipped without being buffered and reported as [`RawLine::TooLong`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a line read in part is lost if the future is dropped.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<RawLine>> {
        let mut line = Vec::new();
        let mut len: u64 = 0;
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (part, used, end) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            len += part.len() as u64;
            if !too_long {
                if line.len() + part.len() > self.max.saturating_add(1) {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(part);
                }
            }
            self.inner.consume(used);
            if end {
                break;
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if too_long || line.len() > self.max {
            return Ok(Some(RawLine::TooLong(len)));
        }
        Ok(Some(RawLine::Bytes(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize, buf: usize) -> Vec<RawLine> {
        let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(buf, input), max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn lines_split_on_newlines_with_crlf_and_a_last_line_without_newline() {
        let got = all(b"a\r\n\nbc\nd", 10, 2).await;
        let want: Vec<RawLine> = [&b"a"[..], b"", b"bc", b"d"]
            .iter()
            .map(|b| RawLine::Bytes(b.to_vec()))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_skipped_and_the_next_one_read() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nok\nxxxxx\n");
        let got = all(&input, 5, 8).await;
        assert_eq!(
            got,
            vec![
                RawLine::TooLong(100),
                RawLine::Bytes(b"ok".to_vec()),
                RawLine::Bytes(b"xxxxx".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_are_kept_as_they_are() {
        assert_eq!(
            all(b"\xff\xfe\n", 10, 4).await,
            vec![RawLine::Bytes(vec![0xff, 0xfe])]
        );
    }
}
