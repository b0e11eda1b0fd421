//! `rcl exec`: runs a command inside a running container.
//!
//! Three processes take part. rcl itself stays outside, relays the terminal (with `-t`) and
//! forwards signals. Its child (the *intermediate*) joins the container's cgroup, then every
//! namespace of the container's first process that differs from ours in one `setns` on a pidfd
//! (Linux 5.8+): user, mount (which puts it at the container's root), uts, ipc, net, cgroup and
//! pid. Joining a pid namespace applies to children only, so the intermediate forks the
//! *command* process, which starts a session of its own, sets up its stdio, takes the user
//! (`-u` or the spec's), workdir, environment, capabilities, no_new_privs, rlimits and seccomp
//! filter via [`crate::security`], and execs. The intermediate waits for it, passes on the
//! signals rcl forwards (to the command's process group; it is the command's parent, so the pid
//! cannot be reused meanwhile) and exits with its status.
//!
//! The terminal of `-t` is made by the intermediate *after* joining the mount namespace, from
//! the container's own `/dev/ptmx` (its private devpts instance): so `tty` inside names a
//! `/dev/pts/N` that exists there, the slave is owned by a user the container knows, and
//! nothing of the host's devpts is exposed. The master side travels back to rcl over a
//! socketpair (SCM_RIGHTS). `-t` without a terminal on our side still gives the command one
//! (80x24; Docker does the same, and only refuses `-it` there): output is relayed and, with
//! `-i`, piped input is typed into it and its end becomes the terminal's EOF character.
//!
//! Failures before the command runs travel back over a close-on-exec pipe as `CODE message`
//! (126: could not be started, 127: not found), so rcl prints one line naming the container.

use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use crate::pty;
use crate::spec::{Spec, User};

/// What `rcl exec` was asked beyond the command (Docker's `exec` flags).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Keep stdin attached (`-i`); without it the command's stdin is /dev/null.
    pub interactive: bool,
    /// Give the command a pseudo-terminal as stdin, stdout, stderr and controlling terminal
    /// (`-t`).
    pub tty: bool,
    /// Start the command in the background and return once it has been executed (`-d`); its
    /// stdio is /dev/null.
    pub detach: bool,
    /// `USER[:GROUP]` (names or numbers) replacing the spec's user (`-u`).
    pub user: Option<String>,
    /// Working directory replacing the spec's (`-w`).
    pub workdir: Option<PathBuf>,
    /// Variables set after the spec's environment (`-e`), in order.
    pub env: Vec<(String, String)>,
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The command's exit status (128+N when killed by signal N); 126 when it could not be
    /// started, 127 when it was not found.
    pub code: i32,
    /// Why the command could not be started, when it could not.
    pub error: Option<String>,
}

/// Parses `-e` arguments: `KEY=VALUE`, or `KEY` alone taking its value from `lookup` (our
/// environment; a `KEY` unset there is left out, as Docker does).
pub fn parse_env(
    args: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (a.as_str(), lookup(a)),
        };
        if k.is_empty() {
            bail!("--env {a:?}: the variable name is empty");
        }
        if k.contains('\0') || v.as_ref().is_some_and(|v| v.contains('\0')) {
            bail!("--env {a:?}: contains a NUL byte");
        }
        if let Some(v) = v {
            out.push((k.to_string(), v));
        }
    }
    Ok(out)
}

/// Splits and checks `USER[:GROUP]`.
fn parse_user(s: &str) -> Result<(String, Option<String>)> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if u.is_empty() || g == Some("") || g.is_some_and(|g| g.contains(':')) {
        bail!("--user {s:?}: write USER[:GROUP] (names or numbers, e.g. 1000:1000 or nobody)");
    }
    Ok((u.to_string(), g.map(str::to_string)))
}

const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("pid", libc::CLONE_NEWPID),
];

