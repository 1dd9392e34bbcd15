//! A worker's lane task: launch and handshake, then one loop that reads and
//! settles results, refills the worker from the queue and writes its frames,
//! and finally waiting for its keeper to reap the process ([`super::keeper`]).
//! It reports to the actor through [`WorkerEvent`]s.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};

use super::clock::Now;
use super::keeper::{Keeper, LinkEnd, EXIT_GRACE};
use super::lane::settle::{Settled, Settler};
use super::lane::Lane;
use super::outbox::Outbox;
use super::panic_message::panic_message;
use super::read_codec::{Inbound, ReadCodec};
use super::reply_timing::ReplyTiming;
use super::routing::TaskTypes;
use crate::process::{describe_exit, GroupSignal, WorkerProcess};
use crate::protocol::{
    decode_from_worker, encode_frame, FrameError, FromWorker, Heartbeat, LogLevel, PROTOCOL_VERSION,
};
use crate::transport::{Link, LinkWriter, Transport, WorkerSpec};

/// A worker that failed its handshake gets this long to exit with its own status.
const START_EXIT_GRACE: Duration = Duration::from_millis(500);
/// The reader's buffer: how many bytes of frames one read can bring.
const READ_BUFFER: usize = 64 * 1024;
/// The most bytes of an offending frame quoted (in hex) when a worker is killed
/// for breaking the protocol.
const QUOTED_BYTES: usize = 32;

/// What a worker declared in its `ready`.
#[derive(Debug)]
pub(crate) struct Declared {
    /// The task types it takes (all when it listed none).
    pub(crate) task_types: TaskTypes,
    /// When it writes replies: what its death tells about which task ran.
    pub(crate) replies: ReplyTiming,
}

/// What a worker's lane task tells the actor.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// Handshake done: frames for the worker go to its lane's batch, signals
    /// to `control`.
    Ready {
        num: u64,
        pid: u32,
        control: mpsc::UnboundedSender<GroupSignal>,
        /// What its `ready` declared.
        declared: Declared,
        /// Its lane, whose results its reader settles from now on.
        lane: Lane,
    },
    /// The worker never became ready; its process (if any) is reaped.
    StartFailed {
        num: u64,
        reason: String,
        exit: Option<String>,
        stderr_tail: String,
    },
    /// What one read of a ready worker's link brought: what its reader
    /// settled, when the actor needs to hear it (`settled`, see
    /// [`Settler::take_report`]), and every other message in the order the
    /// worker wrote them (one of the two is never empty). Also, with no
    /// messages, the report of a refill the lane's writer made once the link
    /// took what a filler stopped for ([`Settler::refill_caught_up`]).
    Messages {
        num: u64,
        messages: Vec<WorkerMessage>,
        settled: Option<Settled>,
    },
    /// A ready worker is gone and reaped.
    Gone {
        num: u64,
        pid: u32,
        /// Why its lane killed it, if it did.
        fault: Option<LinkFault>,
        exit: String,
        stderr_tail: String,
    },
}

/// Why a lane killed its worker at once.
#[derive(Debug)]
pub(crate) enum LinkFault {
    /// The worker broke the protocol.
    Protocol(FrameError),
    /// The lane itself panicked (a bug in the pool): what it said.
    LanePanicked(String),
}

/// A worker's message for the actor, owned (payloads share the frame's
/// buffer). A `result` is one only when its reader forwards results (see
/// [`Settler::forwards`]); otherwise the reader settles it.
#[derive(Debug)]
pub(crate) enum WorkerMessage {
    Result {
        id: u64,
        payload: Bytes,
    },
    Error {
        id: u64,
        kind: String,
        message: String,
        retryable: bool,
    },
    Heartbeat(Heartbeat),
    Log {
        level: LogLevel,
        message: String,
    },
}

/// What one worker task needs to run.
pub(crate) struct WorkerLaunch {
    pub(crate) num: u64,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) spec: WorkerSpec,
    pub(crate) heartbeat_ms: u64,
    /// The most tasks the worker should run at once (the `hello` key `concurrency`).
    pub(crate) concurrency: u32,
    pub(crate) start_timeout: Duration,
    pub(crate) events: mpsc::Sender<WorkerEvent>,
    /// Settles the results its reader reads, in the worker's lane.
    pub(crate) settler: Settler,
}

