//! The default seccomp filter: a deny-list equivalent to Docker's default profile.
//!
//! Docker's profile allows a long list of system calls and refuses the rest with EPERM. This
//! filter refuses, with EPERM, the calls Docker's profile leaves out that matter (kernel
//! modules, kexec, keyrings, mounts, namespaces, tracing, clocks, NUMA policy, io_uring,
//! obsolete calls...), and relaxes the same groups Docker relaxes when the container holds the
//! matching capability (CAP_SYS_ADMIN allows mount, CAP_SYS_PTRACE ptrace, ...). `clone` with a
//! namespace flag is refused unless CAP_SYS_ADMIN is held; `clone3` answers ENOSYS (libc then
//! falls back to `clone`, whose flags a filter can inspect); `personality` accepts only the
//! values Docker accepts.
//!
//! The filter is built with `seccompiler` as up to three stacked programs: the EPERM deny-list,
//! the `clone3` ENOSYS rule, and on x86_64 a four-instruction guard refusing every x32-ABI call
//! (numbers with bit 30 set), which would otherwise slip past a deny-list keyed on x86_64
//! numbers. A call from another architecture's ABI (i386 `int 0x80` on x86_64, arm32 on
//! aarch64) kills the process: seccompiler checks the audit architecture first.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::SecurityError;

/// Capability numbers used by the relaxation rules.
mod cap {
    pub const DAC_READ_SEARCH: u8 = 2;
    pub const SYS_MODULE: u8 = 16;
    pub const SYS_RAWIO: u8 = 17;
    pub const SYS_PTRACE: u8 = 19;
    pub const SYS_PACCT: u8 = 20;
    pub const SYS_ADMIN: u8 = 21;
    pub const SYS_BOOT: u8 = 22;
    pub const SYS_NICE: u8 = 23;
    pub const SYS_TIME: u8 = 25;
    pub const SYS_TTY_CONFIG: u8 = 26;
    pub const SYSLOG: u8 = 34;
    pub const PERFMON: u8 = 38;
    pub const BPF: u8 = 39;
}

/// One group of refused calls: refused unless the set holds one of `unless`.
struct Group {
    unless: &'static [u8],
    calls: &'static [&'static str],
}

/// The refused groups (names as in the kernel's syscall tables).
const GROUPS: &[Group] = &[
    Group {
        unless: &[],
        calls: &[
            "add_key",
            "keyctl",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "userfaultfd",
            "swapon",
            "swapoff",
            "pivot_root",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "vm86",
            "vm86old",
        ],
    },
    Group {
        unless: &[cap::SYS_ADMIN],
        calls: &[
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "umount",
            "umount2",
            "unshare",
        ],
    },
    Group {
        unless: &[cap::SYS_ADMIN, cap::DAC_READ_SEARCH],
        calls: &["name_to_handle_at"],
    },
    Group {
        unless: &[cap::DAC_READ_SEARCH],
        calls: &["open_by_handle_at"],
    },
    Group {
        unless: &[cap::SYS_ADMIN, cap::BPF],
        calls: &["bpf"],
    },
    Group {
        unless: &[cap::SYS_ADMIN, cap::PERFMON],
        calls: &["perf_event_open"],
    },
    Group {
        unless: &[cap::SYS_ADMIN, cap::SYSLOG],
        calls: &["syslog"],
    },
    Group {
        unless: &[cap::SYS_BOOT],
        calls: &["reboot"],
    },
    Group {
        unless: &[cap::SYS_MODULE],
        calls: &["init_module", "finit_module", "delete_module"],
    },
    Group {
        unless: &[cap::SYS_PACCT],
        calls: &["acct"],
    },
    Group {
        unless: &[cap::SYS_PTRACE],
        calls: &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    },
    Group {
        unless: &[cap::SYS_RAWIO],
        calls: &["iopl", "ioperm"],
    },
    Group {
        unless: &[cap::SYS_TIME],
        calls: &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
    },
    Group {
        unless: &[cap::SYS_TTY_CONFIG],
        calls: &["vhangup"],
    },
    Group {
        unless: &[cap::SYS_NICE],
        calls: &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "move_pages",
        ],
    },
];

/// `personality(2)` values Docker's profile accepts: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (query).
const PERSONALITY_OK: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$( (stringify!($name), libc::$name) ),*]
    };
}

