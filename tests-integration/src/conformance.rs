//! The transport conformance checks, generic over [`Transport`].
//!
//! Each check launches the fixture worker through the transport under test and
//! proves one property of the byte link. Run them with
//! [`conformance_suite!`](crate::conformance_suite), which wraps each in [`watchdog`].

use std::error::Error;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use pool_core::protocol::{decode_from_worker, encode_frame, FrameError};
use pool_core::transport::{LaunchError, Transport};
use tokio::io::AsyncWriteExt;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::conn::{task, Conn, Subject};
use crate::fds;

/// What every check returns.
pub type TestResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;

/// The frame limit the suite gives its workers: 4 MiB.
pub const SUITE_MAX_FRAME: usize = 4 * 1024 * 1024;
/// How long any one check may take before it fails instead of hanging.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Serializes the leak check against the others (see [`conformance_suite!`](crate::conformance_suite)).
static SUITE: RwLock<()> = RwLock::const_new(());

/// Taken by ordinary checks, which may run together.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    SUITE.read().await
}

/// Taken by the leak check, which must run alone.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SUITE.write().await
}

/// Runs `check`, failing it if it takes longer than [`WATCHDOG`].
///
/// # Errors
/// The check's own error, or a timeout naming the check.
pub async fn watchdog(name: &str, check: impl Future<Output = TestResult>) -> TestResult {
    match tokio::time::timeout(WATCHDOG, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("watchdog: check {name} still running after {WATCHDOG:?}").into()),
    }
}

/// The handshake completes, and the worker is the process the link says it is.
///
/// # Errors
/// When the property does not hold.
pub async fn handshake<T: Transport>(s: &Subject<T>) -> TestResult {
    let mut conn = s.launch("worker-0").await?;
    let pid = conn.handshake("worker-0").await?;
    if pid != conn.process.pid() {
        return Err(format!("worker says pid {pid}, process is {}", conn.process.pid()).into());
    }
    conn.shutdown().await
}

/// Payloads of 0 B, 64 B, 1 MiB and the largest that fits the frame limit come back
/// byte for byte; one byte more is refused by the encoder with `TooLarge`.
///
/// # Errors
/// When the property does not hold.
pub async fn round_trips<T: Transport>(s: &Subject<T>) -> TestResult {
    let largest = largest_task_payload(SUITE_MAX_FRAME)?;
    let mut conn = s.launch("worker-0").await?;
    conn.handshake("worker-0").await?;
    for (id, len) in [0, 64, 1024 * 1024, largest].into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let id = id as u64;
        conn.task(id, "echo", &payload).await?;
        let echoed = conn.result(id).await?;
        if echoed != payload {
            return Err(format!("payload of {len} bytes came back altered").into());
        }
    }
    let over = vec![0u8; largest + 1];
    let mut frame = BytesMut::new();
    match encode_frame(&task(99, "echo", &over), &mut frame, SUITE_MAX_FRAME) {
        Err(FrameError::TooLarge { len, max })
            if len == SUITE_MAX_FRAME + 1 && max == SUITE_MAX_FRAME => {}
        other => {
            return Err(format!("one byte over the limit: expected TooLarge, got {other:?}").into())
        }
    }
    conn.shutdown().await
}

/// A length prefix over the limit from the worker is `FrameError::TooLarge` from
/// `FrameCodec`, without waiting for (or allocating) the body.
///
/// # Errors
/// When the property does not hold.
pub async fn oversized_frames_are_rejected<T: Transport>(s: &Subject<T>) -> TestResult {
    let mut conn = s.launch("worker-0").await?;
    conn.handshake("worker-0").await?;
    conn.task(1, "oversized", b"").await?;
    match conn.recv().await {
        Err(FrameError::TooLarge { len, max })
            if len == SUITE_MAX_FRAME + 1 && max == SUITE_MAX_FRAME =>
        {
            Ok(())
        }
        other => Err(format!("expected TooLarge, got {other:?}").into()),
    }
}

/// Bytes that are not the protocol give `Malformed` (or `TooLarge`), not a hang.
///
/// # Errors
/// When the property does not hold.
pub async fn garbage_is_malformed<T: Transport>(s: &Subject<T>) -> TestResult {
    let mut conn = s.launch("worker-0").await?;
    conn.handshake("worker-0").await?;
    conn.task(1, "garbage", b"").await?;
    let outcome = match conn.recv().await {
        Ok(Some(body)) => decode_from_worker(&body).map(|_| ()),
        Ok(None) => return Err("EOF instead of garbage".into()),
        Err(e) => Err(e),
    };
    match outcome {
        Err(FrameError::Malformed(_) | FrameError::TooLarge { .. }) => {}
        other => return Err(format!("expected Malformed or TooLarge, got {other:?}").into()),
    }
    conn.shutdown().await
}

