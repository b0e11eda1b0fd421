//! The union filesystem server process: mounts the container's root with `fsimpl` and serves
//! it until the last mount of it is gone.

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::chan::Chan;
use super::{sys, Plan};

/// Entry point of the forked server; never returns. Sends `mounted` (or `err MESSAGE`) on
/// `chan` once the mount is live.
pub fn server_main(plan: &Plan, chan: &mut Chan) -> ! {
    match mount(plan) {
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

fn mount(plan: &Plan) -> Result<fsimpl::Session> {
    // Die with the holder: the mount namespace, and so the mount, go with it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    if nix::unistd::getppid().as_raw() == 1 {
        sys::exit_now(1);
    }
    // Own process group: a Ctrl-C on the terminal must not reach the server directly.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    let fs = fsimpl::UnionFs::new(plan.overlay.clone()).context("opening the layers")?;
    fsimpl::mount(fs, &plan.mountpoint).with_context(|| {
        format!(
            "mounting the union filesystem on {}",
            plan.mountpoint.display()
        )
    })
}