/// The namespaces of `pid` that differ from ours, as `CLONE_NEW*` flags.
fn differing_namespaces(pid: i32) -> Result<libc::c_int> {
    let mut flags = 0;
    for (name, flag) in NAMESPACES {
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
            .with_context(|| format!("reading the {name} namespace of pid {pid}"))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"))
            .with_context(|| format!("reading our {name} namespace"))?;
        if theirs.ino() != ours.ino() || theirs.dev() != ours.dev() {
            flags |= flag;
        }
    }
    Ok(flags)
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: signals the process behind `pidfd` (no pid reuse race).
fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) {
    // SAFETY: plain system call on a descriptor we hold, no info struct, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Who to run as: (uid, gid, groups, home), resolved in the container's /etc files. `user`
/// and `group` are names or numbers; a number needs no entry.
fn resolve_user(user: &str, group: Option<&str>) -> Result<(u32, u32, Vec<u32>, Option<String>)> {
    let db = |path: &str| -> Vec<Vec<String>> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
            .filter(|f| f.len() >= 4)
            .collect()
    };
    let passwd = db("/etc/passwd");
    let groups_db = db("/etc/group");
    let numeric = |s: &str| -> Option<u32> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let entry = match numeric(user) {
        Some(uid) => passwd
            .iter()
            .find(|f| f[2] == uid.to_string())
            .cloned()
            .unwrap_or_else(|| {
                vec![
                    String::new(),
                    String::new(),
                    uid.to_string(),
                    uid.to_string(),
                ]
            }),
        None => passwd
            .iter()
            .find(|f| f[0] == user)
            .cloned()
            .with_context(|| format!("user {user:?} is not in the container's /etc/passwd"))?,
    };
    let uid: u32 = entry[2].parse().context("bad uid in /etc/passwd")?;
    let mut gid: u32 = entry[3].parse().unwrap_or(uid);
    if let Some(g) = group {
        gid = match numeric(g) {
            Some(n) => n,
            None => groups_db
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| format!("group {g:?} is not in the container's /etc/group"))?,
        };
    }
    let mut groups = vec![gid];
    if !entry[0].is_empty() {
        for f in &groups_db {
            if f[3].split(',').any(|m| m == entry[0]) {
                if let Ok(g) = f[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    let home = entry.get(5).filter(|h| !h.is_empty()).cloned();
    Ok((uid, gid, groups, home))
}

fn code_of(st: WaitStatus) -> i32 {
    match st {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        _ => 1,
    }
}

/// A reason the command did not run, with the exit status that reports it.
struct Fail {
    code: i32,
    msg: String,
}

impl Fail {
    fn new(code: i32, msg: impl Into<String>) -> Fail {
        Fail {
            code,
            msg: msg.into(),
        }
    }

    /// Reports through the error pipe and ends this forked process.
    fn exit(self, err_w: &OwnedFd) -> ! {
        let line = format!("{} {}\n", self.code, self.msg.replace('\n', " "));
        let _ = nix::unistd::write(err_w, line.as_bytes());
        // SAFETY: _exit ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(self.code) }
    }
}

fn cannot_start(e: anyhow::Error) -> Fail {
    Fail::new(126, format!("{e:#}"))
}

/// Where the command's stdio comes from.
enum Stdio {
    /// rcl's own stdin, stdout and stderr (`-i`).
    Inherit,
    /// stdin is /dev/null, stdout and stderr are rcl's.
    NullIn(OwnedFd),
    /// All three are /dev/null (`-d`).
    Detached(OwnedFd),
    /// All three are the terminal's slave side (`-t`); it becomes the controlling terminal.
    Tty(OwnedFd),
}

/// Everything the forked processes need.
struct Job<'a> {
    spec: &'a Spec,
    opts: &'a ExecOptions,
    sec: &'a crate::security::Prepared,
    command: &'a [String],
    /// TERM for a terminal (ours, default xterm).
    term: String,
}

/// The command process: in every namespace already; session, stdio, user, workdir,
/// environment, security, exec. Returns only why it could not exec.
fn command_process(job: &Job, stdio: Stdio) -> Fail {
    let Job {
        spec,
        opts,
        sec,
        command,
        ..
    } = job;
    if !opts.detach {
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    }
    // A session of its own: terminal signals reach it through rcl (or its own terminal).
    let _ = nix::unistd::setsid();
    let dup = |fd: &OwnedFd, to: RawFd| -> Result<(), Fail> {
        // SAFETY: dup2 only changes the descriptor table; the result is checked.
        if unsafe { libc::dup2(fd.as_raw_fd(), to) } < 0 {
            return Err(Fail::new(
                126,
                format!("setting up fd {to}: {}", std::io::Error::last_os_error()),
            ));
        }
        Ok(())
    };
    let stdio_ok = match &stdio {
        Stdio::Inherit => Ok(()),
        Stdio::NullIn(null) => dup(null, 0),
        Stdio::Detached(null) => dup(null, 0).and(dup(null, 1)).and(dup(null, 2)),
        Stdio::Tty(slave) => pty::set_controlling_tty(slave.as_raw_fd())
            .map_err(|e| Fail::new(126, format!("making the terminal controlling: {e}")))
            .and(dup(slave, 0))
            .and(dup(slave, 1))
            .and(dup(slave, 2)),
    };
    if let Err(f) = stdio_ok {
        return f;
    }
    let user = match &opts.user {
        Some(u) => parse_user(u),
        None => Ok(match &spec.process.user {
            User::Ids { uid, gid } => (uid.to_string(), gid.map(|g| g.to_string())),
            User::Name { user, group } => (user.clone(), group.clone()),
        }),
    };
    let (uid, gid, groups, home) = match user.and_then(|(u, g)| resolve_user(&u, g.as_deref())) {
        Ok(r) => r,
        Err(e) => return cannot_start(e),
    };
    if let Stdio::Tty(slave) = &stdio {
        // The command's user owns its terminal (the mode devpts gave it stays: 0620).
        let _ = nix::unistd::fchown(
            slave,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
    }
    drop(stdio);
    let wd = opts.workdir.as_ref().unwrap_or(&spec.process.workdir);
    if let Err(e) = std::env::set_current_dir("/").and_then(|_| std::env::set_current_dir(wd)) {
        return Fail::new(
            126,
            match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("workdir {} does not exist in the container", wd.display())
                }
                _ => format!("workdir {}: {e}", wd.display()),
            },
        );
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        spec.process.umask as libc::mode_t,
    ));
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).env_clear();
    cmd.env("PATH", crate::spec::DEFAULT_PATH);
    if let Some(h) = home {
        cmd.env("HOME", h);
    }
    cmd.env("HOSTNAME", &spec.hostname);
    for (k, v) in &spec.process.env {
        cmd.env(k, v);
    }
    if opts.tty {
        cmd.env("TERM", &job.term);
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    // The command starts with no signal blocked, whatever rcl had blocked (std's exec also
    // resets SIGPIPE, which the Rust runtime ignores, to its default).
    let _ = SigSet::all().thread_unblock();
    // A user namespace with a single-id map has setgroups denied: keep the inherited list.
    let denied = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false);
    let groups = if denied { Vec::new() } else { groups };
    if let Err(e) = sec.apply(uid, gid, &groups) {
        return cannot_start(
            anyhow::Error::new(e).context("applying the container's security settings"),
        );
    }
    let err = cmd.exec();
    let prog = &command[0];
    match err.raw_os_error() {
        Some(libc::ENOENT) if !prog.contains('/') => Fail::new(
            127,
            format!("cannot execute {prog:?}: executable file not found in $PATH"),
        ),
        Some(libc::ENOENT) => Fail::new(
            127,
            format!("cannot execute {prog:?}: no such file or directory"),
        ),
        Some(n) => Fail::new(
            126,
            format!(
                "cannot execute {prog:?}: {}",
                nix::errno::Errno::from_raw(n).desc().to_lowercase()
            ),
        ),
        None => Fail::new(126, format!("cannot execute {prog:?}: {err}")),
    }
}

