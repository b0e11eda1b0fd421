//! `rcl exec`: runs a command inside a running container.
//!
//! The new process joins the container's cgroup, then every namespace of the container's
//! first process that differs from ours in one `setns` on a pidfd (Linux 5.8+): user, mount
//! (which puts it at the container's root), uts, ipc, net, cgroup and pid (which takes effect
//! for children, so it forks once more). It then takes the container's user, capabilities,
//! no_new_privs, rlimits and seccomp filter from the spec via [`crate::security`], and execs.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use crate::spec::{Spec, User};

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
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// Who to run as: (uid, gid, groups, home), resolved in the container's /etc files.
fn resolve_user(user: &User) -> Result<(u32, u32, Vec<u32>, Option<String>)> {
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
    let (entry, group) = match user {
        User::Ids { uid, gid } => {
            let e = passwd.iter().find(|f| f[2] == uid.to_string()).cloned();
            let gid = gid.or_else(|| e.as_ref().and_then(|f| f[3].parse().ok()));
            let e = e.unwrap_or_else(|| {
                vec![
                    String::new(),
                    String::new(),
                    uid.to_string(),
                    uid.to_string(),
                ]
            });
            (e, gid.map(|g| g.to_string()))
        }
        User::Name { user, group } => (
            passwd
                .iter()
                .find(|f| &f[0] == user)
                .cloned()
                .with_context(|| format!("user {user:?} not in the container's /etc/passwd"))?,
            group.clone(),
        ),
    };
    let uid: u32 = entry[2].parse().context("bad uid in /etc/passwd")?;
    let mut gid: u32 = entry[3].parse().unwrap_or(uid);
    if let Some(g) = group {
        gid = match g.parse() {
            Ok(n) => n,
            Err(_) => groups_db
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .with_context(|| format!("group {g:?} not in the container's /etc/group"))?,
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

/// The last step, in the process that is inside every namespace: user, security, exec.
fn exec_inside(spec: &Spec, sec: &crate::security::Prepared, command: &[String]) -> Result<()> {
    // The command starts with no signal blocked, whatever the caller had blocked.
    nix::sys::signal::SigSet::all()
        .thread_unblock()
        .context("unblocking signals")?;
    let (uid, gid, groups, home) = resolve_user(&spec.process.user)?;
    std::env::set_current_dir("/").context("chdir /")?;
    let wd = &spec.process.workdir;
    std::env::set_current_dir(wd).with_context(|| format!("workdir {}", wd.display()))?;
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
    // A user namespace with a single-id map has setgroups denied: keep the inherited list.
    let denied = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false);
    let groups = if denied { Vec::new() } else { groups };
    sec.apply(uid, gid, &groups)
        .context("applying the container's security settings")?;
    let err = cmd.exec();
    bail!("cannot execute {}: {err}", command[0])
}

/// Runs `command` inside the running container whose first process is `init_pid` (host pid),
/// in its cgroup `cgroup` (when known), as its spec says; returns the command's exit status
/// (126 when it could not enter, 127 when it could not execute). Call from a single-threaded
/// process (it forks).
pub fn exec(init_pid: i32, cgroup: Option<&str>, spec: &Spec, command: &[String]) -> Result<i32> {
    if command.is_empty() {
        bail!("no command given");
    }
    let pidfd = pidfd_open(init_pid).with_context(|| {
        format!("opening the container's first process (pid {init_pid}); is it running?")
    })?;
    let flags = differing_namespaces(init_pid)?;
    let sec = crate::security::prepare(&spec.security)?;
    // Rootless without a delegated cgroup the container has none of its own: then there is
    // nothing to join (it shares the caller's).
    let cg = match cgroup.map(crate::cgroup::Cgroup::open) {
        Some(Ok(cg)) => Some(cg),
        Some(Err(_)) if !nix::unistd::geteuid().is_root() => None,
        Some(Err(e)) => return Err(e),
        None => None,
    };
    // SAFETY: the rcl command line is single-threaded, so the child may run ordinary code.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            let st = waitpid(child, None).context("waiting for the command")?;
            Ok(code_of(st))
        }
        ForkResult::Child => {
            let code = (|| -> Result<i32> {
                // A killed `rcl exec` takes its command along (the grandchild below too).
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .context("prctl(PR_SET_PDEATHSIG)")?;
                if let Some(cg) = &cg {
                    cg.add_pid(std::process::id() as i32)
                        .context("joining the container's cgroup")?;
                }
                // SAFETY: setns with a pidfd we own and a flag set; no memory is shared.
                if unsafe { libc::setns(pidfd.as_raw_fd(), flags) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .context("joining the container's namespaces");
                }
                drop(pidfd);
                // Joining a pid namespace applies to children: run the command in one.
                // SAFETY: still single-threaded.
                match unsafe { nix::unistd::fork() }.context("fork")? {
                    ForkResult::Parent { child } => Ok(code_of(waitpid(child, None)?)),
                    ForkResult::Child => {
                        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                        let e = exec_inside(spec, &sec, command).unwrap_err();
                        eprintln!("rcl: error: {e:#}");
                        let msg = format!("{e:#}");
                        // SAFETY: _exit ends the child without running the parent's destructors.
                        unsafe {
                            libc::_exit(if msg.contains("cannot execute") {
                                127
                            } else {
                                126
                            })
                        }
                    }
                }
            })();
            let code = match code {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("rcl: error: {e:#}");
                    126
                }
            };
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
    }
}
