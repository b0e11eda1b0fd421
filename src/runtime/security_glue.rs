//! The one place the runtime calls [`crate::security`] (capabilities, seccomp, no_new_privs,
//! rlimits, the user switch).

use anyhow::Result;

use crate::spec::Security;

/// Security settings resolved before fork.
pub type Prepared = crate::security::Prepared;

/// Resolves `sec` before any fork (validates capability names, compiles the seccomp filter).
pub fn prepare(sec: &Security) -> Result<Prepared> {
    crate::security::prepare(sec)
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
