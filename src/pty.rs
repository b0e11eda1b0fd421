//! Pseudo-terminal helpers shared by `rcl run` (a container's terminal) and `rcl exec -t`:
//! opening a pty pair, making it a controlling terminal, window sizes, raw mode for our own
//! terminal, and copying between descriptors.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A new pseudo-terminal from the `/dev/ptmx` the caller sees (so a process in a container's
/// mount namespace gets one of the container's own `/dev/pts`): `(master, slave, slave path)`.
/// Both ends are close-on-exec and the slave is opened with `O_NOCTTY`.
pub fn open() -> io::Result<(OwnedFd, OwnedFd, String)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("opening {name}: {e}")))?;
    let master = OwnedFd::from(master);
    Ok((master, slave, name))
}

/// Makes the terminal on `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0 = do not steal); the result is checked.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of the terminal on `fd`, if it is one.
pub fn get_winsize(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into `ws`, which outlives the call; the result is checked.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

/// Sets the window size of the terminal on `fd` (the kernel then signals SIGWINCH).
pub fn set_winsize(fd: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads `ws`, which outlives the call.
    unsafe {
        libc::ioctl(fd, libc::TIOCSWINSZ, ws);
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl))?;
    Ok(())
}

/// Puts our terminal (stdin) in raw mode while a relayed terminal owns the screen; restores
/// the saved settings on drop. A no-op when stdin is not a terminal.
pub struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    /// Saves stdin's terminal settings and switches it to raw mode.
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = nix::sys::termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Copies what is readable on `from` to `to`; false at end of file or on error.
pub fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    pump_last(from, to, &mut 0)
}

/// Like [`pump`], and remembers the last byte copied in `last`.
pub fn pump_last(from: BorrowedFd<'_>, to: BorrowedFd<'_>, last: &mut u8) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            *last = buf[n - 1];
            write_all(to, &buf[..n])
        }
        Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// Writes all of `data` to `to`, waiting while a non-blocking `to` is full; false on error.
pub fn write_all(to: BorrowedFd<'_>, data: &[u8]) -> bool {
    let mut off = 0;
    while off < data.len() {
        match nix::unistd::write(to, &data[off..]) {
            Ok(w) => off += w,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(to, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(100u8));
            }
            Err(_) => return false,
        }
    }
    true
}

/// Copies the window size of our terminal (stdin, else stdout) to the terminal `to`.
pub fn copy_winsize(to: impl AsFd) {
    if let Some(ws) = get_winsize(0).or_else(|| get_winsize(1)) {
        set_winsize(to.as_fd().as_raw_fd(), &ws);
    }
}