/// System calls present on every supported architecture, by name.
const COMMON: &[(&str, libc::c_long)] = syscalls![
    SYS_acct,
    SYS_add_key,
    SYS_bpf,
    SYS_clock_adjtime,
    SYS_clock_settime,
    SYS_clone,
    SYS_clone3,
    SYS_delete_module,
    SYS_fanotify_init,
    SYS_finit_module,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fsopen,
    SYS_fspick,
    SYS_get_mempolicy,
    SYS_init_module,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_io_uring_setup,
    SYS_kcmp,
    SYS_kexec_file_load,
    SYS_kexec_load,
    SYS_keyctl,
    SYS_lookup_dcookie,
    SYS_mbind,
    SYS_mount,
    SYS_mount_setattr,
    SYS_move_mount,
    SYS_move_pages,
    SYS_name_to_handle_at,
    SYS_nfsservctl,
    SYS_open_by_handle_at,
    SYS_open_tree,
    SYS_perf_event_open,
    SYS_personality,
    SYS_pidfd_getfd,
    SYS_pivot_root,
    SYS_process_madvise,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_ptrace,
    SYS_quotactl,
    SYS_quotactl_fd,
    SYS_reboot,
    SYS_request_key,
    SYS_set_mempolicy,
    SYS_set_mempolicy_home_node,
    SYS_setdomainname,
    SYS_sethostname,
    SYS_setns,
    SYS_settimeofday,
    SYS_swapoff,
    SYS_swapon,
    SYS_syslog,
    SYS_umount2,
    SYS_unshare,
    SYS_userfaultfd,
    SYS_vhangup,
];

/// System calls only x86_64 has. `create_module`, `get_kernel_syms` and `query_module` are
/// removed calls that still own numbers 174, 177 and 178 (libc does not name them).
#[cfg(target_arch = "x86_64")]
const ARCH_ONLY: &[(&str, libc::c_long)] = &[
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("sysfs", libc::SYS_sysfs),
    ("_sysctl", libc::SYS__sysctl),
    ("uselib", libc::SYS_uselib),
    ("ustat", libc::SYS_ustat),
    ("create_module", 174),
    ("get_kernel_syms", 177),
    ("query_module", 178),
];

/// aarch64 uses the generic table, which has none of the legacy calls.
#[cfg(not(target_arch = "x86_64"))]
const ARCH_ONLY: &[(&str, libc::c_long)] = &[];

/// The number of system call `name` on this architecture, or `None` where it does not exist
/// (`umount`, `stime`, `vm86` are i386-only; those ABIs are killed by the architecture check).
pub fn syscall_number(name: &str) -> Option<i64> {
    let key = format!("SYS_{name}");
    COMMON
        .iter()
        .find(|(n, _)| *n == key)
        .or_else(|| ARCH_ONLY.iter().find(|(n, _)| *n == name))
        .map(|&(_, nr)| nr)
}

