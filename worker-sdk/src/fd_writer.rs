//! [`FdWriter`]: the link's output descriptor, written with direct system calls.
//!
//! `std::fs::File` writes through the C library's `write`, a thread cancellation
//! point that turns asynchronous cancellation on and off around every call (about
//! 30 of the ~50 instructions it spends per reply, in a process that never cancels
//! a thread); rustix makes the system call itself. Every reply is one write (it
//! must be in the pipe before the next task starts), so this is paid per task.

use std::io::{self, IoSlice, Write};
use std::os::fd::OwnedFd;

/// Blocking writes to a descriptor; `flush` has nothing to do.
#[derive(Debug)]
pub(crate) struct FdWriter(OwnedFd);

impl From<OwnedFd> for FdWriter {
    fn from(fd: OwnedFd) -> Self {
        Self(fd)
    }
}

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(&self.0, buf)?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::io::writev(&self.0, bufs)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn bytes_and_pieces_arrive_in_order() {
        let (reader, writer) = rustix::pipe::pipe().expect("pipe");
        let mut writer = FdWriter::from(writer);
        writer.write_all(b"head").expect("write");
        let written = writer
            .write_vectored(&[IoSlice::new(b"-one"), IoSlice::new(b"-two")])
            .expect("writev");
        assert_eq!(written, 8);
        writer.flush().expect("flush");
        drop(writer);
        let mut got = String::new();
        std::fs::File::from(reader)
            .read_to_string(&mut got)
            .expect("read");
        assert_eq!(got, "head-one-two");
    }

    #[test]
    fn a_closed_reader_is_a_broken_pipe_error() {
        let (reader, writer) = rustix::pipe::pipe().expect("pipe");
        drop(reader);
        let err = FdWriter::from(writer)
            .write_all(b"lost")
            .expect_err("no reader");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
