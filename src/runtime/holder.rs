//! The holder: owns the user and mount namespaces the union filesystem lives in, starts the
//! filesystem server and the container init, relays rcl's requests, and cleans up.
//!
//! It talks to rcl over a [`Chan`]: it sends `unshared` (rcl then writes the id maps and
//! answers `mapped`), `join N` (the container init's host pid, to be put in the cgroup), `pid N` (the
//! union root is mounted; the init is held until rcl says `go`), and
//! finally `exit CODE`; errors travel as `err MESSAGE`, exec failures as `exec MESSAGE`. rcl may
//! send `go`, `sig N` and `kill`. When rcl disappears (its end closes) the holder kills the
//! container and cleans up alone: nothing stays behind even if rcl is SIGKILLed.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid};

use super::chan::Chan;
use super::init::{container_main, status_code};
use super::{sys, Plan};
use crate::cgroup::Cgroup;
use crate::spec::NsMode;

/// Entry point of the forked holder process; never returns.
pub fn holder_main(plan: &Plan, rcl: &mut Chan) -> ! {
    let code = match holder(plan, rcl) {
        Ok(()) => 0,
        Err(e) => {
            let _ = rcl.send("err", &format!("{e:#}"));
            1
        }
    };
    if rcl.peer_gone() {
        // rcl is gone: nobody else will remove what it made for this container.
        let _ = std::fs::remove_dir_all(&plan.state);
        if let Ok(cg) = Cgroup::open(&plan.id) {
            let _ = cg.destroy();
        }
    }
    sys::exit_now(code)
}

fn holder(plan: &Plan, rcl: &mut Chan) -> Result<()> {
    // The signals rcl forwards stay blocked here (inherited from rcl): a Ctrl-C on the terminal
    // reaches the whole process group, and the holder must survive it to clean up. The
    // container init unblocks them.
    let mut flags = CloneFlags::CLONE_NEWNS;
    if plan.userns.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).context("creating the holder's namespaces")?;
    // rcl now makes the state directory and the cgroup, and writes the id maps.
    rcl.send("unshared", "")?;
    match rcl.recv()? {
        Some(m) if m.word == "mapped" => {}
        _ => bail!("rcl went away during setup"),
    }
    if plan.userns.is_some() {
        let (u, g) = (Uid::from_raw(0), Gid::from_raw(0));
        nix::unistd::setresgid(g, g, g).context("becoming root in the user namespace")?;
        nix::unistd::setresuid(u, u, u).context("becoming root in the user namespace")?;
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")?;

    let mut cleanup = Cleanup {
        plan,
        server: None,
        init: None,
    };
    let result = serve(plan, rcl, &mut cleanup);
    cleanup.run();
    let code = result?;
    let _ = rcl.send("exit", &code.to_string());
    Ok(())
}

/// Everything the holder must undo, whatever happened.
struct Cleanup<'a> {
    plan: &'a Plan,
    server: Option<Pid>,
    init: Option<Pid>,
}

impl Cleanup<'_> {
    fn run(&mut self) {
        if let Some(init) = self.init.take() {
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
        }
        let _ = umount2(&self.plan.mountpoint, MntFlags::MNT_DETACH);
        if let Some(server) = self.server.take() {
            // The server returns once the last mount of its filesystem is gone.
            if !wait_exit(server, Duration::from_secs(5)) {
                let _ = kill(server, Signal::SIGKILL);
                let _ = waitpid(server, None);
            }
        }
        // Inside the user namespace we may remove files owned by any container user.
        let _ = std::fs::remove_dir_all(&self.plan.state);
    }
}

/// Waits up to `limit` for child `pid` to exit; true when it did (and was reaped).
fn wait_exit(pid: Pid, limit: Duration) -> bool {
    let Ok(fd) = sys::pidfd_open(pid) else {
        let _ = waitpid(pid, None);
        return true;
    };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) if n > 0 => {
            let _ = waitpid(pid, None);
            true
        }
        _ => false,
    }
}

