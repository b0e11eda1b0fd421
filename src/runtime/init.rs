//! The container's first process: enters its namespaces, builds the root filesystem, becomes
//! the requested user and runs the command (under rcl's PID 1 when `init = true`).

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::chan::Chan;
use super::mounts::setup_rootfs;
use super::{security_glue, sys, Plan};
use crate::spec::{NsMode, User};

/// Signals rcl's init forwards to the command.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Exit status in the shell's convention: the code, or 128+N when killed by signal N.
pub fn status_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Entry point of the forked container process; never returns.
pub fn container_main(plan: &Plan, chan: &mut Chan, holder: Pid) -> ! {
    let mut started = false;
    match setup(plan, chan, holder, &mut started) {
        Ok(never) => match never {},
        Err(e) => {
            if !started {
                // The root is built before the start signal: a failure there is reported once
                // the container is started, as before, so that creating it still succeeds.
                match chan.recv() {
                    Ok(Some(m)) if m.word == "go" => {}
                    _ => sys::exit_now(125),
                }
            }
            let _ = chan.send("err", &format!("setting up the container: {e:#}"));
            sys::exit_now(125)
        }
    }
}

/// Who the command runs as, resolved in the container's /etc files.
struct Ident {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: Option<String>,
}

fn read_db(path: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect()
}

