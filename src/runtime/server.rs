//! The union filesystem server process: mounts the container's root with `fsimpl` and serves
//! it until the last mount of it is gone.

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use super::chan::Chan;
use super::{sys, Plan};

/// Entry point of the forked server; never returns. Sends `mounted` (or `err MESSAGE`) on
/// `chan` once the mount is live.
pub fn server_main(plan: &Plan, chan: &mut Chan) -> ! {
    if std::env::var_os("RCL_DEV_KERNEL_OVERLAY").is_some() {
        dev_kernel_overlay(plan, chan)
    }
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

/// Development aid while the union filesystem is being written: mounts kernel overlayfs
/// instead (root or a kernel that allows it in a user namespace), when `RCL_DEV_KERNEL_OVERLAY`
/// is set. rcl itself never needs kernel overlayfs.
fn dev_kernel_overlay(plan: &Plan, chan: &mut Chan) -> ! {
    use nix::mount::{mount, MsFlags};
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let cfg = &plan.overlay;
    let lowers: Vec<String> = cfg
        .lowerdirs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if let (Some(u), Some(w)) = (&cfg.upperdir, &cfg.workdir) {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    if plan.userns.is_some() {
        data.push_str(",userxattr");
    }
    let r = mount(
        Some("overlay"),
        &plan.mountpoint,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    );
    if let Err(e) = r {
        let _ = chan.send("err", &format!("kernel overlay ({data}): {e}"));
        sys::exit_now(1);
    }
    let _ = chan.send("mounted", "");
    let mp = plan.mountpoint.to_string_lossy().into_owned();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if !info
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mp.as_str()))
        {
            sys::exit_now(0);
        }
    }
}
