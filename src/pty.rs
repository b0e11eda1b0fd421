//! Pseudo-terminal helpers shared by `rcl run` (a container's terminal) and `rcl exec -t`:
//! opening a pty pair, making it a controlling terminal, window sizes, raw mode for our own
//! terminal, and the relay loop that copies a terminal both ways while forwarding signals
//! ([`relay`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;

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

/// Copies what is readable on `from` to `to` and remembers the last byte copied in `last`;
/// false at end of file or on error.
fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>, last: &mut u8) -> bool {
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
fn write_all(to: BorrowedFd<'_>, data: &[u8]) -> bool {
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

/// The window size of our terminal (stdin, else stdout).
fn our_winsize() -> Option<libc::winsize> {
    get_winsize(0).or_else(|| get_winsize(1))
}

/// The size a relayed terminal gets when we have no terminal: the classic 80x24 (a 0x0
/// terminal makes programs such as `stty size` fail).
const DEFAULT_WINSIZE: libc::winsize = libc::winsize {
    ws_row: 24,
    ws_col: 80,
    ws_xpixel: 0,
    ws_ypixel: 0,
};

/// The process on the far side of a [`relay`]: where its news and its terminal come from, and
/// where the signals rcl receives go.
pub trait Relayed {
    /// What [`relay`] returns once the process has ended.
    type Exit;

    /// A descriptor that polls readable when there is news of the process (a pidfd, a
    /// channel).
    fn events(&self) -> BorrowedFd<'_>;

    /// Called when [`Relayed::events`] is readable: the exit once the process has ended,
    /// `None` to go on relaying.
    fn try_exit(&mut self) -> Result<Option<Self::Exit>>;

    /// Passes on a signal rcl received. SIGWINCH comes here only while there is no terminal;
    /// with one, the relay copies our window size to it instead.
    fn signal(&mut self, sig: i32) -> Result<()>;

    /// The master side of the process's terminal, once there is one (asked before every wait
    /// until it gives one).
    fn take_terminal(&mut self) -> Option<OwnedFd>;

    /// When to stop waiting even if nothing happens, to call [`Relayed::deadline_passed`].
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Called after a wake-up once [`Relayed::deadline`] has passed.
    fn deadline_passed(&mut self) -> Result<()> {
        Ok(())
    }
}

/// rcl's side while `peer` runs: relays its terminal (when it has one) to our stdout and, with
/// `input`, our stdin to it; forwards the signals read from `sfd`; returns the exit once `peer`
/// has ended, after copying out what is still in the terminal.
///
/// The terminal gets our window size (stdin's, else stdout's, else 80x24) at once and again on
/// each SIGWINCH. When a stdin that is not a terminal ends, the command's input is ended as a
/// keyboard would: with the terminal's EOF character (twice after an unfinished line: the
/// first only hands that line over). Our own terminal's mode is the caller's business (see
/// [`RawMode`]).
pub fn relay<P: Relayed>(sfd: &SignalFd, peer: &mut P, input: bool) -> Result<P::Exit> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stdin_tty = nix::unistd::isatty(&stdin).unwrap_or(false);
    let mut master: Option<OwnedFd> = None;
    let mut master_open = false;
    let mut input_open = false;
    let mut last = b'\n';
    loop {
        if master.is_none() {
            if let Some(m) = peer.take_terminal() {
                set_nonblocking(&m).context("fcntl")?;
                set_winsize(m.as_raw_fd(), &our_winsize().unwrap_or(DEFAULT_WINSIZE));
                master = Some(m);
                master_open = true;
                input_open = input;
            }
        }
        let timeout = match peer.deadline() {
            None => PollTimeout::NONE,
            Some(t) => {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let m = master.as_ref().map(|m| m.as_fd());
        let mut fds = vec![
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(peer.events(), PollFlags::POLLIN),
        ];
        if let (true, Some(m)) = (master_open, m) {
            fds.push(PollFd::new(m, PollFlags::POLLIN));
        }
        if let (true, Some(_)) = (input_open, m) {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 2;
        if let (true, Some(m)) = (master_open, m) {
            if ready[i] {
                master_open = pump(m, stdout.as_fd(), &mut 0);
            }
            i += 1;
        }
        if let (true, Some(m)) = (input_open, m) {
            if ready[i] && !pump(stdin.as_fd(), m, &mut last) {
                input_open = false;
                if !stdin_tty {
                    let eof: &[u8] = if last == b'\n' { b"\x04" } else { b"\x04\x04" };
                    write_all(m, eof);
                }
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = info.ssi_signo as i32;
                match m {
                    Some(m) if sig == libc::SIGWINCH => {
                        if let Some(ws) = our_winsize() {
                            set_winsize(m.as_raw_fd(), &ws);
                        }
                    }
                    _ => peer.signal(sig)?,
                }
            }
        }
        if ready[1] {
            if let Some(exit) = peer.try_exit()? {
                // Hand over what the process wrote before it ended.
                if let (true, Some(m)) = (master_open, m) {
                    loop {
                        let mut fds = [PollFd::new(m, PollFlags::POLLIN)];
                        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                            break;
                        }
                        if !pump(m, stdout.as_fd(), &mut 0) {
                            break;
                        }
                    }
                }
                return Ok(exit);
            }
        }
        if peer.deadline().is_some_and(|t| Instant::now() >= t) {
            peer.deadline_passed()?;
        }
    }
}
