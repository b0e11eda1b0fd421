//! A tiny line protocol over a Unix socket pair, for the stage handshakes between rcl, the
//! holder and the container init. Every message is one line: a word and an optional argument.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// One end of a handshake channel.
#[derive(Debug)]
pub struct Chan {
    sock: UnixStream,
    buf: Vec<u8>,
    eof: bool,
    fds: VecDeque<OwnedFd>,
}

/// A message: a word and the rest of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The first word ("go", "pid", "exit", "err", ...).
    pub word: String,
    /// Everything after the first space.
    pub arg: String,
}

impl Msg {
    /// The argument parsed as an integer.
    pub fn num(&self) -> io::Result<i32> {
        self.arg.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad number in message {:?}", self),
            )
        })
    }
}

impl Chan {
    /// A connected pair of channels (close-on-exec).
    pub fn pair() -> io::Result<(Chan, Chan)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Chan::new(a), Chan::new(b)))
    }

    fn new(sock: UnixStream) -> Chan {
        Chan {
            sock,
            buf: Vec::new(),
            eof: false,
            fds: VecDeque::new(),
        }
    }

    /// Sends one message; newlines in `arg` are replaced by spaces.
    pub fn send(&mut self, word: &str, arg: &str) -> io::Result<()> {
        let line = format!("{word} {}\n", arg.replace('\n', " "));
        self.sock.write_all(line.as_bytes())
    }

    /// Sends one message carrying a file descriptor (SCM_RIGHTS).
    pub fn send_fd(&mut self, word: &str, arg: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let line = format!("{word} {}\n", arg.replace('\n', " "));
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(line.as_bytes())];
        let n = sendmsg::<()>(self.sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
        if n < line.len() {
            self.sock.write_all(&line.as_bytes()[n..])?;
        }
        Ok(())
    }

    /// Takes the oldest descriptor received with a message.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// Takes one complete buffered message, if any.
    fn take(&mut self) -> Option<Msg> {
        let nl = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=nl).collect();
        let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        let (word, arg) = line.split_once(' ').unwrap_or((&line, ""));
        Some(Msg {
            word: word.to_string(),
            arg: arg.to_string(),
        })
    }

    /// Reads once from the socket into the buffer (blocking unless data is known to be ready).
    fn fill(&mut self) -> io::Result<()> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut tmp = [0u8; 4096];
        loop {
            let mut cmsg = nix::cmsg_space!([RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut tmp)];
            let r = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match r {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let n = msg.bytes;
            for c in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for fd in fds {
                        // SAFETY: the kernel just installed this descriptor for us.
                        self.fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&tmp[..n]);
            }
            return Ok(());
        }
    }

    /// Blocks for the next message; `None` when the peer closed its end.
    pub fn recv(&mut self) -> io::Result<Option<Msg>> {
        loop {
            if let Some(m) = self.take() {
                return Ok(Some(m));
            }
            if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Like [`Chan::recv`] but gives up with `TimedOut` after `limit`.
    pub fn recv_timeout(&mut self, limit: Duration) -> io::Result<Option<Msg>> {
        self.sock.set_read_timeout(Some(limit))?;
        let r = self.recv();
        self.sock.set_read_timeout(None)?;
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )),
            r => r,
        }
    }

    /// After poll said the socket is readable: reads what is there and returns every complete
    /// message, plus whether the peer has closed.
    pub fn read_ready(&mut self) -> io::Result<(Vec<Msg>, bool)> {
        if !self.eof {
            self.fill()?;
        }
        let mut out = Vec::new();
        while let Some(m) = self.take() {
            out.push(m);
        }
        Ok((out, self.eof))
    }

    /// True once the peer has closed and every message was taken.
    pub fn is_closed(&self) -> bool {
        self.eof && self.buf.is_empty()
    }
}

impl AsFd for Chan {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
