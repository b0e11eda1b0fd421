//! Process security for the container's init: capabilities, user switch, no_new_privs,
//! resource limits and the seccomp filter.
//!
//! [`prepare`] does all the work that reads files, parses names or allocates (capability
//! names to a mask, compiling the seccomp BPF) before the fork; [`Prepared::apply`] then makes
//! only system calls, so it can run in a child forked from a multithreaded parent, right before
//! `exec`.
//!
//! What the container's process gets, following current Docker (20.10.14+/23+):
//! - uid 0: bounding = effective = permitted = the set; inheritable and ambient empty.
//! - other uids: bounding = the set; effective, permitted, inheritable, ambient empty (so a
//!   setuid-root or file-capability binary can regain at most the set, as in Docker).
//! - seccomp `Default`: see [`seccomp`]; `Unconfined`: no filter.
//! - RLIMIT_NOFILE soft 1024 / hard 1048576 like Docker's default daemon, the hard limit kept
//!   at the current one where raising it is not allowed (rootless); other limits inherited
//!   (RLIMIT_NPROC included: Docker leaves it to the daemon's, usually unlimited).

mod capset;
pub mod seccomp;
mod sys;

use std::fmt;

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{setresgid, setresuid, Gid, Uid};

pub use capset::{cap_name, cap_number, last_cap, DEFAULT_CAPS};

use crate::spec::{Seccomp, Security};

/// Errors found while preparing (bad names, unreadable /proc files, filter compilation).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A capability name that no kernel defines.
    #[error(
        "unknown capability {name:?} in cap_add/cap_drop (expected a name like CAP_CHOWN, or ALL)"
    )]
    UnknownCapability {
        /// The name as written.
        name: String,
    },
    /// A capability newer than the running kernel.
    #[error("capability {name} is not known to the running kernel (its last capability is number {last})")]
    CapabilityNotInKernel {
        /// The name as written.
        name: String,
        /// The kernel's `cap_last_cap`.
        last: u8,
    },
    /// A /proc file could not be read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// seccompiler refused the filter.
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
}

/// A failed step of [`Prepared::apply`]: which step and the system call's error. Allocation-free
/// (`Copy`), so it can be made in a forked child; convert with `std::io::Error::from` to return
/// it from a `pre_exec` hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyError {
    /// The step that failed, e.g. "setresuid".
    pub step: &'static str,
    /// The error the kernel returned.
    pub errno: Errno,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "security setup failed at {}: {}", self.step, self.errno)
    }
}

impl std::error::Error for ApplyError {}

impl From<ApplyError> for std::io::Error {
    fn from(e: ApplyError) -> Self {
        std::io::Error::from_raw_os_error(e.errno as i32)
    }
}

trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, ApplyError>;
}

impl<T> Step<T> for Result<T, Errno> {
    fn step(self, step: &'static str) -> Result<T, ApplyError> {
        self.map_err(|errno| ApplyError { step, errno })
    }
}

/// One resource limit to set in the container's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// Which limit.
    pub resource: Resource,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit (lowered to the current hard limit where raising it is refused).
    pub hard: u64,
}

/// The limits set by default: RLIMIT_NOFILE soft 1024, hard 1048576 (Docker's daemon default).
pub fn default_rlimits() -> Vec<Rlimit> {
    vec![Rlimit {
        resource: Resource::RLIMIT_NOFILE,
        soft: 1024,
        hard: 1_048_576,
    }]
}

/// Everything resolved before fork: capability sets, the compiled seccomp BPF programs, the
/// resource limits.
#[derive(Debug, Clone)]
pub struct Prepared {
    caps: capset::CapRequest,
    last_cap: u8,
    no_new_privs: bool,
    seccomp: Vec<seccompiler::BpfProgram>,
    rlimits: Vec<Rlimit>,
}

/// Resolves `sec` for the running kernel: validates capability names against
/// /proc/sys/kernel/cap_last_cap, computes the set, and compiles the seccomp filter.
pub fn prepare(sec: &Security) -> anyhow::Result<Prepared> {
    let last = last_cap()?;
    let caps = capset::resolve(&sec.cap_add, &sec.cap_drop, last)?;
    let seccomp = match sec.seccomp {
        Seccomp::Default => seccomp::default_programs(caps.all())?,
        Seccomp::Unconfined => Vec::new(),
    };
    Ok(Prepared {
        caps,
        last_cap: last,
        no_new_privs: sec.no_new_privileges,
        seccomp,
        rlimits: default_rlimits(),
    })
}

impl Prepared {
    /// The container's capability set as a mask (bit N = capability N), as /proc shows it.
    /// With "ALL" in cap_add, the capabilities the runtime does not hold itself are left out
    /// when applying (as Docker does when nested), so the process may get fewer than this.
    pub fn caps(&self) -> u64 {
        self.caps.all()
    }

    /// The capabilities that must be granted: [`apply`](Self::apply) fails if the calling
    /// process does not hold one of them.
    pub fn required_caps(&self) -> u64 {
        self.caps.required
    }

