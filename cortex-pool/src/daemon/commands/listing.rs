//! The client side of the listings, `tasks` and `dlq list`: asks the daemon
//! for its entries in pages (each within the largest reply, so a listing of
//! any length is read whole) and hands each entry's JSON text on as it
//! comes. A daemon from before pages answers one array, read the same way.

use serde_json::Value;

use crate::daemon::client::Client;
use crate::daemon::config::Settings;
use crate::daemon::protocol::{Reply, Request};

use super::{connect_error, Fail};

/// Sends `request` (a listing that asks for pages) to the daemon configured
/// by `settings` and hands each entry to `entry`, in the daemon's order.
///
/// # Errors
/// Exit 3 when the daemon is not running; exit 1 when it refuses the
/// request, when the connection ends before the listing does, or, once the
/// rest is handed on, when entries were too large to send (each named).
pub(super) fn listing(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    request: &Request,
    entry: &mut dyn FnMut(&str),
) -> Result<(), Fail> {
    rt.block_on(async {
        let mut client = Client::connect(&settings.paths.socket)
            .await
            .map_err(|e| connect_error(settings, &e))?;
        // A daemon that refuses us replies and closes at once, perhaps
        // before the request is fully written: its reply is read all the same.
        let sent = client.send(request).await;
        let listed = read_listing(&mut client, sent, &mut |text| {
            entry(text);
            true
        })
        .await;
        match listed {
            Ok(listed) => verdict(listed),
            Err(ListingError::Unanswered(e)) => Err(connect_error(settings, &e)),
            Err(ListingError::Failed(why)) => Err(failed(why)),
        }
    })
}

/// The CLI's outcome of a listing read to its end: a failure when entries
/// were left out (each named, once the rest was handed on).
fn verdict(listed: Listed) -> Result<(), Fail> {
    if listed.left_out.is_empty() {
        Ok(())
    } else {
        Err(failed(listed.left_out))
    }
}

/// The CLI's failure for these reasons: exit 1, a line each.
fn failed(why: Vec<String>) -> Fail {
    Fail(1, why.join("\ncortex-pool: "))
}

/// Why a listing read by [`read_listing`] failed.
#[derive(Debug)]
pub(crate) enum ListingError {
    /// No reply came: why the request or the connection failed (a daemon
    /// that refuses a connection replies before it closes, so this is no
    /// refusal).
    Unanswered(std::io::Error),
    /// The daemon refused the listing, its counts did not add up, or the
    /// connection ended partway: the entries left out before that, each
    /// named, then why.
    Failed(Vec<String>),
}

impl std::fmt::Display for ListingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unanswered(e) => write!(f, "{e}"),
            Self::Failed(why) => write!(f, "{}", why.join("; ")),
        }
    }
}

/// How a listing read by [`read_listing`] ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Whether it was read to its end (not stopped by its reader).
    pub(crate) whole: bool,
    /// Why each entry the daemon left out was (too large for a reply), in
    /// the listing's order, as far as it was read.
    pub(crate) left_out: Vec<String>,
}

/// Reads the replies of a listing (asked for in pages) sent on `client`
/// (`sent`: how sending it went), handing each entry to `entry` until it
/// returns `false` (the rest is not read: the caller hangs up) or the
/// listing ends.
///
/// # Errors
/// [`ListingError::Unanswered`] when nothing came; [`ListingError::Failed`]
/// for the daemon's refusal (read even when the request could not be written
/// whole: a daemon that refuses a connection says why and closes), a
/// connection that ends before the listing does, or a listing whose counts
/// do not add up.
pub(crate) async fn read_listing(
    client: &mut Client,
    sent: std::io::Result<()>,
    entry: &mut impl FnMut(&str) -> bool,
) -> Result<Listed, ListingError> {
    let mut read = Read::default();
    let mut wanted = true;
    loop {
        let reply = match client.next().await {
            Ok(reply) => reply,
            Err(e) if read.began() => return Err(read.failed_early(&e)),
            Err(e) => return Err(ListingError::Unanswered(sent.err().unwrap_or(e))),
        };
        let end = read.take(reply, &mut |text| {
            if wanted {
                wanted = entry(text);
            }
        });
        if end.is_some() || !wanted {
            end.transpose()
                .map_err(|why| ListingError::Failed(vec![why]))?;
            return Ok(Listed {
                whole: wanted,
                left_out: read.left_out,
            });
        }
    }
}

/// What a listing has read so far.
#[derive(Debug, Default)]
struct Read {
    /// Entries handed on.
    entries: u64,
    /// Why each entry left out was (too large for a reply).
    left_out: Vec<String>,
}

impl Read {
    /// Whether any of the listing came.
    fn began(&self) -> bool {
        self.entries > 0 || !self.left_out.is_empty()
    }

    /// Takes the next reply; `Some` once the listing is over: `Ok` when it
    /// ended as the daemon said (entries left out are in `left_out`), why
    /// not otherwise.
    fn take(&mut self, reply: Reply, entry: &mut dyn FnMut(&str)) -> Option<Result<(), String>> {
        match reply {
            Reply::LinesText { lines } => {
                for line in &lines {
                    entry(line);
                }
                self.entries += lines.len() as u64;
                None
            }
            // An entry too large for a reply (or, from a daemon before
            // pages, the whole listing: the connection then ends).
            Reply::Error { kind, message } if kind == "too_large" => {
                self.left_out.push(message);
                None
            }
            Reply::Done { accepted, refused } => Some(self.done(accepted, refused)),
            // A daemon from before pages: the whole listing at once.
            Reply::Json {
                value: Value::Array(entries),
            } if !self.began() => {
                for value in &entries {
                    entry(&value.to_string());
                }
                Some(Ok(()))
            }
            Reply::Error { kind, message } => Some(Err(format!("{kind}: {message}"))),
            other => Some(Err(format!("unexpected reply: {other:?}"))),
        }
    }

