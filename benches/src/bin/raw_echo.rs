//! The raw-pipe baseline's child (from `shared/perf/limits`): frames are a 4-byte
//! little-endian length and that many bytes, each written back unchanged. Replies
//! are flushed whenever the input buffer runs dry.
//!
//!   raw-echo            read fd 0, write fd 1
//!   raw-echo oneshot    echo one frame, then exit (spawn-per-task)

use std::fs::File;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::os::fd::AsFd;

fn echo_loop(r: impl Read, w: impl Write, once: bool) -> io::Result<()> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut hdr = [0u8; 4];
    let mut buf = Vec::new();
    loop {
        if r.buffer().is_empty() {
            w.flush()?;
        }
        match r.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let n = u32::from_le_bytes(hdr) as usize;
        buf.resize(n, 0);
        r.read_exact(&mut buf)?;
        w.write_all(&hdr)?;
        w.write_all(&buf)?;
        if once {
            break;
        }
    }
    w.flush()
}

fn main() -> io::Result<()> {
    let once = std::env::args().nth(1).is_some_and(|a| a == "oneshot");
    // Raw duplicates of fd 0/1: std's Stdout is line-buffered.
    let input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    echo_loop(input, output, once)
}
