//! Fixture worker for the transport conformance suite.
//!
//! Speaks the protocol directly with `pool_core::protocol` and blocking std I/O,
//! over either transport (`CORTEX_TRANSPORT`): `stdio` uses fds 0/1, `fifo` opens
//! the to-worker FIFO for reading first, then the from-worker FIFO for writing.
//! It answers `hello` with `ready` and runs each task by its type:
//! - `echo`: replies with the payload as the result;
//! - `garbage`: writes a frame whose body is random bytes that are not MessagePack;
//! - `oversized`: writes a length prefix of one more than the maximum;
//! - `die_mid_frame`: writes half of a result frame, then exits with code 0;
//! - `slow`: stops reading for the milliseconds in the payload (`u64` big-endian),
//!   then echoes;
//! - `exit`: exits with the code in the payload's first byte (3 when empty);
//! - `array_result`: writes a `result` whose body is an array, not a map;
//! - `wrong_types`: writes a `result` whose `id` is a string;
//! - `duplicate`: writes its result twice;
//! - `unknown`: writes a result for a task id it was never given, then its own;
//! - `stolen`: writes a result for the task id one below its own (another task's,
//!   possibly on another worker), then its own;
//! - `stderr_lines`: writes 10 000 stderr lines, then echoes;
//! - `stderr_no_newline`: writes 8 MiB to stderr without a newline, then echoes;
//! - `stderr_bad_utf8`: writes bytes that are not UTF-8 to stderr, then echoes.
//!
//! With `CONFORMANCE_EXIT_AT_START=<code>` it exits at once, opening nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use bytes::BytesMut;
use pool_core::protocol::{
    decode_to_worker, encode_frame, ErrorReply, FromWorker, TaskFrame, ToWorker, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};
use pool_core::transport::env;

/// The task types this worker knows.
const TASK_TYPES: [&str; 14] = [
    "echo",
    "garbage",
    "oversized",
    "die_mid_frame",
    "slow",
    "exit",
    "array_result",
    "wrong_types",
    "duplicate",
    "unknown",
    "stolen",
    "stderr_lines",
    "stderr_no_newline",
    "stderr_bad_utf8",
];

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conformance-worker: {e}");
            70
        }
    };
    std::process::exit(code);
}

fn run() -> io::Result<i32> {
    if let Some(code) = std::env::var("CONFORMANCE_EXIT_AT_START")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        return Ok(code);
    }
    let max = std::env::var(env::MAX_FRAME)
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(DEFAULT_MAX_FRAME);
    let (reader, writer) = open_link()?;
    Worker {
        reader: BufReader::with_capacity(64 * 1024, reader),
        writer,
        max,
    }
    .serve()
}

/// The link's two ends, opened as the transport in `CORTEX_TRANSPORT` requires.
fn open_link() -> io::Result<(File, File)> {
    match std::env::var(env::TRANSPORT).as_deref() {
        Ok("fifo") => {
            let to_worker = required(env::FIFO_TO_WORKER)?;
            let from_worker = required(env::FIFO_FROM_WORKER)?;
            // The contract's order: our read end first, then our write end.
            let reader = File::open(to_worker)?;
            let writer = OpenOptions::new().write(true).open(from_worker)?;
            Ok((reader, writer))
        }
        Ok("stdio") => {
            let reader = io::stdin().as_fd().try_clone_to_owned()?;
            let writer = io::stdout().as_fd().try_clone_to_owned()?;
            Ok((File::from(reader), File::from(writer)))
        }
        other => Err(io::Error::other(format!("unknown transport {other:?}"))),
    }
}

fn required(var: &str) -> io::Result<String> {
    std::env::var(var).map_err(|_| io::Error::other(format!("{var} is not set")))
}

/// A `result` whose `id` has the wrong type.
#[derive(serde::Serialize)]
struct WrongResult<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: String,
    payload: &'a serde_bytes::Bytes,
}

struct Worker {
    reader: BufReader<File>,
    writer: File,
    max: usize,
}

