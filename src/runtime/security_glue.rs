//! The one place the runtime calls the security module (capabilities, seccomp,
//! no_new_privs, user switch), so wiring it in is a one-line change.

use anyhow::{Context, Result};
use nix::unistd::{Gid, Uid};

use crate::spec::Security;

/// Security settings resolved before fork.
#[derive(Debug, Clone)]
pub struct Prepared {
    no_new_privs: bool,
}

/// Resolves `sec` before any fork.
pub fn prepare(sec: &Security) -> Result<Prepared> {
    Ok(Prepared {
        no_new_privs: sec.no_new_privileges,
    })
}

/// Right before exec: supplementary groups, gid, uid, then the remaining restrictions.
pub fn apply(p: &Prepared, uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // setgroups is denied in a user namespace with a single-id map: only fail when it matters.
    if let Err(e) = nix::unistd::setgroups(&gids) {
        if groups.len() > 1 || e != nix::errno::Errno::EPERM {
            return Err(e).context("setgroups");
        }
    }
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).with_context(|| format!("setgid {gid}"))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).with_context(|| format!("setuid {uid}"))?;
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().context("prctl(PR_SET_NO_NEW_PRIVS)")?;
    }
    Ok(())
}