    /// The listing's end: the daemon sent `accepted` entries and left out
    /// `refused`.
    fn done(&self, accepted: u64, refused: u64) -> Result<(), String> {
        if accepted != self.entries || refused != self.left_out.len() as u64 {
            return Err(format!(
                "the daemon says it listed {accepted} entries and left out {refused}, \
                 but {} came and {} were left out",
                self.entries,
                self.left_out.len()
            ));
        }
        Ok(())
    }

    /// The failure of a listing whose connection ended after it began: the
    /// entries left out so far, then where it ended.
    fn failed_early(self, e: &std::io::Error) -> ListingError {
        let mut why = self.left_out;
        why.push(format!(
            "the listing ended after {} entries, before the daemon said it was complete: {e}",
            self.entries
        ));
        ListingError::Failed(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::durable::listing::tests::{answered, with_dead_letters};
    use crate::daemon::durable::listing::{dlq_list, Shape};

    /// What a listing of `replies` hands on, and how it ends (`None`: not
    /// ended).
    fn read(replies: Vec<Reply>) -> (Vec<String>, Option<Result<(), String>>) {
        let mut read = Read::default();
        let mut entries = Vec::new();
        for reply in replies {
            if let Some(end) = read.take(reply, &mut |e| entries.push(e.to_owned())) {
                let verdict = end.map_err(|why| failed(vec![why])).and_then(|()| {
                    verdict(Listed {
                        whole: true,
                        left_out: read.left_out.clone(),
                    })
                });
                return (
                    entries,
                    Some(verdict.map_err(|Fail(code, why)| format!("{code}: {why}"))),
                );
            }
        }
        (entries, None)
    }

    fn page(entries: &[&str]) -> Reply {
        Reply::LinesText {
            lines: entries.iter().map(|&e| e.to_owned()).collect(),
        }
    }

    /// The daemon's pages of a long dead-letter queue are read whole, in
    /// order: what one reply of it all would have carried, had it fitted.
    #[tokio::test]
    async fn a_listing_in_pages_is_read_whole_and_in_order() {
        let daemon = with_dead_letters(25).await;
        let list = async |shape, out: &_| dlq_list(&daemon, shape, out).await;
        let pages = answered(Shape::Pages(800), list).await;
        assert!(pages.len() > 3, "{} replies", pages.len());
        let (entries, end) = read(pages);
        assert_eq!(end, Some(Ok(())));
        let (whole, end) = read(answered(Shape::Whole, list).await);
        assert_eq!(end, Some(Ok(())), "a daemon from before pages is read too");
        assert_eq!(entries.len(), 25);
        assert_eq!(entries, whole);
    }

    /// An entry the daemon could not send is named, after every other one was
    /// handed on, and the listing fails (exit 1).
    #[test]
    fn an_entry_left_out_is_named_after_the_rest_and_fails_the_listing() {
        let (entries, end) = read(vec![
            page(&["{\"id\":\"a\"}"]),
            Reply::error("too_large", "the entry of task b is 20000000 bytes"),
            page(&["{\"id\":\"c\"}"]),
            Reply::Done {
                accepted: 2,
                refused: 1,
            },
        ]);
        assert_eq!(entries, ["{\"id\":\"a\"}", "{\"id\":\"c\"}"]);
        assert_eq!(
            end,
            Some(Err("1: the entry of task b is 20000000 bytes".to_owned()))
        );
    }

    /// A count that does not match what came, or a refusal, fails the
    /// listing and says why.
    #[test]
    fn a_listing_that_does_not_add_up_or_is_refused_fails() {
        let (_, end) = read(vec![
            page(&["{}", "{}"]),
            Reply::Done {
                accepted: 3,
                refused: 0,
            },
        ]);
        let why = end.unwrap().unwrap_err();
        assert!(
            why.contains("listed 3 entries") && why.contains("2 came"),
            "{why}"
        );
        let (entries, end) = read(vec![Reply::error("store", "disk I/O error")]);
        assert!(entries.is_empty());
        assert_eq!(end, Some(Err("1: store: disk I/O error".to_owned())));
    }

    /// A connection that ends during the listing says after how many entries,
    /// and names the entries left out so far.
    #[test]
    fn a_listing_cut_short_says_where() {
        let mut read = Read::default();
        let mut entries = 0;
        for reply in [
            page(&["{}"]),
            Reply::error("too_large", "a reply larger than 16 bytes"),
        ] {
            assert!(read.take(reply, &mut |_| entries += 1).is_none());
        }
        assert!(read.began());
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let ListingError::Failed(why) = read.failed_early(&eof) else {
            panic!("a failure");
        };
        let Fail(code, why) = failed(why);
        assert_eq!(code, 1);
        assert!(why.starts_with("a reply larger than 16 bytes"), "{why}");
        assert!(why.contains("ended after 1 entries"), "{why}");
    }
}
