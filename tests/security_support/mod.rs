//! Helpers shared by the security tests: build a `Security`, run busybox with the settings
//! applied in the child, read /proc/self/status, and run raw system-call probes in a forked
//! child.

#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use rcl::security::{self, Prepared};
use rcl::spec::{Seccomp, Security};

/// The statically linked busybox the tests exec.
pub const BUSYBOX: &str = "/bin/busybox";

/// Why these tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !testkit::is_root() {
        return Some("security tests apply capabilities and setuid: they need root".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    None
}

/// A `Security` with the given lists.
pub fn sec(add: &[&str], drop: &[&str], nnp: bool, seccomp: Seccomp) -> Security {
    Security {
        cap_add: add.iter().map(|s| s.to_string()).collect(),
        cap_drop: drop.iter().map(|s| s.to_string()).collect(),
        no_new_privileges: nnp,
        seccomp,
    }
}

/// `prepare` that must succeed.
pub fn prep(s: &Security) -> Prepared {
    security::prepare(s).unwrap_or_else(|e| panic!("prepare({s:?}): {e:#}"))
}

/// Runs `busybox ARGS...` with `p` applied as (uid, gid, groups) right before exec.
pub fn run(p: &Prepared, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> testkit::Output {
    let p = p.clone();
    let groups = groups.to_vec();
    let mut cmd = Command::new(BUSYBOX);
    cmd.args(args).env_clear().env("PATH", "/bin:/usr/bin");
    // SAFETY: apply() makes only system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || p.apply(uid, gid, &groups).map_err(std::io::Error::from));
    }
    testkit::run_timeout(&mut cmd, Duration::from_secs(20))
}

/// /proc/self/status of a busybox `cat` run with `p` applied, as a field map.
pub fn status(p: &Prepared, uid: u32, gid: u32, groups: &[u32]) -> HashMap<String, String> {
    let out = run(p, uid, gid, groups, &["cat", "/proc/self/status"]);
    out.assert_ok();
    parse_status(&out.stdout)
}

/// Parses `Key:\tvalue` lines.
pub fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A capability mask as /proc/self/status prints it.
pub fn hex(mask: u64) -> String {
    format!("{mask:016x}")
}

/// The errno of the last failed call, or 0 when `rc` says it succeeded.
pub fn errno_of(rc: libc::c_long) -> i32 {
    if rc < 0 {
        Errno::last_raw()
    } else {
        0
    }
}

/// Runs `probe` in a forked child after applying `p` as (uid, gid): returns the probe's result
/// (an errno, 0 for success), or `Err` with the errno of a failed `apply`.
pub fn probe(p: &Prepared, uid: u32, gid: u32, probe: fn() -> i32) -> Result<i32, i32> {
    let (rd, wr) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only makes system calls (apply, the probe, write, _exit): nothing that
    // could deadlock on a lock held by another thread of this multithreaded test process.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let msg: [i32; 2] = match p.apply(uid, gid, &[]) {
                Err(e) => [1, e.errno as i32],
                Ok(()) => [0, probe()],
            };
            // SAFETY: writes 8 bytes from a live stack array to an open pipe, then exits
            // without running any destructor or atexit handler.
            unsafe {
                libc::write(
                    std::os::fd::AsRawFd::as_raw_fd(&wr),
                    msg.as_ptr().cast(),
                    std::mem::size_of_val(&msg),
                );
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            wait_or_kill(child, Duration::from_secs(20));
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(&rd, &mut buf).expect("read probe result");
            assert_eq!(n, 8, "probe child wrote no result");
            let kind = i32::from_ne_bytes(buf[0..4].try_into().unwrap());
            let val = i32::from_ne_bytes(buf[4..8].try_into().unwrap());
            if kind == 0 {
                Ok(val)
            } else {
                Err(val)
            }
        }
    }
}

/// Waits for `child`, killing it at the deadline (then panicking).
pub fn wait_or_kill(child: Pid, limit: Duration) -> WaitStatus {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive => {}
            st => return st,
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            panic!("probe child {child} timed out");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