impl Worker {
    /// Serves frames until EOF, `shutdown` or a behaviour that exits; returns the
    /// exit code.
    fn serve(mut self) -> io::Result<i32> {
        loop {
            let mut prefix = [0u8; 4];
            match self.reader.read_exact(&mut prefix) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let len = u32::from_be_bytes(prefix) as usize;
            if len > self.max {
                return Err(io::Error::other(format!(
                    "frame of {len} bytes from the manager"
                )));
            }
            let mut body = vec![0u8; len];
            self.reader.read_exact(&mut body)?;
            match decode_to_worker(&body).map_err(io::Error::other)? {
                ToWorker::Hello { .. } => self.send(&FromWorker::Ready {
                    version: PROTOCOL_VERSION,
                    pid: std::process::id(),
                    task_types: TASK_TYPES.to_vec(),
                    batches_replies: false,
                })?,
                ToWorker::Task(task) => {
                    if let Some(code) = self.task(&task)? {
                        return Ok(code);
                    }
                }
                ToWorker::Shutdown { .. } => return Ok(0),
                _ => {}
            }
        }
    }

    /// Runs one task; `Some(code)` when the worker must exit.
    fn task(&mut self, task: &TaskFrame<'_>) -> io::Result<Option<i32>> {
        let id = task.id;
        match task.task_type {
            "echo" => self.result(id, task.payload)?,
            "garbage" => {
                let mut rng = fastrand::Rng::with_seed(id);
                // 0xc1 is never used in MessagePack, so this body cannot decode.
                let mut body = vec![0xc1u8];
                body.extend((0..63).map(|_| rng.u8(..)));
                self.write(&(body.len() as u32).to_be_bytes())?;
                self.write(&body)?;
            }
            "oversized" => {
                let len = u32::try_from(self.max + 1).unwrap_or(u32::MAX);
                self.write(&len.to_be_bytes())?;
                self.write(&[0u8; 16])?;
            }
            "die_mid_frame" => {
                let mut frame = BytesMut::new();
                let payload = [7u8; 100];
                encode_frame(
                    &FromWorker::Result {
                        id,
                        payload: &payload,
                    },
                    &mut frame,
                    self.max,
                )
                .map_err(io::Error::other)?;
                self.write(&frame[..frame.len() / 2])?;
                return Ok(Some(0));
            }
            "slow" => {
                let ms = task
                    .payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(500, u64::from_be_bytes);
                std::thread::sleep(Duration::from_millis(ms));
                self.result(id, task.payload)?;
            }
            "exit" => return Ok(Some(task.payload.first().map_or(3, |&c| i32::from(c)))),
            "array_result" => {
                let body =
                    rmp_serde::to_vec(&("result", id, serde_bytes::Bytes::new(task.payload)))
                        .map_err(io::Error::other)?;
                self.raw_frame(&body)?;
            }
            "wrong_types" => {
                let body = rmp_serde::to_vec_named(&WrongResult {
                    kind: "result",
                    id: id.to_string(),
                    payload: serde_bytes::Bytes::new(task.payload),
                })
                .map_err(io::Error::other)?;
                self.raw_frame(&body)?;
            }
            "duplicate" => {
                self.result(id, task.payload)?;
                self.result(id, task.payload)?;
            }
            "unknown" => {
                self.result(id.wrapping_add(1_000_000), task.payload)?;
                self.result(id, task.payload)?;
            }
            "stolen" => {
                self.result(id.saturating_sub(1), b"stolen")?;
                self.result(id, task.payload)?;
            }
            "stderr_lines" => {
                let mut err = io::stderr().lock();
                for line in 0..10_000 {
                    writeln!(err, "conformance-worker stderr line {line}")?;
                }
                self.result(id, task.payload)?;
            }
            "stderr_no_newline" => {
                let chunk = [b'z'; 64 * 1024];
                let mut err = io::stderr().lock();
                for _ in 0..128 {
                    err.write_all(&chunk)?;
                }
                self.result(id, task.payload)?;
            }
            "stderr_bad_utf8" => {
                io::stderr().lock().write_all(b"bad \xff\xfe bytes\n")?;
                self.result(id, task.payload)?;
            }
            other => self.send(&FromWorker::Error(ErrorReply {
                id,
                kind: "unknown_type",
                message: other,
                retryable: false,
            }))?,
        }
        Ok(None)
    }

    /// Writes `body` as one frame, whatever it holds.
    fn raw_frame(&mut self, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).map_err(io::Error::other)?;
        self.write(&len.to_be_bytes())?;
        self.write(body)
    }

    fn result(&mut self, id: u64, payload: &[u8]) -> io::Result<()> {
        self.send(&FromWorker::Result { id, payload })
    }

    fn send(&mut self, message: &FromWorker<'_>) -> io::Result<()> {
        let mut frame = BytesMut::new();
        encode_frame(message, &mut frame, self.max).map_err(io::Error::other)?;
        self.write(&frame)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }
}
