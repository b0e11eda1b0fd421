//! Thin wrappers over the raw system calls [`super::Prepared::apply`] needs.
//!
//! Each wrapper makes one or two system calls and allocates nothing, so it may run in a child
//! forked from a multithreaded parent, between `fork` and `exec`.

use nix::errno::Errno;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets split over two data records.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets, as 64-bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

fn check(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// `capget(2)` for the calling thread.
pub(crate) fn capget() -> Result<CapSets, Errno> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and data are valid, writable, correctly laid out for version 3 (two records).
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    })?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// `capset(2)` for the calling thread.
pub(crate) fn capset(sets: CapSets) -> Result<(), Errno> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: hdr and data are valid and correctly laid out for version 3; the kernel only
    // reads data.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) })?;
    Ok(())
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> Result<libc::c_int, Errno> {
    // SAFETY: only called with prctl operations whose arguments are plain integers.
    let rc = unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(rc)
    }
}

/// True when capability `cap` is in the bounding set (`PR_CAPBSET_READ`).
pub(crate) fn bounding_has(cap: u8) -> Result<bool, Errno> {
    Ok(prctl(libc::PR_CAPBSET_READ, cap.into(), 0)? == 1)
}

/// Removes capability `cap` from the bounding set (`PR_CAPBSET_DROP`; needs CAP_SETPCAP).
pub(crate) fn bounding_drop(cap: u8) -> Result<(), Errno> {
    prctl(libc::PR_CAPBSET_DROP, cap.into(), 0).map(drop)
}

/// Empties the ambient set. Kernels without ambient capabilities (< 4.3) have none to clear.
pub(crate) fn ambient_clear() -> Result<(), Errno> {
    match prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    ) {
        Err(Errno::EINVAL) => Ok(()),
        other => other.map(drop),
    }
}

/// Sets the supplementary group list.
pub(crate) fn setgroups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe a valid slice of gid_t (u32) that the kernel
    // only reads.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Installs one seccomp BPF program on the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`).
/// Needs no_new_privs or CAP_SYS_ADMIN in the thread's user namespace.
pub(crate) fn seccomp_install(prog: &[seccompiler::sock_filter]) -> Result<(), Errno> {
    let len = u16::try_from(prog.len()).map_err(|_| Errno::E2BIG)?;
    let fprog = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is #[repr(C)] {u16, u8, u8, u32}, the kernel's layout and
        // libc's, so the pointer cast is sound.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `len` valid instructions that outlive the call; the kernel copies
    // the program and never writes to it.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}