/// The manager's `hello`: [`ToWorker::Hello`](crate::protocol::ToWorker::Hello) plus the optional key
/// `concurrency` (see `docs/PROTOCOL.md`), which a worker that does not know it
/// ignores.
#[derive(serde::Serialize)]
struct Hello<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u32,
    worker_id: &'a str,
    heartbeat_ms: u64,
    max_frame: u32,
    concurrency: u32,
}

/// Launches the worker, runs the handshake, then reads its frames until it is
/// gone; returns once its process is reaped.
///
/// This one task is the worker's lane: it reads and settles, refills, and
/// writes what the refill and the actor queued, as the link takes it. The
/// actor counts the pool as stopped when every clone of its event sender is
/// gone: the one held here goes when this returns.
pub(crate) async fn run_worker(launch: WorkerLaunch) {
    let WorkerLaunch {
        num,
        transport,
        spec,
        heartbeat_ms,
        concurrency,
        start_timeout,
        events,
        mut settler,
    } = launch;
    let launched = tokio::time::timeout(start_timeout, transport.launch(&spec)).await;
    // Let go of the transport before anything else: once this task's event
    // sender is gone the pool may report that it let go of everything.
    drop(transport);
    let link = match launched {
        Ok(Ok(link)) => link,
        Ok(Err(e)) => return start_failed(&events, num, e.to_string(), None, String::new()).await,
        Err(_) => {
            let reason = format!("launch took longer than {} ms", start_timeout.as_millis());
            return start_failed(&events, num, reason, None, String::new()).await;
        }
    };
    let Link {
        reader,
        writer,
        mut process,
    } = link;
    let max_frame = spec.max_frame;
    let mut writer = Some(writer);
    let mut hello_out = Outbox::default();
    let mut hello = BytesMut::new();
    let hello_msg = Hello {
        kind: "hello",
        version: PROTOCOL_VERSION,
        worker_id: &spec.worker_id,
        heartbeat_ms,
        max_frame: u32::try_from(max_frame).unwrap_or(u32::MAX),
        concurrency,
    };
    if let Err(e) = encode_frame(&hello_msg, &mut hello, max_frame) {
        return fail_start(&events, num, process, e.to_string()).await;
    }
    hello_out.push(hello.freeze());
    let codec = ReadCodec::new(max_frame, READ_BUFFER);
    let mut frames = FramedRead::with_capacity(reader, codec, READ_BUFFER);

    let checked = tokio::select! {
        ready = AssertUnwindSafe(handshake(&mut hello_out, &mut writer, &mut frames, start_timeout))
            .catch_unwind() => ready.unwrap_or_else(|panic| Err(format!(
                "the pool's reader panicked during the handshake: {}",
                panic_message(&*panic)
            ))),
        _ = process.wait() => Err("worker exited before the handshake".to_owned()),
    };
    let declared = match checked {
        Ok(declared) => declared,
        Err(reason) => return fail_start(&events, num, process, reason).await,
    };
    settler.lane().heard(settler.clock().now().moment);
    settler.connect(declared.task_types.clone());
    if let Some(writer) = writer {
        settler.lane().output().connect(writer);
    }
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let ready = WorkerEvent::Ready {
        num,
        pid: process.pid(),
        control: control_tx,
        declared,
        lane: settler.lane().clone(),
    };
    if events.send(ready).await.is_err() {
        process.signal(GroupSignal::Kill);
        let _ = process.wait().await;
        return;
    }
    let pid = process.pid();
    let stderr_tail = process.stderr_tail();
    let keeper = Keeper::spawn(process, control_rx, settler.lane().bell());

    // Read until EOF. If the process exits first (its keeper says so), keep
    // reading what it wrote (its link closes once it is reaped) for at most
    // EXIT_GRACE. Meanwhile write what is queued for the worker whenever its
    // link takes it. The keeper obeys the actor's signals.
    // The process exited, or stopped reading its input: what it still writes
    // is read for at most EXIT_GRACE, then the lane ends.
    let mut draining = false;
    let lane = settler.lane().clone();
    let _input_gone = InputGoneOnExit(lane.clone());
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain);
    // A panic in this loop (a bug in reading or settling what the worker
    // wrote) ends the lane as a broken link does: the worker is killed and
    // reaped, and the actor hears it is gone and settles its tasks, instead
    // of a worker that stays "ready" for ever with its tasks held.
    let served = AssertUnwindSafe(async {
        loop {
            let has_bytes = lane.output().has_bytes();
            // Polled in order (no random start each time): none of the branches
            // can keep the others waiting. Frames queued by the actor and bytes to
            // write are bounded by the worker's window, and come before reads, so
            // a worker that answers without pause is still fed.
            tokio::select! {
                biased;
                () = &mut drain, if draining => break None,
                // Frames the actor or a caller left in the book's batch (after
                // the actor closed the input, EOF once all is written), or the
                // keeper saw the process exit.
                () = lane.batch_rung() => {
                    #[cfg(feature = "test-util")]
                    lane.panic_if_requested(super::lane::PanicPoint::Wake);
                    if !draining && keeper.has_exited() {
                        draining = true;
                        drain.as_mut().reset(tokio::time::Instant::now() + EXIT_GRACE);
                        // Nothing written from now on is read (a child of the
                        // worker may still hold its input, so a write would not
                        // fail): no task is handed to it any more, and those whose
                        // frames still wait are never written, so they lose no
                        // attempt when it is reaped.
                        lane.output().broke();
                        lane.book().input_gone();
                    }
                    lane.output().take_batch(&mut lane.book());
                }
                written = poll_fn(|cx| lane.output().poll_write(cx)), if has_bytes => {
                    if written.is_err() {
                        // The link broke: the actor sees the input gone and
                        // sends nothing more; the worker's tasks settle when it is
                        // reaped. A worker that reads no more can be sent no
                        // task, `cancel` or `shutdown`, also one whose process
                        // lives on: what it still writes is read as after an
                        // exit, then the lane ends and the keeper kills it if it
                        // lingers, and it is replaced.
                        lane.output().broke();
                        lane.book().input_gone();
                        if !draining {
                            draining = true;
                            drain.as_mut().reset(tokio::time::Instant::now() + EXIT_GRACE);
                        }
                    } else {
                        // A filler stopped for the link, which took it all
                        // now: the lane refills the worker, or, where the actor
                        // feeds it (its results go to the actor), the actor's
                        // dispatch pass does.
                        let report = {
                            let mut output = lane.output();
                            let caught_up = output.link_caught_up() && output.writes();
                            caught_up.then(|| settler.refill_caught_up(output.outbox())).flatten()
                        };
                        if let Some(settled) = report {
                            let messages = Vec::new();
                            let event = WorkerEvent::Messages { num, messages, settled: Some(settled) };
                            if events.send(event).await.is_err() {
                                break None;
                            }
                        }
                    }
                }
                frame = frames.next() => match frame {
                    None => break None,
                    // The codec consumed nothing of the frame it refused: its prefix
                    // leads the read buffer.
                    Some(Err(e)) => break Some((e, hex_head(frames.read_buffer()))),
                    Some(Ok(body)) => {
                        // One clock read a read: it is when each result it brought arrived.
                        let now = settler.clock().now();
                        settler.lane().heard(now.moment);
                        let (messages, failed) = read_batch(&mut frames, body, &mut settler, now);
                        // Every result of the read is settled: its callers are
                        // woken together.
                        settler.wake_callers();
                        {
                            let mut output = lane.output();
                            if failed.is_none() && output.writes() {
                                settler.refill(output.outbox());
                            } else {
                                // Nothing written to this worker any more: the actor decides.
                                settler.tell_actor();
                            }
                        }
                        let settled = settler.take_report();
                        if (!messages.is_empty() || settled.is_some())
                            && events
                                .send(WorkerEvent::Messages { num, messages, settled })
                                .await
                                .is_err()
                        {
                            break None;
                        }
                        if failed.is_some() {
                            break failed;
                        }
                    }
                },
            }
        }
    })
    .catch_unwind()
    .await;
    // Dropping the writer closes the worker's input.
    lane.output().broke();
    // Nothing more is written: what the actor or a caller hands this worker
    // from now on settles when it is reaped.
    lane.book().input_gone();
    let fault = match served {
        Ok(None) => None,
        Ok(Some((e, head))) => {
            tracing::warn!(
                worker.id = %spec.worker_id,
                pid,
                reason = %e,
                bytes = %head,
                "worker broke the protocol; killing it"
            );
            Some(LinkFault::Protocol(e))
        }
        Err(panic) => {
            let message = panic_message(&*panic);
            tracing::error!(
                worker.id = %spec.worker_id,
                pid,
                panic = %message,
                "the pool's lane for this worker panicked; killing the worker"
            );
            Some(LinkFault::LanePanicked(message))
        }
    };
    drop(frames);
    let how = match fault {
        Some(_) => LinkEnd::Broken,
        None => LinkEnd::Closed,
    };
    let exit = keeper.finish(how).await;
    let gone = WorkerEvent::Gone {
        num,
        pid,
        fault,
        exit,
        stderr_tail: stderr_tail.text(),
    };
    let _ = events.send(gone).await;
}