fn resolve_user(user: &User) -> Result<Ident> {
    let passwd = read_db("/etc/passwd");
    let group = read_db("/etc/group");
    let (entry, group_spec) = match user {
        User::Ids { uid, gid } => (
            passwd
                .iter()
                .find(|f| f[2] == uid.to_string())
                .cloned()
                .unwrap_or_else(|| {
                    vec![
                        String::new(),
                        String::new(),
                        uid.to_string(),
                        gid.unwrap_or(*uid).to_string(),
                    ]
                }),
            gid.map(|g| g.to_string()),
        ),
        User::Name { user, group } => match user.parse::<u32>() {
            Ok(_) => bail!("user {user:?} is numeric; use ids"),
            Err(_) => (
                passwd
                    .iter()
                    .find(|f| &f[0] == user)
                    .cloned()
                    .with_context(|| {
                        format!("user {user:?} not found in the container's /etc/passwd")
                    })?,
                group.clone(),
            ),
        },
    };
    let uid: u32 = entry[2].parse().context("bad uid in /etc/passwd")?;
    let mut gid: u32 = entry[3].parse().unwrap_or(uid);
    if let Some(g) = group_spec {
        gid = match g.parse() {
            Ok(n) => n,
            Err(_) => group
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| format!("group {g:?} not found in the container's /etc/group"))?,
        };
    }
    let name = &entry[0];
    let mut groups = vec![gid];
    if !name.is_empty() {
        for f in &group {
            if f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    let home = entry.get(5).filter(|h| !h.is_empty()).cloned();
    Ok(Ident {
        uid,
        gid,
        groups,
        home,
    })
}

fn setup(plan: &Plan, chan: &mut Chan, holder: Pid, started: &mut bool) -> Result<Infallible> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    // In a new pid namespace the parent shows as 0; otherwise it must still be the holder.
    let parent = nix::unistd::getppid();
    if parent != holder && parent.as_raw() != 0 {
        sys::exit_now(125);
    }
    // rcl and the holder block the signals they handle; the container starts with none blocked.
    SigSet::all()
        .thread_unblock()
        .context("unblocking signals")?;
    sys::reset_signal_dispositions();
    let ns = &plan.namespaces;
    let mut flags = CloneFlags::empty();
    if ns.uts == NsMode::New {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if ns.ipc == NsMode::New {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if ns.network == NsMode::New {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if !flags.is_empty() {
        unshare(flags).context("creating the container's namespaces")?;
    }

    // Wait until the union filesystem is mounted, then copy the holder's mounts, which now
    // include the union root.
    match chan.recv().context("waiting for the union filesystem")? {
        Some(m) if m.word == "mounted" => {}
        _ => sys::exit_now(125),
    }
    unshare(CloneFlags::CLONE_NEWNS).context("creating the container's mount namespace")?;
    // The root filesystem is built while rcl moves this process into its cgroup (on cgroup v1
    // the first move waits for an RCU grace period, milliseconds); only the cgroup namespace
    // and the command need the cgroup. A cgroup2 view mounted at /sys/fs/cgroup needs the
    // cgroup namespace first, so then the start signal is awaited before the root is built.
    let cgroup_first = ns.cgroup == NsMode::New && super::mounts::mounts_cgroup2(&plan.rootfs);
    if cgroup_first {
        wait_start(chan, ns.cgroup, started)?;
    }
    if !plan.pass_stdin {
        let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
        sys::dup2_raw(null.as_raw_fd(), 0).context("redirecting stdin")?;
    }
    if ns.uts == NsMode::New {
        nix::unistd::sethostname(&plan.hostname)
            .with_context(|| format!("setting the hostname to {:?}", plan.hostname))?;
    }
    if ns.network == NsMode::New {
        sys::loopback_up().context("bringing the loopback interface up")?;
    }
    setup_rootfs(&plan.rootfs)?;

    let id = resolve_user(&plan.process.user)?;
    let mut env: Vec<(String, String)> = plan.process.env.clone();
    let has = |env: &Vec<(String, String)>, k: &str| env.iter().any(|(n, _)| n == k);
    if !has(&env, "HOSTNAME") {
        env.push(("HOSTNAME".into(), plan.hostname.clone()));
    }
    if !has(&env, "HOME") {
        env.push(("HOME".into(), id.home.clone().unwrap_or_else(|| "/".into())));
    }
    let workdir = &plan.process.workdir;
    if !workdir.is_dir() {
        let _ = std::fs::create_dir_all(workdir);
    }
    std::env::set_current_dir(workdir)
        .with_context(|| format!("changing to the working directory {}", workdir.display()))?;
    sys::umask(plan.process.umask);

    let cmd = Command::new(&plan.process.args, &env)?;
    if !cgroup_first {
        wait_start(chan, ns.cgroup, started)?;
    }
    let tty = if plan.terminal {
        Some(open_terminal(chan, &id)?)
    } else {
        None
    };
    if plan.init {
        run_init(plan, chan, &cmd, &id, tty)
    } else {
        // Reported like the init's child reports it: status 127 and the reason.
        let e = cmd.exec(plan, &id, tty.as_ref().map(|t| t.as_raw_fd()));
        let _ = chan.send("exec", &format!("{e:#}"));
        sys::exit_now(127)
    }
}

/// Waits for `go` (rcl has put this process in the container's cgroup and started it), then
/// takes a cgroup namespace rooted in that cgroup when asked.
fn wait_start(chan: &mut Chan, cgroup: NsMode, started: &mut bool) -> Result<()> {
    match chan.recv().context("waiting for the start signal")? {
        Some(m) if m.word == "go" => *started = true,
        _ => sys::exit_now(125),
    }
    if cgroup == NsMode::New {
        unshare(CloneFlags::CLONE_NEWCGROUP).context("creating the cgroup namespace")?;
    }
    Ok(())
}

/// True when id `n` is inside the current user namespace's map (`uid_map` or `gid_map`).
fn is_mapped(n: u32, map: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/{map}")) else {
        return true;
    };
    text.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        f.len() == 3 && (n as u64) >= f[0] && (n as u64) < f[0] + f[2]
    })
}

/// A command ready to exec: program resolved in the container's PATH.
struct Command {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    display: String,
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"))
}