    /// The container's capabilities by name, in number order (see [`caps`](Self::caps)).
    pub fn cap_names(&self) -> Vec<String> {
        capset::names(self.caps.all())
    }

    /// True when a seccomp filter will be installed.
    pub fn has_seccomp(&self) -> bool {
        !self.seccomp.is_empty()
    }

    /// True when no_new_privs will be set.
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privs
    }

    /// The resource limits [`apply`](Self::apply) sets.
    pub fn rlimits(&self) -> &[Rlimit] {
        &self.rlimits
    }

    /// Replaces the resource limits to set (an empty list inherits every limit).
    pub fn with_rlimits(mut self, rlimits: Vec<Rlimit>) -> Self {
        self.rlimits = rlimits;
        self
    }

    /// In the container's process, right before exec: no_new_privs (if asked), rlimits, the
    /// bounding set, setgroups(`groups`), setresgid(`gid`), setresuid(`uid`) keeping the
    /// permitted set across the switch, the capability sets, then the seccomp filter last.
    ///
    /// Without no_new_privs the kernel only accepts a filter from a CAP_SYS_ADMIN holder, so
    /// then the filter is installed just before the final capability sets are set (while
    /// CAP_SYS_ADMIN is still permitted); the calls made after it (capset, prctl) are never
    /// filtered. The calling process must hold CAP_SETPCAP, CAP_SETUID, CAP_SETGID (and
    /// CAP_SYS_ADMIN for a filter without no_new_privs) in its user namespace: root, or root
    /// of a new user namespace.
    ///
    /// Only system calls, no allocation: safe between fork and exec in a child of a
    /// multithreaded process. When `groups` is empty and setgroups is refused (a user
    /// namespace whose setgroups is "deny"), the inherited list is kept.
    pub fn apply(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), ApplyError> {
        if self.no_new_privs {
            nix::sys::prctl::set_no_new_privs().step("prctl(PR_SET_NO_NEW_PRIVS)")?;
        }
        for r in &self.rlimits {
            apply_rlimit(r)?;
        }

        // The set: what must be granted, plus what "ALL" asked for that this process holds.
        let start = sys::capget().step("capget")?;
        if self.caps.required & !start.permitted != 0 {
            return Err(ApplyError {
                step: "capabilities (a requested capability is not held by the runtime)",
                errno: Errno::EPERM,
            });
        }
        let set = self.caps.required | (self.caps.optional & start.permitted);

        // Bounding set: needs CAP_SETPCAP, so before the user switch.
        for c in 0..=self.last_cap {
            if set & (1u64 << c) == 0 && sys::bounding_has(c).step("PR_CAPBSET_READ")? {
                sys::bounding_drop(c).step("PR_CAPBSET_DROP")?;
            }
        }

        // User switch, keeping the permitted set (the effective set is cleared by the kernel
        // when uid 0 goes away; it is restored from permitted below).
        nix::sys::prctl::set_keepcaps(true).step("prctl(PR_SET_KEEPCAPS)")?;
        match sys::setgroups(groups) {
            Err(Errno::EPERM) if groups.is_empty() => {}
            r => r.step("setgroups")?,
        }
        let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
        setresgid(g, g, g).step("setresgid")?;
        setresuid(u, u, u).step("setresuid")?;
        nix::sys::prctl::set_keepcaps(false).step("prctl(PR_SET_KEEPCAPS)")?;

        if !self.no_new_privs && !self.seccomp.is_empty() {
            let cur = sys::capget().step("capget")?;
            sys::capset(sys::CapSets {
                effective: cur.permitted,
                ..cur
            })
            .step("capset (raise effective for seccomp)")?;
            self.install_seccomp("seccomp (without no_new_privileges this needs CAP_SYS_ADMIN)")?;
        }

        let held = if uid == 0 { set } else { 0 };
        sys::capset(sys::CapSets {
            effective: held,
            permitted: held,
            inheritable: 0,
        })
        .step("capset")?;
        sys::ambient_clear().step("PR_CAP_AMBIENT_CLEAR_ALL")?;

        if self.no_new_privs {
            self.install_seccomp("seccomp")?;
        }
        Ok(())
    }

    fn install_seccomp(&self, step: &'static str) -> Result<(), ApplyError> {
        for prog in &self.seccomp {
            sys::seccomp_install(prog).step(step)?;
        }
        Ok(())
    }
}

/// Sets one limit; where raising the hard limit is refused, keeps the current hard limit and
/// caps the soft one to it.
fn apply_rlimit(r: &Rlimit) -> Result<(), ApplyError> {
    match setrlimit(r.resource, r.soft, r.hard) {
        Err(Errno::EPERM) => {
            let (_, cur_hard) = getrlimit(r.resource).step("getrlimit")?;
            let hard = r.hard.min(cur_hard);
            setrlimit(r.resource, r.soft.min(hard), hard).step("setrlimit")
        }
        other => other.step("setrlimit"),
    }
}