fn arch() -> Result<TargetArch, SecurityError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SecurityError::Seccomp(e.to_string()))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SecurityError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SecurityError::Seccomp(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SecurityError> {
    SeccompRule::new(conds).map_err(|e| SecurityError::Seccomp(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    on_match: SeccompAction,
) -> Result<BpfProgram, SecurityError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, arch()?)
        .map_err(|e| SecurityError::Seccomp(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| SecurityError::Seccomp(e.to_string()))
}

/// The names of the calls the default filter refuses outright (no argument condition) for a
/// container holding the capabilities in `caps`, that exist on this architecture.
pub fn refused_calls(caps: u64) -> Vec<&'static str> {
    let held = |c: &u8| caps & (1u64 << c) != 0;
    GROUPS
        .iter()
        .filter(|g| !g.unless.iter().any(held))
        .flat_map(|g| g.calls.iter().copied())
        .filter(|n| syscall_number(n).is_some())
        .collect()
}

/// Compiles the default filter for a container holding capability mask `caps`: the programs to
/// install, in order (each is one `seccomp(2)` call).
pub fn default_programs(caps: u64) -> Result<Vec<BpfProgram>, SecurityError> {
    let sys_admin = caps & (1u64 << cap::SYS_ADMIN) != 0;
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in refused_calls(caps) {
        let nr = syscall_number(name).expect("filtered by refused_calls");
        rules.insert(nr, Vec::new());
    }

    // personality: refuse every value but the accepted ones (all conditions must hold).
    let not_ok = PERSONALITY_OK
        .iter()
        .map(|&v| cond(0, SeccompCmpOp::Ne, v))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, vec![rule(not_ok)?]);

    let mut programs = Vec::new();
    if !sys_admin {
        // clone: refuse when any namespace flag is set (one rule per flag; rules are OR-ed).
        // The flags are clone's first argument on x86_64 and aarch64.
        let per_flag = CLONE_NS_FLAGS
            .iter()
            .map(|&f| {
                let f = f as u32 as u64;
                rule(vec![cond(0, SeccompCmpOp::MaskedEq(f), f)?])
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_clone, per_flag);
    }
    programs.push(compile(rules, eperm)?);

    if !sys_admin {
        // clone3 passes its flags in memory, out of a filter's sight: answer ENOSYS so libc
        // falls back to clone.
        let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        programs.push(compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?);
    }

    #[cfg(target_arch = "x86_64")]
    programs.push(x32_guard());

    Ok(programs)
}

/// On x86_64: refuse (EPERM) every call made through the x32 ABI, whose numbers carry
/// `__X32_SYSCALL_BIT` (0x40000000) and so would never match the deny-list.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
    const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // A = seccomp_data.nr
        ins(LD_W_ABS, 0, 0, 0),
        // if A >= X32 bit: next (EPERM), else skip one (ALLOW)
        ins(JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: u64 = 0xa804_25fb;

    #[test]
    fn required_calls_are_refused_by_default() {
        let refused = refused_calls(DEFAULT);
        for name in [
            "acct",
            "add_key",
            "bpf",
            "clock_adjtime",
            "clock_settime",
            "delete_module",
            "finit_module",
            "get_mempolicy",
            "init_module",
            "kcmp",
            "kexec_file_load",
            "kexec_load",
            "keyctl",
            "lookup_dcookie",
            "mbind",
            "mount",
            "move_pages",
            "name_to_handle_at",
            "nfsservctl",
            "open_by_handle_at",
            "perf_event_open",
            "pivot_root",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "quotactl",
            "reboot",
            "request_key",
            "set_mempolicy",
            "setns",
            "settimeofday",
            "swapon",
            "swapoff",
            "umount2",
            "unshare",
            "userfaultfd",
            "fsopen",
            "fsconfig",
            "fsmount",
            "move_mount",
            "open_tree",
            "fspick",
            "mount_setattr",
        ] {
            assert!(refused.contains(&name), "{name} not refused");
        }
        #[cfg(target_arch = "x86_64")]
        for name in [
            "create_module",
            "get_kernel_syms",
            "ioperm",
            "iopl",
            "query_module",
            "sysfs",
            "_sysctl",
            "uselib",
            "ustat",
        ] {
            assert!(refused.contains(&name), "{name} not refused");
        }
    }

    #[test]
    fn capabilities_relax_their_groups() {
        let with = |c: u8| refused_calls(DEFAULT | (1 << c));
        assert!(!with(cap::SYS_ADMIN).contains(&"mount"));
        assert!(!with(cap::SYS_ADMIN).contains(&"unshare"));
        assert!(!with(cap::SYS_PTRACE).contains(&"ptrace"));
        assert!(!with(cap::SYS_TIME).contains(&"settimeofday"));
        assert!(!with(cap::SYS_MODULE).contains(&"init_module"));
        assert!(!with(cap::BPF).contains(&"bpf"));
        assert!(with(cap::SYS_ADMIN).contains(&"keyctl"));
        assert!(with(cap::SYS_ADMIN).contains(&"ptrace"));
    }

    #[test]
    fn programs_compile() {
        let p = default_programs(DEFAULT).unwrap();
        assert_eq!(p.len(), if cfg!(target_arch = "x86_64") { 3 } else { 2 });
        assert!(p.iter().all(|p| !p.is_empty() && p.len() < 4096));
        let p = default_programs(u64::MAX >> 23).unwrap();
        assert_eq!(p.len(), if cfg!(target_arch = "x86_64") { 2 } else { 1 });
    }

    #[test]
    fn names_resolve() {
        assert_eq!(syscall_number("mount"), Some(libc::SYS_mount));
        assert_eq!(syscall_number("no_such_call"), None);
    }
}
