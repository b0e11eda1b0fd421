//! The one place the runtime calls [`crate::security`] (capabilities, seccomp, no_new_privs,
//! rlimits, the user switch).

use anyhow::{bail, Result};
use nix::sys::resource::Resource;

use crate::spec::{Rlimit, Security};

/// Security settings resolved before fork.
pub type Prepared = crate::security::Prepared;

/// The nix resource for a spec's `RLIMIT_*` name.
fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        _ => return None,
    })
}

/// Resolves `sec` before any fork (validates capability names, compiles the seccomp filter)
/// and adds the spec's rlimits to the defaults (a spec entry replaces the default of its kind).
pub fn prepare(sec: &Security, rlimits: &[Rlimit]) -> Result<Prepared> {
    let prepared = crate::security::prepare(sec)?;
    let mut limits = crate::security::default_rlimits();
    for r in rlimits {
        let Some(res) = resource(&r.name) else {
            bail!("rlimit {} is not supported on this platform", r.name);
        };
        limits.retain(|l| l.resource != res);
        limits.push(crate::security::Rlimit {
            resource: res,
            soft: r.soft,
            hard: r.hard,
        });
    }
    Ok(prepared.with_rlimits(limits))
}

/// Right before exec: rlimits, capabilities, groups, gid, uid, no_new_privs, seccomp last.
pub fn apply(p: &Prepared, uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    // A user namespace with a single-id map has setgroups denied: keep the inherited list.
    let denied = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false);
    let groups = if denied { &[][..] } else { groups };
    p.apply(uid, gid, groups)?;
    Ok(())
}