/// Marks the worker's input gone when its lane's task ends, however it ends (a
/// panic included), so nothing more is handed to a lane that writes no more.
struct InputGoneOnExit(Lane);

impl Drop for InputGoneOnExit {
    fn drop(&mut self) {
        self.0.book().input_gone();
    }
}

/// The handshake: writes the `hello` queued in `out` (it fits in any pipe: the
/// write does not wait for the worker), then reads the worker's `ready` and the
/// task types it lists, each within `timeout`.
async fn handshake<R: tokio::io::AsyncRead + Unpin>(
    out: &mut Outbox,
    writer: &mut Option<LinkWriter>,
    frames: &mut FramedRead<R, ReadCodec>,
    timeout: Duration,
) -> Result<Declared, String> {
    let Some(writer) = writer.as_mut() else {
        return Err("the worker's input is closed".to_owned());
    };
    match tokio::time::timeout(timeout, out.write_all(writer)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("writing hello: {e}")),
        Err(_) => {
            return Err(format!(
                "hello not written within {} ms",
                timeout.as_millis()
            ))
        }
    }
    match tokio::time::timeout(timeout, frames.next()).await {
        Err(_) => Err(format!("no handshake within {} ms", timeout.as_millis())),
        Ok(None) => Err("worker closed its link before the handshake".to_owned()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(Some(Ok(Inbound::Frame(body)))) => check_ready(&body),
        Ok(Some(Ok(Inbound::Result { .. }))) => Err(FrameError::Unexpected {
            expected: "ready",
            got: "result".to_owned(),
        }
        .to_string()),
    }
}