fn serve(plan: &Plan, rcl: &mut Chan, cleanup: &mut Cleanup) -> Result<i32> {
    // 1. The union filesystem server, in this user + mount namespace, outside the container's.
    let (mut to_server, mut server_end) = Chan::pair()?;
    let me = nix::unistd::getpid();
    match sys::fork().context("forking the filesystem server")? {
        None => {
            sys::close_raw(rcl.as_fd().as_raw_fd());
            sys::close_raw(to_server.as_fd().as_raw_fd());
            super::server::server_main(plan, &mut server_end, me)
        }
        Some(pid) => cleanup.server = Some(pid),
    }
    drop(server_end);

    // 2. The container init, PID 1 of a new pid namespace when asked. It is created while the
    // server mounts, so that rcl can move it into its cgroup meanwhile: the first write to a
    // cgroup v1 `cgroup.procs` waits for an RCU grace period (milliseconds), which then overlaps
    // with the mount. The init makes its mount namespace only after `go`, which is forwarded
    // once the union filesystem is mounted.
    if plan.namespaces.pid == NsMode::New {
        unshare(CloneFlags::CLONE_NEWPID).context("creating the pid namespace")?;
    }
    let (mut to_init, mut init_end) = Chan::pair()?;
    let init = match sys::fork().context("forking the container init")? {
        None => {
            sys::close_raw(rcl.as_fd().as_raw_fd());
            sys::close_raw(to_init.as_fd().as_raw_fd());
            sys::close_raw(to_server.as_fd().as_raw_fd());
            container_main(plan, &mut init_end, me)
        }
        Some(pid) => pid,
    };
    cleanup.init = Some(init);
    drop(init_end);
    let init_fd = sys::pidfd_open(init).context("pidfd_open on the container init")?;
    rcl.send("join", &init.to_string())?;

    match to_server.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(m)) if m.word == "mounted" => {}
        Ok(Some(m)) if m.word == "err" => bail!("{}", m.arg),
        Ok(_) => bail!("the filesystem server exited before mounting"),
        Err(e) => return Err(e).context("waiting for the filesystem server"),
    }
    drop(to_server);
    // The init builds the root filesystem now, while rcl finishes moving it into its cgroup.
    to_init.send("mounted", "")?;
    rcl.send("pid", &init.to_string())?;

    let mut failure: Option<(String, String)> = None;
    let mut init_chan_open = true;
    loop {
        let rcl_open = !rcl.is_closed();
        let mut fds = vec![PollFd::new(init_fd.as_fd(), PollFlags::POLLIN)];
        if rcl_open {
            fds.push(PollFd::new(rcl.as_fd(), PollFlags::POLLIN));
        }
        if init_chan_open {
            fds.push(PollFd::new(to_init.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll in the holder"),
            Ok(_) => {}
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let init_done = ready(&fds[0]);
        let rcl_ready = rcl_open && ready(&fds[1]);
        let init_msgs = init_chan_open && ready(&fds[fds.len() - 1]);
        drop(fds);
        if init_msgs {
            let (msgs, closed) = to_init.read_ready()?;
            init_chan_open = !closed;
            for m in msgs {
                if m.word == "err" || m.word == "exec" {
                    failure = Some((m.word, m.arg));
                } else if m.word == "pty" {
                    // The container's terminal: pass it on to rcl.
                    if let Some(fd) = to_init.take_fd() {
                        rcl.send_fd("pty", "", fd.as_fd())?;
                    }
                }
            }
        }
        if rcl_ready {
            let (msgs, closed) = rcl.read_ready()?;
            for m in msgs {
                match m.word.as_str() {
                    // An init that already failed reports why once it is reaped.
                    "go" => {
                        let _ = to_init.send("go", "");
                    }
                    "sig" => {
                        if let Ok(sig) = Signal::try_from(m.num()?) {
                            let _ = kill(init, sig);
                        }
                    }
                    "kill" => {
                        let _ = kill(init, Signal::SIGKILL);
                    }
                    _ => {}
                }
            }
            if closed {
                // rcl is gone: take the container down with it.
                let _ = kill(init, Signal::SIGKILL);
            }
        }
        if init_done {
            let st = waitpid(init, None).context("waiting for the container init")?;
            cleanup.init = None;
            // Collect a last error message the init may have sent just before exiting.
            if init_chan_open {
                if let Ok((msgs, _)) = to_init.read_ready() {
                    for m in msgs {
                        if m.word == "err" || m.word == "exec" {
                            failure = Some((m.word, m.arg));
                        }
                    }
                }
            }
            let code = status_code(st).unwrap_or(1);
            if let Some((word, msg)) = failure {
                rcl.send(&word, &msg)?;
            }
            return Ok(code);
        }
    }
}
