//! A listing (`tasks`, `dlq list`) in pages: its entries, as JSON text, in
//! [`Reply::LinesText`] replies that each fit the largest reply a client
//! reads, then [`Reply::Done`] with the count of entries sent and of those
//! left out. So a listing of any length can be read: in one reply, one past
//! the limit was refused as `too_large` whole.
//!
//! An entry too large for a reply of its own (an error message of nearly
//! the limit, a long history) is named by a `too_large` error in its place,
//! and the listing goes on.

use crate::daemon::protocol::Reply;

/// The most entry bytes a page gathers (smaller than the limit, so a long
/// listing flows to its client a page at a time); an entry larger than this
/// goes alone in its page, up to the limit.
pub(crate) const PAGE_BYTES: usize = 1 << 20;

/// What a [`Reply::LinesText`] frame holds besides its lines: the map, its
/// keys, the kind and the array's head (29 bytes at most), rounded up.
const ENVELOPE: usize = 32;

/// What each line adds to a page besides its text: its string head, at most.
const LINE_HEAD: usize = 5;

/// A listing being cut into pages: entries go in with [`push`](Self::push);
/// the replies that are ready come out into the caller's list.
#[derive(Debug)]
pub(crate) struct Pages {
    /// The largest reply frame's body, in bytes.
    limit: usize,
    /// The page being filled.
    page: Vec<String>,
    /// What the page's lines weigh, heads included.
    bytes: usize,
    /// Entries sent.
    listed: u64,
    /// Entries too large to send.
    left_out: u64,
}

impl Pages {
    /// A listing whose replies are at most `limit` bytes each.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            page: Vec::new(),
            bytes: 0,
            listed: 0,
            left_out: 0,
        }
    }

    /// Adds the entry of task `id`, its JSON text `entry`; appends to `ready`
    /// the replies that are complete.
    pub(crate) fn push(&mut self, id: &str, entry: String, ready: &mut Vec<Reply>) {
        let weight = entry.len() + LINE_HEAD;
        if ENVELOPE + weight > self.limit {
            self.flush(ready);
            self.left_out += 1;
            ready.push(Reply::error(
                "too_large",
                format!(
                    "the entry of task {id} is {} bytes, more than a reply carries ({} bytes); \
                     `cortex-pool result {id}` shows the task",
                    entry.len(),
                    self.limit
                ),
            ));
            return;
        }
        if !self.page.is_empty() && ENVELOPE + self.bytes + weight > self.limit.min(PAGE_BYTES) {
            self.flush(ready);
        }
        self.bytes += weight;
        self.listed += 1;
        self.page.push(entry);
    }

    /// Ends the listing: appends its last page, if any, and `Done`.
    pub(crate) fn end(mut self, ready: &mut Vec<Reply>) {
        self.flush(ready);
        ready.push(Reply::Done {
            accepted: self.listed,
            refused: self.left_out,
        });
    }

    /// Ends the listing short with `error`: appends the page being filled,
    /// if any, then the error (no `Done`), so what was read goes out first.
    pub(crate) fn fail(mut self, error: Reply, ready: &mut Vec<Reply>) {
        self.flush(ready);
        ready.push(error);
    }

    /// Appends the page being filled, if it holds anything.
    fn flush(&mut self, ready: &mut Vec<Reply>) {
        if !self.page.is_empty() {
            self.bytes = 0;
            ready.push(Reply::LinesText {
                lines: std::mem::take(&mut self.page),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::protocol::frame_reply;
    use bytes::BytesMut;

    /// The replies for entries of these lengths, under `limit`.
    fn paged(lengths: &[usize], limit: usize) -> Vec<Reply> {
        let mut pages = Pages::new(limit);
        let mut ready = Vec::new();
        for (n, &len) in lengths.iter().enumerate() {
            let entry = format!(r#"{{"id":"{n}","pad":"{}"}}"#, "x".repeat(len));
            pages.push(&n.to_string(), entry, &mut ready);
        }
        pages.end(&mut ready);
        ready
    }

    /// Every page frames within the limit, the entries come in order, each
    /// once, and `Done` counts them.
    #[test]
    fn every_page_fits_the_limit_and_the_entries_come_in_order() {
        let limit = 300;
        let lengths: Vec<usize> = (0..200).map(|n| (n * 37) % 200).collect();
        let replies = paged(&lengths, limit);
        let mut seen = Vec::new();
        let mut pages = 0;
        for reply in &replies {
            let mut buf = BytesMut::new();
            assert!(
                frame_reply(reply, &mut buf, limit).is_ok(),
                "a reply over {limit} bytes: {reply:?}"
            );
            if let Reply::LinesText { lines } = reply {
                pages += 1;
                for line in lines {
                    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                    seen.push(entry["id"].as_str().unwrap().parse::<usize>().unwrap());
                }
            }
        }
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(pages > 1, "one page only");
        assert_eq!(
            replies.last(),
            Some(&Reply::Done {
                accepted: 200,
                refused: 0
            })
        );
    }

    /// Entries that fit the limit exactly are sent, alone; one past it is
    /// named in its place by a `too_large` error, counted in `Done`, and
    /// the listing goes on.
    #[test]
    fn an_entry_too_large_for_a_reply_is_named_and_the_listing_goes_on() {
        let limit = 200;
        // The largest entry a reply carries: its text, its head, the page's
        // envelope.
        let fits = limit - ENVELOPE - LINE_HEAD - r#"{"id":"1","pad":""}"#.len();
        let replies = paged(&[3, fits, fits + 1, 4], limit);
        let kinds: Vec<String> = replies
            .iter()
            .map(|r| match r {
                Reply::LinesText { lines } => format!("page {}", lines.len()),
                Reply::Error { kind, message } => {
                    assert!(message.contains("task 2"), "{message}");
                    kind.clone()
                }
                Reply::Done { accepted, refused } => format!("done {accepted} {refused}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["page 1", "page 1", "too_large", "page 1", "done 3 1"]
        );
        for reply in &replies {
            assert!(frame_reply(reply, &mut BytesMut::new(), limit).is_ok());
        }
    }

    /// A listing of nothing is `Done` alone.
    #[test]
    fn an_empty_listing_is_done_at_once() {
        assert_eq!(
            paged(&[], 100),
            [Reply::Done {
                accepted: 0,
                refused: 0
            }]
        );
    }

    /// A long listing is cut at about `PAGE_BYTES` a page, though the limit
    /// is larger.
    #[test]
    fn pages_hold_about_page_bytes_under_a_larger_limit() {
        let limit = 16 << 20;
        let replies = paged(&vec![1000; 3 * PAGE_BYTES / 1000], limit);
        let pages: Vec<usize> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::LinesText { lines } => Some(lines.iter().map(|l| l.len() + LINE_HEAD).sum()),
                _ => None,
            })
            .collect();
        assert!(pages.len() >= 3, "{pages:?}");
        assert!(pages.iter().all(|&bytes| bytes <= PAGE_BYTES), "{pages:?}");
    }
}