/// Decodes `first` and every further frame already in `frames`' read buffer,
/// read at `now`: each `result` is settled by `settler` at once (its run time
/// ends at the read), the other messages are
/// gathered so one event carries what one read brought. Stops at the first
/// frame that breaks the protocol: the messages before it and the error with
/// the bytes to quote.
fn read_batch<R>(
    frames: &mut FramedRead<R, ReadCodec>,
    first: Inbound,
    settler: &mut Settler,
    now: Now,
) -> (Vec<WorkerMessage>, Option<(FrameError, String)>) {
    // Settled results take no room: a read of results alone allocates nothing
    // here.
    let mut messages = Vec::new();
    let mut next = Some(first);
    while let Some(inbound) = next.take() {
        let decoded = match inbound {
            Inbound::Result { id, payload } => Decoded::Result { id, payload },
            Inbound::Frame(body) => match to_message(&body) {
                Ok(decoded) => decoded,
                Err(e) => return (messages, Some((e, hex_head(&body)))),
            },
        };
        match decoded {
            Decoded::Result { id, payload } if settler.forwards() => {
                messages.push(WorkerMessage::Result { id, payload });
            }
            Decoded::Result { id, payload } => settler.result(id, payload, now),
            Decoded::Message(message) => messages.push(message),
        }
        // The codec consumes nothing of a frame it refuses: its prefix leads the
        // read buffer, where the stream's own error would have found it.
        // The codec and the buffer, both borrowed from the stream: the buffer
        // is taken out for the call (an empty `BytesMut` costs nothing).
        let mut buffer = std::mem::take(frames.read_buffer_mut());
        let decoded = frames.decoder_mut().decode(&mut buffer);
        *frames.read_buffer_mut() = buffer;
        match decoded {
            Ok(body) => next = body,
            Err(e) => return (messages, Some((e, hex_head(frames.read_buffer())))),
        }
    }
    (messages, None)
}

/// The first [`QUOTED_BYTES`] of `bytes` in hex, space-separated, with the total
/// when they were cut (`"00 00 00 03 c1 c1 c1"`, `"… (4096 bytes)"`).
pub(crate) fn hex_head(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(QUOTED_BYTES * 3 + 16);
    for (i, b) in bytes.iter().take(QUOTED_BYTES).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{b:02x}");
    }
    if bytes.len() > QUOTED_BYTES {
        let _ = write!(out, " … ({} bytes)", bytes.len());
    }
    out
}

