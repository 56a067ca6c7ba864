//! The three pipes of one run: the request written to stdin without blocking,
//! stdout captured up to its cap (and decoded once, as soon as it closes), and
//! stderr kept up to its cap while the rest is drained so a chatty plugin never
//! blocks.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use crate::plugin::protocol::{self, ProtocolError, Response, ResponseLimits};
use crate::sys::{self, Interest, PollSet};

/// Size of one read from a pipe.
pub(super) const CHUNK: usize = 64 * 1024;

/// Wraps our end of a pipe as a non-blocking `File`.
pub(super) fn nonblocking(fd: OwnedFd) -> File {
    sys::set_nonblocking(fd.as_fd());
    File::from(fd)
}

/// The pipes of one run.
pub(super) struct Io<'r> {
    pub(super) stdin: Option<File>,
    pub(super) request: &'r [u8],
    pub(super) written: usize,
    pub(super) stdout: Capture,
    pub(super) stderr: Capture,
    pub(super) scratch: Vec<u8>,
    /// stdout decoded once it reached EOF within its cap.
    pub(super) answer: Option<Result<Response, ProtocolError>>,
    pub(super) response: ResponseLimits,
}

impl Io<'_> {
    pub(super) fn any_open(&self) -> bool {
        self.stdin.is_some() || self.stdout.file.is_some() || self.stderr.file.is_some()
    }

    /// Whether stdout has closed holding a complete, valid response.
    pub(super) fn answered(&mut self) -> bool {
        if self.stdout.file.is_some() || self.stdout.overflowed {
            return false;
        }
        let (buf, limits) = (&self.stdout.buf, &self.response);
        self.answer
            .get_or_insert_with(|| protocol::decode(buf, limits))
            .is_ok()
    }

    /// The decoded response, when stdout closed within its cap.
    pub(super) fn take_answer(&mut self) -> Option<Result<Response, ProtocolError>> {
        self.answered();
        self.answer.take()
    }

    /// Writes as much of the request as the pipe takes; closes stdin when done or
    /// when the plugin stopped reading (EPIPE is expected, not an error).
    pub(super) fn write_stdin(&mut self) {
        let Some(file) = self.stdin.as_mut() else {
            return;
        };
        while self.written < self.request.len() {
            match file.write(&self.request[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.stdin = None;
    }

    /// Reads whatever the pipes still hold until both reach EOF or `until` passes.
    pub(super) fn drain(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let mut fds = PollSet::default();
            let out_at = self
                .stdout
                .file
                .as_ref()
                .map(|f| fds.push(f.as_fd(), Interest::Read));
            let err_at = self
                .stderr
                .file
                .as_ref()
                .map(|f| fds.push(f.as_fd(), Interest::Read));
            if out_at.is_none() && err_at.is_none() {
                break;
            }
            fds.wait(Some(until - now));
            if out_at.is_some_and(|i| fds.ready(i)) {
                self.stdout.read_available(&mut self.scratch);
            }
            if err_at.is_some_and(|i| fds.ready(i)) {
                self.stderr.read_available(&mut self.scratch);
            }
        }
        self.stdout.file = None;
        self.stderr.file = None;
    }
}

/// A capped capture of one output pipe.
pub(super) struct Capture {
    pub(super) file: Option<File>,
    pub(super) buf: Vec<u8>,
    cap: usize,
    pub(super) overflowed: bool,
    /// stdout stops reading at the cap (the run has failed anyway); stderr keeps
    /// draining so a chatty plugin never blocks on a full pipe.
    stop_at_cap: bool,
}

impl Capture {
    pub(super) fn stopping(file: Option<File>, cap: usize) -> Capture {
        Capture {
            file,
            buf: Vec::new(),
            cap,
            overflowed: false,
            stop_at_cap: true,
        }
    }

    pub(super) fn draining(file: Option<File>, cap: usize) -> Capture {
        Capture {
            stop_at_cap: false,
            ..Capture::stopping(file, cap)
        }
    }

    /// Reads until the pipe would block, reaches EOF, or (for a stopping capture) overflows.
    pub(super) fn read_available(&mut self, scratch: &mut [u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        // Bounded so one flooding pipe cannot starve the deadline checks.
        for _ in 0..64 {
            match file.read(scratch) {
                Ok(0) => {
                    self.file = None;
                    return;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&scratch[..n.min(room)]);
                    if n > room {
                        self.overflowed = true;
                        if self.stop_at_cap {
                            self.file = None;
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.file = None;
                    return;
                }
            }
        }
    }
}