/// A worker that dies in the middle of a frame gives `Truncated` (or EOF), then
/// the link stays at EOF.
///
/// # Errors
/// When the property does not hold.
pub async fn death_mid_frame_is_truncated<T: Transport>(s: &Subject<T>) -> TestResult {
    let mut conn = s.launch("worker-0").await?;
    conn.handshake("worker-0").await?;
    conn.task(1, "die_mid_frame", b"").await?;
    match conn.recv().await {
        Err(FrameError::Truncated { expected, got }) if got < expected => {}
        Ok(None) => {}
        other => return Err(format!("expected Truncated or EOF, got {other:?}").into()),
    }
    if let Ok(Some(_)) | Err(_) = conn.recv().await {
        return Err("a frame or error after the truncated one".into());
    }
    conn.process.wait().await?;
    Ok(())
}

/// A worker that exits: EOF on the reader, its exit code from the process, and
/// writes to it fail instead of blocking.
///
/// # Errors
/// When the property does not hold.
pub async fn exit_surfaces_as_eof<T: Transport>(s: &Subject<T>) -> TestResult {
    let mut conn = s.launch("worker-0").await?;
    conn.handshake("worker-0").await?;
    conn.task(1, "exit", &[7]).await?;
    if let Some(frame) = conn.recv().await? {
        return Err(format!("expected EOF, got a frame of {} bytes", frame.len()).into());
    }
    let status = conn.process.wait().await?;
    if status.code() != Some(7) {
        return Err(format!("expected exit code 7, got {status}").into());
    }
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..64 {
        if conn.writer.write_all(&chunk).await.is_err() {
            return Ok(());
        }
    }
    Err("4 MiB written to a worker that is gone".into())
}

/// A worker that exits before opening anything gives a launch error or an EOF,
/// never a hang.
///
/// # Errors
/// When the property does not hold.
pub async fn exit_at_start_never_hangs<T: Transport>(s: &Subject<T>) -> TestResult {
    let mut spec = s.spec("worker-0");
    spec.env
        .push(("CONFORMANCE_EXIT_AT_START".into(), "5".into()));
    match s.transport().launch(&spec).await {
        Err(LaunchError::Setup(_)) => Ok(()),
        Err(e) => Err(format!("expected a setup error, got {e}").into()),
        Ok(link) => {
            let mut conn = Conn::new(link);
            if let Some(frame) = conn.recv().await? {
                return Err(format!("expected EOF, got {} bytes", frame.len()).into());
            }
            let status = conn.process.wait().await?;
            match status.code() {
                Some(5) => Ok(()),
                _ => Err(format!("expected exit code 5, got {status}").into()),
            }
        }
    }
}

/// A program that does not exist is `LaunchError::Spawn`.
///
/// # Errors
/// When the property does not hold.
pub async fn missing_program_is_a_spawn_error<T: Transport>(s: &Subject<T>) -> TestResult {
    let spec = pool_core::WorkerSpec::new("worker-0", "/nonexistent/cortex-conformance-worker");
    match s.transport().launch(&spec).await {
        Err(LaunchError::Spawn { .. }) => Ok(()),
        Err(e) => Err(format!("expected a spawn error, got {e}").into()),
        Ok(_) => Err("a missing program launched".into()),
    }
}

/// A worker that stops reading makes writes wait (backpressure): with 16 MiB to
/// send, writing stalls after a bounded amount (the pipe's buffer, not the whole
/// stream), and everything arrives once the worker reads again.
///
/// # Errors
/// When the property does not hold.
pub async fn slow_reader_backpressure<T: Transport>(s: &Subject<T>) -> TestResult {
    const FRAMES: u64 = 256;
    const PAYLOAD: usize = 64 * 1024;
    const TOTAL: usize = FRAMES as usize * PAYLOAD;
    const BOUND: usize = 4 * 1024 * 1024;
    let mut conn = s.launch("worker-0").await?;
    conn.handshake("worker-0").await?;
    conn.task(0, "slow", &1500u64.to_be_bytes()).await?;

    let written = AtomicUsize::new(0);
    let Conn {
        frames,
        writer,
        process,
    } = conn;
    let mut reader = Conn {
        frames,
        writer: Box::pin(tokio::io::sink()),
        process,
    };
    let mut writer = writer;
    let payload = vec![0x5au8; PAYLOAD];
    let write = async {
        for id in 1..=FRAMES {
            let mut frame = BytesMut::new();
            encode_frame(&task(id, "echo", &payload), &mut frame, SUITE_MAX_FRAME)?;
            writer.write_all(&frame).await?;
            written.fetch_add(PAYLOAD, Ordering::Relaxed);
        }
        writer.flush().await?;
        TestResult::Ok(())
    };
    let watch = async {
        // Wait until writing has stalled: no progress over two samples.
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = written.load(Ordering::Relaxed);
            if now == last {
                return Ok::<usize, Box<dyn Error + Send + Sync>>(now);
            }
            last = now;
        }
    };
    let read = async {
        reader.result(0).await?;
        for id in 1..=FRAMES {
            if reader.result(id).await?.len() != PAYLOAD {
                return Err(format!("echo {id} came back altered").into());
            }
        }
        TestResult::Ok(())
    };
    let (wrote, stalled_at, got) = tokio::join!(write, watch, read);
    wrote?;
    got?;
    let stalled_at = stalled_at?;
    if stalled_at >= TOTAL || stalled_at > BOUND {
        return Err(format!(
            "writes did not wait for the slow worker: {stalled_at} of {TOTAL} bytes accepted"
        )
        .into());
    }
    Conn { writer, ..reader }.shutdown().await
}

