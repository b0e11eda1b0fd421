//! The union filesystem server process: mounts the container's root with `fsimpl` and serves
//! it until the last mount of it is gone.

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::chan::Chan;
use super::{sys, Plan};

/// Entry point of the forked server; never returns. Sends `mounted` (or `err MESSAGE`) on
/// `chan` once the mount is live.
pub fn server_main(plan: &Plan, chan: &mut Chan, holder: nix::unistd::Pid) -> ! {
    match mount(plan, holder) {
        Ok(session) => {
            if chan.send("mounted", "").is_err() {
                sys::exit_now(1);
            }
            sys::close_raw(std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(
                chan,
            )));
            let code = match session.run() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("rcl: error: union filesystem server: {e}");
                    1
                }
            };
            sys::exit_now(code)
        }
        Err(e) => {
            let _ = chan.send("err", &format!("{e:#}"));
            sys::exit_now(1)
        }
    }
}

fn mount(plan: &Plan, holder: nix::unistd::Pid) -> Result<fsimpl::Session> {
    // Die with the holder: the mount namespace, and so the mount, go with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid() != holder {
        // The holder died before the line above took effect.
        sys::exit_now(1);
    }
    // Own process group: a Ctrl-C on the terminal must not reach the server directly.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    let fs = fsimpl::UnionFs::new(plan.overlay.clone()).context("opening the layers")?;
    check_dev_fuse()?;
    fsimpl::mount(fs, &plan.mountpoint).with_context(|| {
        format!(
            "mounting the union filesystem on {}",
            plan.mountpoint.display()
        )
    })
}

/// Fails with a message that says how to fix it when /dev/fuse cannot be opened (rootless users
/// on systems that ship it root-only meet this first).
fn check_dev_fuse() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let mode = std::fs::metadata("/dev/fuse")
                .map(|m| format!("{:04o}", m.permissions().mode() & 0o7777))
                .unwrap_or_else(|_| "unknown".into());
            anyhow::bail!(
                "/dev/fuse: permission denied (its mode is {mode}): rootless rcl needs read and \
                 write access to /dev/fuse; most distributions ship it as 0666 — ask an \
                 administrator to run `chmod 0666 /dev/fuse` (or add a udev rule), or run as root"
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "/dev/fuse does not exist: load the fuse kernel module (`modprobe fuse`) or run rcl \
             where FUSE is available"
        ),
        Err(e) => Err(e).context("opening /dev/fuse"),
    }
}
