//! `run --events FILE`: every pool event as a JSON line, written on a thread
//! of its own, so a slow disk holds up no task of the runtime.
//!
//! Turning an event into a line with sorted keys costs more than the pool
//! spends making it: a writer that read the pool's event channel itself fell
//! behind on every busy run and lost up to half the events of a 20 000-task
//! run. So a task on the runtime only moves each event from the channel to
//! the writer's queue (a fraction of a microsecond), and the writer turns
//! them into lines at its own pace. The queue holds at most [`MAX_BACKLOG`]
//! events; what does not fit, or what the channel itself dropped, is written
//! as an `events-lost` line where it was lost, and the run reports the file
//! incomplete.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use pool_core::PoolEvent;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The pool's event channel buffer `run --events` asks for: room for the
/// events of a burst while the mover task waits for a thread.
pub(crate) const CHANNEL_CAPACITY: usize = 1 << 14;

/// Events waiting for the writer at most (about 150 B each): a disk slower
/// than the pool for that long loses events instead of memory growing
/// without bound.
const MAX_BACKLOG: usize = 1 << 20;

/// What the writer is handed.
enum Item {
    Event(PoolEvent),
    /// This many events were dropped here.
    Lost(u64),
}

/// The writer of the events file, running.
pub(crate) struct EventsFile {
    path: PathBuf,
    mover: JoinHandle<()>,
    writer: JoinHandle<std::io::Result<u64>>,
}

impl EventsFile {
    /// Starts writing `events` to `file` (opened at `path`).
    pub(crate) fn start(
        events: broadcast::Receiver<PoolEvent>,
        file: std::fs::File,
        path: PathBuf,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let moved = backlog.clone();
        let mover = tokio::task::spawn_blocking(move || move_events(events, tx, &moved));
        Self {
            path,
            mover,
            writer: tokio::task::spawn_blocking(move || write(&rx, &backlog, file)),
        }
    }

    /// Waits for the writer to end (after the pool's `pool-shutdown`, or at
    /// its first failed write): why the file is incomplete, if it is.
    pub(crate) async fn finish(self) -> Option<String> {
        let _ = self.mover.await;
        let why = match self.writer.await {
            Ok(Ok(0)) => return None,
            Ok(Ok(lost)) => {
                return Some(format!(
                    "{lost} events were lost: the writer of {} fell behind the pool (each gap is \
                     an events-lost line)",
                    self.path.display()
                ))
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the writer failed: {e}"),
        };
        Some(format!(
            "cannot write the events to {} ({why}); the events after it were not written",
            self.path.display()
        ))
    }
}

/// Moves each event to the writer until `pool-shutdown` (or the pool is
/// gone); events the channel dropped, or that find the backlog full, are
/// handed over as a count where they were lost.
fn move_events(
    mut events: broadcast::Receiver<PoolEvent>,
    to: mpsc::Sender<Item>,
    backlog: &AtomicUsize,
) {
    let mut lost = 0u64;
    loop {
        let event = match events.blocking_recv() {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                lost += n;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let last = matches!(event, PoolEvent::PoolShutdown);
        // The last event always goes: the writer ends the file with it, and
        // this thread ends there too (waiting on for one the channel dropped
        // would wait as long as a clone of the pool lives).
        if !last && backlog.load(Relaxed) >= MAX_BACKLOG {
            lost += 1;
            continue;
        }
        if lost > 0 {
            backlog.fetch_add(1, Relaxed);
            let _ = to.send(Item::Lost(std::mem::take(&mut lost)));
        }
        backlog.fetch_add(1, Relaxed);
        if to.send(Item::Event(event)).is_err() || last {
            return;
        }
    }
    if lost > 0 {
        backlog.fetch_add(1, Relaxed);
        let _ = to.send(Item::Lost(lost));
    }
}

/// Writes each event as a JSON line with a `ts_ms` field (Unix time in ms),
/// and each loss as an `events-lost` line, until the mover is done; stops at
/// the first failed write and returns its error, else how many events were
/// lost.
fn write(
    items: &mpsc::Receiver<Item>,
    backlog: &AtomicUsize,
    file: impl Write,
) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(file);
    let mut lost = 0;
    while let Ok(item) = items.recv() {
        backlog.fetch_sub(1, Relaxed);
        let line = match item {
            Item::Event(event) => serde_json::to_value(&event),
            Item::Lost(n) => {
                lost += n;
                Ok(serde_json::json!({ "event": "events-lost", "lost": n }))
            }
        };
        let Ok(serde_json::Value::Object(mut map)) = line else {
            continue;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        map.insert("ts_ms".into(), ts.into());
        serde_json::to_writer(&mut out, &map)?;
        out.write_all(b"\n")?;
        if backlog.load(Relaxed) == 0 {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawned(n: usize) -> PoolEvent {
        PoolEvent::WorkerSpawned {
            worker: format!("worker-{n}"),
        }
    }

    /// The lines written for what the pool sent on a channel before the
    /// mover started (its buffer holds 2), and the count of lost events.
    fn written(sent: &[PoolEvent]) -> (Vec<serde_json::Value>, u64) {
        let (channel, events) = broadcast::channel(2);
        for event in sent {
            channel.send(event.clone()).expect("a receiver");
        }
        drop(channel);
        let (tx, rx) = mpsc::channel();
        let backlog = AtomicUsize::new(0);
        move_events(events, tx, &backlog);
        let mut out = Vec::new();
        let lost = write(&rx, &backlog, &mut out).expect("written");
        assert_eq!(
            backlog.load(Relaxed),
            0,
            "every item handed over was written"
        );
        let lines = String::from_utf8(out)
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines, lost)
    }

    #[test]
    fn events_the_channel_dropped_are_an_events_lost_line_where_they_were_lost() {
        let sent = [
            spawned(1),
            spawned(2),
            spawned(3),
            spawned(4),
            PoolEvent::PoolShutdown,
        ];
        let (lines, lost) = written(&sent);
        assert_eq!(lost, 3, "the channel kept the last 2 of 5");
        let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["events-lost", "worker-spawned", "pool-shutdown"]);
        assert_eq!(lines[0]["lost"], 3);
        assert_eq!(lines[1]["worker"], "worker-4");
        assert!(lines.iter().all(|l| l["ts_ms"].as_u64().is_some()));
    }

    #[test]
    fn a_stream_read_whole_loses_nothing_and_stops_at_pool_shutdown() {
        let (lines, lost) = written(&[spawned(1), PoolEvent::PoolShutdown]);
        assert_eq!(lost, 0);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "pool-shutdown");
    }

    #[test]
    fn pool_shutdown_gets_through_a_full_backlog_and_ends_the_mover() {
        let (channel, events) = broadcast::channel(8);
        channel.send(spawned(1)).expect("a receiver");
        channel.send(PoolEvent::PoolShutdown).expect("a receiver");
        // The pool is still alive: only `pool-shutdown` can end the mover.
        let (tx, rx) = mpsc::channel();
        let backlog = AtomicUsize::new(MAX_BACKLOG);
        move_events(events, tx, &backlog);
        let names: Vec<String> = rx
            .try_iter()
            .map(|item| match item {
                Item::Event(event) => format!("{event:?}"),
                Item::Lost(n) => format!("lost {n}"),
            })
            .collect();
        assert_eq!(names, ["lost 1", "PoolShutdown"]);
        drop(channel);
    }
}