fn check_ready(body: &Bytes) -> Result<Declared, String> {
    match decode_from_worker(body) {
        Ok(FromWorker::Ready {
            version,
            task_types,
            batches_replies,
            ..
        }) if version == PROTOCOL_VERSION => Ok(Declared {
            task_types: TaskTypes::from_ready(&task_types),
            replies: ReplyTiming::declared(batches_replies),
        }),
        Ok(FromWorker::Ready { version, .. }) => Err(FrameError::VersionMismatch {
            worker: version,
            manager: PROTOCOL_VERSION,
        }
        .to_string()),
        Ok(other) => Err(FrameError::Unexpected {
            expected: "ready",
            got: other.name().to_owned(),
        }
        .to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A decoded frame of a ready worker.
enum Decoded {
    /// A task's result (its payload shares the frame's buffer).
    Result {
        id: u64,
        payload: Bytes,
    },
    Message(WorkerMessage),
}

fn to_message(body: &Bytes) -> Result<Decoded, FrameError> {
    Ok(Decoded::Message(match decode_from_worker(body)? {
        FromWorker::Result { id, payload } => {
            return Ok(Decoded::Result {
                id,
                payload: body.slice_ref(payload),
            })
        }
        FromWorker::Error(e) => WorkerMessage::Error {
            id: e.id,
            kind: e.kind.to_owned(),
            message: e.message.to_owned(),
            retryable: e.retryable,
        },
        FromWorker::Heartbeat(h) => WorkerMessage::Heartbeat(h),
        FromWorker::Log { level, message } => WorkerMessage::Log {
            level,
            message: message.to_owned(),
        },
        other => {
            return Err(FrameError::Unexpected {
                expected: "result, error, heartbeat or log",
                got: other.name().to_owned(),
            })
        }
    }))
}

async fn fail_start(
    events: &mpsc::Sender<WorkerEvent>,
    num: u64,
    mut process: WorkerProcess,
    reason: String,
) {
    if tokio::time::timeout(START_EXIT_GRACE, process.wait())
        .await
        .is_err()
    {
        process.signal(GroupSignal::Kill);
    }
    let exit = match process.wait().await {
        Ok(status) => Some(describe_exit(&status)),
        Err(_) => None,
    };
    let tail = process.stderr_tail().text();
    start_failed(events, num, reason, exit, tail).await;
}

async fn start_failed(
    events: &mpsc::Sender<WorkerEvent>,
    num: u64,
    reason: String,
    exit: Option<String>,
    stderr_tail: String,
) {
    let _ = events
        .send(WorkerEvent::StartFailed {
            num,
            reason,
            exit,
            stderr_tail,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handshake's verdict on a worker whose first frame has `body`.
    async fn handshake_with_first_frame(body: &[u8]) -> Result<Declared, String> {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        let mut frames = FramedRead::new(&bytes[..], ReadCodec::new(1 << 20, 1024));
        let mut writer: Option<LinkWriter> = Some(Box::pin(tokio::io::sink()));
        handshake(
            &mut Outbox::default(),
            &mut writer,
            &mut frames,
            Duration::from_secs(1),
        )
        .await
    }

    #[tokio::test]
    async fn a_result_before_ready_fails_the_handshake_and_says_so() {
        let mut result = Vec::new();
        rmp::encode::write_map_len(&mut result, 3).expect("map");
        rmp::encode::write_str(&mut result, "type").expect("key");
        rmp::encode::write_str(&mut result, "result").expect("tag");
        rmp::encode::write_str(&mut result, "id").expect("key");
        rmp::encode::write_uint(&mut result, 1).expect("id");
        rmp::encode::write_str(&mut result, "payload").expect("key");
        rmp::encode::write_bin(&mut result, b"x").expect("payload");
        let Err(refused) = handshake_with_first_frame(&result).await else {
            panic!("a result was taken for a ready");
        };
        assert_eq!(refused, "unexpected message: expected ready, got result");
    }

    #[test]
    fn hex_head_quotes_short_frames_whole() {
        assert_eq!(hex_head(b""), "");
        assert_eq!(
            hex_head(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]),
            "00 00 00 03 c1 c1 c1"
        );
    }

    #[test]
    fn hex_head_cuts_long_frames_at_32_bytes_and_gives_the_length() {
        let bytes: Vec<u8> = (0..=255).collect();
        let head = hex_head(&bytes);
        let expected: Vec<String> = (0..32).map(|b| format!("{b:02x}")).collect();
        assert_eq!(head, format!("{} … (256 bytes)", expected.join(" ")));
        let exactly: Vec<u8> = vec![0xab; 32];
        assert!(!hex_head(&exactly).contains('…'));
    }
}