/// Sends one tagged descriptor over the socketpair.
fn send_fd(sock: &OwnedFd, tag: u8, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(std::slice::from_ref(&tag))];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one tagged descriptor; `None` once the other side closed.
fn recv_fd(sock: &OwnedFd) -> std::io::Result<Option<(u8, OwnedFd)>> {
    loop {
        let mut tag = [0u8; 1];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut tag)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if msg.bytes == 0 {
            return Ok(None);
        }
        let mut got = None;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    got.get_or_insert(fd);
                }
            }
        }
        if let Some(fd) = got {
            return Ok(Some((tag[0], fd)));
        }
    }
}

/// The intermediate process: joins the cgroup and namespaces, makes the terminal, forks the
/// command and waits for it. Never returns.
fn intermediate(
    job: &Job,
    pidfd: OwnedFd,
    flags: libc::c_int,
    cg: Option<&crate::cgroup::Cgroup>,
    sock: OwnedFd,
    err_w: OwnedFd,
    null: Option<OwnedFd>,
) -> ! {
    let setup = || -> Result<Stdio> {
        if !job.opts.detach {
            // A killed `rcl exec` takes its command along (the command process too).
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
        }
        if let Some(cg) = cg {
            cg.add_pid(std::process::id() as i32)
                .context("joining the container's cgroup")?;
        }
        // SAFETY: setns with a pidfd we own and a flag set; no memory is shared.
        if unsafe { libc::setns(pidfd.as_raw_fd(), flags) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context("joining the container's namespaces");
        }
        if job.opts.tty {
            let (master, slave, _) =
                pty::open().context("opening a terminal in the container's /dev/pts")?;
            send_fd(&sock, b'p', master.as_fd()).context("handing the terminal to rcl")?;
            return Ok(Stdio::Tty(slave));
        }
        Ok(match null {
            Some(n) if job.opts.detach => Stdio::Detached(n),
            Some(n) => Stdio::NullIn(n),
            None => Stdio::Inherit,
        })
    };
    let stdio = match setup() {
        Ok(s) => s,
        Err(e) => cannot_start(e).exit(&err_w),
    };
    drop(pidfd);
    // The command's end is awaited with sigwait (the forwarded signals are blocked already).
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if let Err(e) = chld.thread_block() {
        Fail::new(126, format!("blocking SIGCHLD: {e}")).exit(&err_w)
    }
    // SAFETY: this process is single-threaded (a fork of the single-threaded rcl).
    match unsafe { nix::unistd::fork() } {
        Err(e) => Fail::new(126, format!("fork: {e}")).exit(&err_w),
        Ok(ForkResult::Child) => {
            drop(sock);
            command_process(job, stdio).exit(&err_w)
        }
        Ok(ForkResult::Parent { child }) => {
            drop((stdio, err_w, sock));
            // Detached, the command is orphaned at once; like any process that joined a pid
            // namespace from outside, it is then reaped outside (by init or a subreaper).
            let code = if job.opts.detach {
                0
            } else {
                wait_forwarding(child)
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}

/// In the intermediate: waits for the command, passing the signals rcl forwards to it on to
/// its process group (its session, from `setsid`). The command cannot be reaped, so its pid
/// not reused, before this loop sees it exit: no race.
fn wait_forwarding(child: nix::unistd::Pid) -> i32 {
    let mut set = SigSet::empty();
    for s in crate::runtime::FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => return code_of(st),
            Err(_) => return 1,
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                // Before its setsid the command has no group of its own yet.
                let group = nix::unistd::Pid::from_raw(-child.as_raw());
                if nix::sys::signal::kill(group, sig).is_err() {
                    let _ = nix::sys::signal::kill(child, sig);
                }
            }
        }
    }
}