impl Command {
    fn new(args: &[String], env: &[(String, String)]) -> Result<Command> {
        let prog = args.first().context("empty command")?;
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let resolved: PathBuf = if prog.contains('/') {
            PathBuf::from(prog)
        } else {
            path_var
                .split(':')
                .map(|d| Path::new(d).join(prog))
                .find(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from(prog))
        };
        Ok(Command {
            path: CString::new(resolved.as_os_str().as_bytes())?,
            argv: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstr(&format!("{k}={v}")))
                .collect::<Result<_>>()?,
            display: prog.clone(),
        })
    }

    /// Becomes the user, applies the security settings and execs; returns only on failure.
    fn exec(&self, plan: &Plan, id: &Ident, tty: Option<RawFd>) -> anyhow::Error {
        if let Some(tty) = tty {
            // A session of its own with the terminal as controlling terminal and stdio.
            let _ = nix::unistd::setsid();
            for fd in 0..3 {
                if let Err(e) = sys::dup2_raw(tty, fd) {
                    return anyhow::Error::new(e).context("attaching the terminal");
                }
            }
            // The original descriptor is close-on-exec.
            if let Err(e) = sys::set_controlling_tty(0) {
                return anyhow::Error::new(e).context("TIOCSCTTY");
            }
        }
        for (what, n, map) in [("uid", id.uid, "uid_map"), ("gid", id.gid, "gid_map")] {
            if !is_mapped(n, map) {
                return anyhow::anyhow!(
                    "{what} {n} does not exist in this user namespace: rootless rcl maps only \
                     your own id unless /etc/subuid and /etc/subgid give you a range (e.g. \
                     `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER`) \
                     and newuidmap/newgidmap are installed (package uidmap)"
                );
            }
        }
        if let Err(e) = security_glue::apply(&plan.security, id.uid, id.gid, &id.groups) {
            return e.context("applying the security settings");
        }
        // Descriptors rcl's caller left open do not reach the command.
        sys::cloexec_from(3);
        let err = nix::unistd::execve(&self.path, &self.argv, &self.envp).unwrap_err();
        anyhow::Error::new(err).context(format!("exec {}", self.display))
    }
}

/// Makes a terminal in the container's own /dev/pts, sends its master side to rcl (through
/// the holder) and returns the slave side, owned by the command's user.
fn open_terminal(chan: &mut Chan, id: &Ident) -> Result<OwnedFd> {
    let (master, slave, name) = crate::pty::open().context("opening a terminal in /dev/pts")?;
    // As Docker does with a terminal: /dev/console is that terminal.
    if std::fs::File::create("/dev/console").is_ok() {
        let _ = nix::mount::mount(
            Some(name.as_str()),
            "/dev/console",
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    let _ = nix::unistd::fchown(
        &slave,
        Some(nix::unistd::Uid::from_raw(id.uid)),
        Some(nix::unistd::Gid::from_raw(id.gid)),
    );
    chan.send_fd("pty", "", master.as_fd())
        .context("handing the terminal to rcl")?;
    Ok(slave)
}

fn run_init(
    plan: &Plan,
    chan: &mut Chan,
    cmd: &Command,
    id: &Ident,
    tty: Option<OwnedFd>,
) -> Result<Infallible> {
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block().context("blocking signals in init")?;
    let child = match sys::fork().context("forking the command")? {
        None => {
            let _ = mask.thread_unblock();
            if tty.is_none() {
                // Out of rcl's process group: terminal signals go through rcl and init.
                let _ = nix::unistd::setsid();
            }
            let e = cmd.exec(plan, id, tty.as_ref().map(|t| t.as_raw_fd()));
            let _ = chan.send("exec", &format!("{e:#}"));
            sys::exit_now(127)
        }
        Some(pid) => pid,
    };
    // The command's copy of the channel reports an exec failure; ours is no longer needed
    // (this process only ever leaves through exit_now, so the Chan is never dropped). Nor is
    // the terminal: the command holds it.
    sys::close_raw(chan_fd(chan));
    drop(tty);
    loop {
        let sig = mask.wait().context("waiting for signals in init")?;
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if st.pid() == Some(child) {
                        if let Some(code) = status_code(st) {
                            sys::exit_now(code);
                        }
                    }
                }
            }
        }
    }
}

fn chan_fd(chan: &Chan) -> RawFd {
    chan.as_fd().as_raw_fd()
}