/// Sixteen workers at once, each with its own link: handshakes, echoes, clean exits.
///
/// # Errors
/// When the property does not hold.
pub async fn many_workers<T: Transport>(s: &Subject<T>) -> TestResult {
    let one = |n: u64| async move {
        let id = format!("worker-{n}");
        let mut conn = s.launch(&id).await?;
        conn.handshake(&id).await?;
        for k in 0..3u64 {
            let payload = format!("{id}/{k}");
            conn.task(k, "echo", payload.as_bytes()).await?;
            if conn.result(k).await? != payload.as_bytes() {
                return Err(format!("{id} echoed someone else's payload").into());
            }
        }
        let pid = conn.process.pid();
        conn.shutdown().await?;
        TestResult::Ok(pid)
    };
    let mut pids = futures_util::future::try_join_all((0..16).map(one)).await?;
    pids.sort_unstable();
    pids.dedup();
    if pids.len() != 16 {
        return Err("two links reached the same worker".into());
    }
    Ok(())
}

/// Workers that exit, are shut down or are dropped (killed) leave no descriptor
/// behind, nor any entry in the subject's leftovers directory.
///
/// # Errors
/// When the property does not hold.
pub async fn no_leaks<T: Transport>(s: &Subject<T>) -> TestResult {
    // Warm up once, so the runtime's lazily created descriptors exist already.
    let mut conn = s.launch("worker-warm").await?;
    conn.handshake("worker-warm").await?;
    conn.shutdown().await?;
    let fds_before = settled(fds::open_pipes_and_files).await?;
    let entries_before = leftovers(s)?;

    for n in 0..4 {
        let id = format!("worker-{n}");
        let mut conn = s.launch(&id).await?;
        conn.handshake(&id).await?;
        match n {
            0 => conn.shutdown().await?,
            1 => {
                conn.task(1, "exit", &[0]).await?;
                conn.process.wait().await?;
            }
            2 => {
                conn.task(1, "die_mid_frame", b"").await?;
                let _ = conn.recv().await;
                conn.process.wait().await?;
            }
            _ => drop(conn), // killed by the process guard
        }
    }
    let _ = missing_program_is_a_spawn_error(s).await;
    let _ = exit_at_start_never_hangs(s).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fds_now = fds::open_pipes_and_files()?;
        let entries_now = leftovers(s)?;
        if fds_now == fds_before && entries_now == entries_before {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "leaked: {fds_before} → {fds_now} descriptors, \
                 {entries_before:?} → {entries_now:?} directory entries"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The number of entries in the subject's leftovers directory, if it has one.
fn leftovers<T: Transport>(s: &Subject<T>) -> TestResult<Option<usize>> {
    Ok(s.leftovers().map(fds::entries).transpose()?)
}

/// `count()` once it gives the same value twice in a row, 50 ms apart.
async fn settled(count: fn() -> std::io::Result<usize>) -> TestResult<usize> {
    let mut last = count()?;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Err("the descriptor count never settled".into())
}

/// The largest payload whose `echo` task frame body is exactly `max` bytes.
fn largest_task_payload(max: usize) -> TestResult<usize> {
    let body_len = |len: usize| -> TestResult<usize> {
        let mut frame = BytesMut::new();
        encode_frame(&task(3, "echo", &vec![0u8; len]), &mut frame, usize::MAX)?;
        Ok(frame.len() - 4)
    };
    let overhead = body_len(max / 2)? - max / 2;
    let len = max - overhead;
    if body_len(len)? != max {
        return Err("cannot fit a payload to the frame limit exactly".into());
    }
    Ok(len)
}
