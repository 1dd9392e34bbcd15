//! `run --events FILE`: every pool event as a JSON line, written on a thread
//! of its own, so a slow disk holds up no task of the runtime.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use pool_core::PoolEvent;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The writer of the events file, running.
pub(crate) struct EventsFile {
    path: PathBuf,
    writer: JoinHandle<std::io::Result<()>>,
}

impl EventsFile {
    /// Starts writing `events` to `file` (opened at `path`).
    pub(crate) fn start(
        events: broadcast::Receiver<PoolEvent>,
        file: std::fs::File,
        path: PathBuf,
    ) -> Self {
        Self {
            path,
            writer: tokio::task::spawn_blocking(move || write(events, file)),
        }
    }

    /// Waits for the writer to end (after the pool's `pool-shutdown`, or at
    /// its first failed write): why the file is incomplete, if it is.
    pub(crate) async fn finish(self) -> Option<String> {
        let why = match self.writer.await {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the writer failed: {e}"),
        };
        Some(format!(
            "cannot write the events to {} ({why}); the events after it were not written",
            self.path.display()
        ))
    }
}

/// Writes each event as a JSON line with a `ts_ms` field (Unix time in ms)
/// until `pool-shutdown` (or the pool is gone); stops at the first failed
/// write and returns its error.
fn write(mut events: broadcast::Receiver<PoolEvent>, file: std::fs::File) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(file);
    loop {
        let event = match events.blocking_recv() {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "event file writer fell behind; events lost");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Ok(serde_json::Value::Object(mut map)) = serde_json::to_value(&event) else {
            continue;
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        map.insert("ts_ms".into(), ts.into());
        serde_json::to_writer(&mut out, &map)?;
        out.write_all(b"\n")?;
        if events.is_empty() {
            out.flush()?;
        }
        if matches!(event, PoolEvent::PoolShutdown) {
            break;
        }
    }
    out.flush()
}