/// Reads the failure report (`CODE message`) the forked processes left, if any; with `wait`,
/// until every writer has closed the pipe.
fn read_failure(err_r: OwnedFd, wait: bool) -> Option<(i32, String)> {
    if !wait {
        let _ = pty::set_nonblocking(&err_r);
    }
    let mut text = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut text);
    let line = text.lines().next()?;
    let (code, msg) = line.split_once(' ')?;
    Some((code.parse().ok()?, msg.to_string()))
}

/// Runs `command` inside the running container whose first process is `init_pid` (host pid),
/// in its cgroup `cgroup` (when known), as its spec and `opts` say. Relays the terminal with
/// [`ExecOptions::tty`] (our terminal in raw mode meanwhile when stdin is one and
/// [`ExecOptions::interactive`] is set; window size forwarded at start and on SIGWINCH) and
/// forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command until it
/// exits. Call from a single-threaded process (it forks); it blocks those signals.
pub fn exec(
    init_pid: i32,
    cgroup: Option<&str>,
    spec: &Spec,
    command: &[String],
    opts: &ExecOptions,
) -> Result<ExecOutcome> {
    if command.is_empty() {
        bail!("no command given");
    }
    if let Some(u) = &opts.user {
        parse_user(u)?;
    }
    let pidfd = pidfd_open(init_pid).with_context(|| {
        format!("opening the container's first process (pid {init_pid}); is it running?")
    })?;
    let flags = differing_namespaces(init_pid)?;
    let sec = crate::runtime::prepare_security(&spec.security, &spec.process.rlimits)?;
    // Rootless without a delegated cgroup the container has none of its own: then there is
    // nothing to join (it shares the caller's).
    let cg = match cgroup.map(crate::cgroup::Cgroup::open) {
        Some(Ok(cg)) => Some(cg),
        Some(Err(_)) if !nix::unistd::geteuid().is_root() => None,
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let (sock, sock_child) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    let null = if opts.detach || (!opts.interactive && !opts.tty) {
        Some(OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("opening /dev/null")?,
        ))
    } else {
        None
    };
    let job = Job {
        spec,
        opts,
        sec: &sec,
        command,
        term: std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "xterm".into()),
    };
    // Blocked before the fork: the intermediate keeps them blocked (a terminal's Ctrl-C does
    // not kill it), the command unblocks; rcl reads them from a signalfd.
    let mut mask = SigSet::empty();
    for s in crate::runtime::FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGWINCH);
    mask.thread_block().context("blocking signals")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    // SAFETY: the rcl command line is single-threaded, so the child may run ordinary code.
    let child = match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Child => {
            drop(sock);
            drop(err_r);
            drop(sfd);
            intermediate(&job, pidfd, flags, cg.as_ref(), sock_child, err_w, null)
        }
        ForkResult::Parent { child } => child,
    };
    drop((pidfd, sock_child, err_w, null));
    let child_fd = pidfd_open(child.as_raw()).context("pidfd_open")?;
    let mut master: Option<OwnedFd> = None;
    // The terminal, when there is one; the end of the socket once the command is forked.
    while let Some((tag, fd)) = recv_fd(&sock).context("talking to the exec process")? {
        if tag == b'p' {
            master = Some(fd);
        }
    }
    drop(sock);
    if !opts.detach {
        relay(&sfd, &child_fd, master, opts)?;
    }
    let code = waitpid(child, None).map(code_of).context("waitpid")?;
    // Detached, wait for the report: it is complete once the command has executed (its end of
    // the pipe closes then) or failed.
    Ok(match read_failure(err_r, opts.detach) {
        Some((c, msg)) => ExecOutcome {
            code: c,
            error: Some(msg),
        },
        None => ExecOutcome { code, error: None },
    })
}

/// rcl's side while the command runs: relays the terminal, forwards signals, returns once the
/// intermediate (`child_fd`) has exited. Our terminal is restored on every way out.
fn relay(
    sfd: &SignalFd,
    child_fd: &OwnedFd,
    master: Option<OwnedFd>,
    opts: &ExecOptions,
) -> Result<()> {
    let stdin_tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    // Raw mode only when our keyboard goes to the command; restored when `_raw` drops.
    let _raw = (master.is_some() && opts.interactive && stdin_tty).then(pty::RawMode::enter);
    let mut peer = ExecRelay { child_fd, master };
    pty::relay(sfd, &mut peer, opts.interactive)
}

/// [`exec`]'s side of the terminal relay: the intermediate's pidfd tells of its end and takes
/// the signals, which it passes on to the command's process group.
struct ExecRelay<'a> {
    child_fd: &'a OwnedFd,
    /// The command's terminal, until the relay takes it.
    master: Option<OwnedFd>,
}

impl pty::Relayed for ExecRelay<'_> {
    type Exit = ();

    fn events(&self) -> BorrowedFd<'_> {
        self.child_fd.as_fd()
    }

    fn try_exit(&mut self) -> Result<Option<()>> {
        // The pidfd is readable once the intermediate has exited.
        Ok(Some(()))
    }

    fn signal(&mut self, sig: i32) -> Result<()> {
        // Without a terminal, a change of our window size is nothing to the command.
        if sig != libc::SIGWINCH {
            pidfd_send_signal(self.child_fd.as_fd(), sig);
        }
        Ok(())
    }

    fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.master.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_arguments() {
        let ours = |k: &str| (k == "SET").then(|| "from-rcl".to_string());
        let args: Vec<String> = ["A=1", "B=", "C=x=y", "SET", "UNSET"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let got = parse_env(&args, ours).unwrap();
        let want: Vec<(String, String)> =
            [("A", "1"), ("B", ""), ("C", "x=y"), ("SET", "from-rcl")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(got, want);
        let err = parse_env(&["=v".to_string()], ours).unwrap_err();
        assert!(format!("{err}").contains("name is empty"), "{err}");
    }

    #[test]
    fn user_arguments() {
        assert_eq!(parse_user("1000").unwrap(), ("1000".into(), None));
        assert_eq!(
            parse_user("user:extra").unwrap(),
            ("user".into(), Some("extra".into()))
        );
        for bad in ["", ":g", "u:", "u:g:h"] {
            assert!(parse_user(bad).is_err(), "{bad:?}");
        }
    }
}
