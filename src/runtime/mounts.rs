//! The container's mount namespace: everything done between entering it and `pivot_root`, and
//! the masked and read-only paths after it.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::spec::{Mount, MountKind};

/// Docker's masked paths: files get /dev/null bound over them, directories an empty ro tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host device nodes bind-mounted into the container's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the container's mount namespace is built from.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    /// The union mount, as seen in the holder's mount namespace.
    pub root: PathBuf,
    /// Mount a fresh procfs (own pid namespace) instead of binding the host's.
    pub fresh_proc: bool,
    /// Mount a fresh sysfs (own network namespace) instead of binding the host's.
    pub fresh_sys: bool,
    /// Own IPC namespace: mount a fresh mqueue.
    pub own_ipc: bool,
    /// Own cgroup namespace: on a cgroup v2 host, mount its view at /sys/fs/cgroup.
    pub own_cgroupns: bool,
    /// Extra mounts, with volume names already resolved to host directories.
    pub mounts: Vec<(Mount, Option<PathBuf>)>,
    /// Files to bind over /etc/hostname, /etc/hosts and /etc/resolv.conf (host paths).
    pub etc_files: Vec<(PathBuf, &'static str)>,
}

fn mnt(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, dst, fstype, flags, data).with_context(|| {
        format!(
            "mounting {} on {}{}",
            fstype
                .map(str::to_string)
                .or_else(|| src.map(|s| s.display().to_string()))
                .unwrap_or_default(),
            dst.display(),
            data.map(|d| format!(" ({d})")).unwrap_or_default()
        )
    })
}

/// Joins a container path onto the root.
fn inside(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Makes sure directory `p` exists (creating it in the union if needed).
fn ensure_dir(p: &Path) -> Result<()> {
    if p.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(p).with_context(|| format!("creating mountpoint {}", p.display()))
}

/// Makes sure file `p` exists (creating it and its parents if needed).
fn ensure_file(p: &Path) -> Result<()> {
    if p.exists() {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        ensure_dir(parent)?;
    }
    fs::File::create(p)
        .map(drop)
        .with_context(|| format!("creating mountpoint {}", p.display()))
}

/// Flags a remount must keep: in a user namespace the kernel refuses to clear locked
/// nosuid/nodev/noexec/atime flags.
fn locked_flags(p: &Path) -> MsFlags {
    let Ok(st) = statvfs(p) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    out
}

/// Remounts the bind mount at `p` read-only, keeping its locked flags.
fn remount_ro(p: &Path) -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(p);
    mnt(None, p, None, flags, None).with_context(|| format!("making {} read-only", p.display()))
}

/// True when [`setup_rootfs`] mounts the container's own cgroup2 view (which must be made
/// inside its cgroup namespace).
pub fn mounts_cgroup2(plan: &RootfsPlan) -> bool {
    plan.fresh_sys && plan.own_cgroupns && host_is_cgroup2()
}

/// True when the host's /sys/fs/cgroup is a pure cgroup v2 mount.
fn host_is_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Remounts the bind mount at `p` and every mount below it read-only.
fn remount_ro_recursive(p: &Path) -> Result<()> {
    remount_ro(p)?;
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let prefix = format!("{}/", p.display());
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = fsimpl::mountinfo::unescape(mp);
        if mp.starts_with(&prefix) {
            // Mounts the kernel refuses to change (locked, or already gone) are left as they are.
            let _ = remount_ro(Path::new(&mp));
        }
    }
    Ok(())
}

/// Builds the container's tree under `plan.root` (in the container's new mount namespace),
/// then pivots into it.
pub fn setup_rootfs(plan: &RootfsPlan) -> Result<()> {
    let root = &plan.root;
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    if !root.join("bin").exists() && fs::read_dir(root).map(|mut d| d.next().is_none())? {
        bail!("the root filesystem {} is empty", root.display());
    }

    // /proc
    let proc_dir = inside(root, Path::new("/proc"));
    ensure_dir(&proc_dir)?;
    let nsd = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if plan.fresh_proc {
        mnt(Some(Path::new("proc")), &proc_dir, Some("proc"), nsd, None)?;
    } else {
        mnt(
            Some(Path::new("/proc")),
            &proc_dir,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }

    setup_dev(root, plan.own_ipc)?;

    // /sys, read-only
    let sys_dir = inside(root, Path::new("/sys"));
    ensure_dir(&sys_dir)?;
    let fresh = plan.fresh_sys
        && mount(
            Some("sysfs"),
            &sys_dir,
            Some("sysfs"),
            nsd | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .is_ok();
    if fresh && plan.own_cgroupns && host_is_cgroup2() {
        // The container's own view of the cgroup tree, read-only, as Docker gives it. Best
        // effort: a kernel that refuses leaves /sys/fs/cgroup empty.
        let _ = mount(
            Some("cgroup2"),
            &sys_dir.join("fs/cgroup"),
            Some("cgroup2"),
            nsd | MsFlags::MS_RDONLY,
            None::<&str>,
        );
    }
    if !fresh {
        mnt(
            Some(Path::new("/sys")),
            &sys_dir,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_ro_recursive(&sys_dir)?;
    }

    // /etc/hostname, /etc/hosts, /etc/resolv.conf: best effort (a read-only root without
    // /etc cannot get them).
    for (src, dst) in &plan.etc_files {
        let target = inside(root, Path::new(dst));
        if ensure_file(&target).is_ok() {
            mnt(Some(src), &target, None, MsFlags::MS_BIND, None)?;
        }
    }

    for (m, volume_dir) in &plan.mounts {
        extra_mount(root, m, volume_dir.as_deref())?;
    }

    // pivot_root(".", ".") stacks the old root over the new one; detaching it leaves the new.
    std::env::set_current_dir(root).with_context(|| format!("chdir {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").context("pivot_root into the container's root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    std::env::set_current_dir("/").context("chdir /")?;

    mask_paths()?;
    Ok(())
}

fn setup_dev(root: &Path, own_ipc: bool) -> Result<()> {
    let dev = inside(root, Path::new("/dev"));
    ensure_dir(&dev)?;
    mnt(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        fs::File::create(&target).with_context(|| format!("creating {}", target.display()))?;
        mnt(Some(&host), &target, None, MsFlags::MS_BIND, None)?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).with_context(|| format!("creating {}", pts.display()))?;
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // gid=5 (tty) only exists when the user namespace maps it.
    if mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .is_err()
    {
        mnt(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
    }
    let shm = dev.join("shm");
    fs::create_dir(&shm).with_context(|| format!("creating {}", shm.display()))?;
    mnt(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = dev.join("mqueue");
    fs::create_dir(&mq).with_context(|| format!("creating {}", mq.display()))?;
    if own_ipc {
        mnt(
            Some(Path::new("mqueue")),
            &mq,
            Some("mqueue"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )?;
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlink(to, dev.join(link)).with_context(|| format!("creating /dev/{link}"))?;
    }
    Ok(())
}

fn extra_mount(root: &Path, m: &Mount, volume_dir: Option<&Path>) -> Result<()> {
    let target = inside(root, &m.target);
    match &m.kind {
        MountKind::Bind { source } => {
            if source.is_dir() {
                ensure_dir(&target)?;
            } else {
                ensure_file(&target)?;
            }
            mnt(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
        }
        MountKind::Volume { name } => {
            let src = volume_dir.with_context(|| format!("volume {name} has no directory"))?;
            ensure_dir(&target)?;
            mnt(
                Some(src),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
        }
        MountKind::Tmpfs { size } => {
            ensure_dir(&target)?;
            let mut data = String::from("mode=1777");
            if let Some(s) = size {
                data.push_str(&format!(",size={s}"));
            }
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            return mnt(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                flags,
                Some(&data),
            );
        }
    }
    if m.readonly {
        remount_ro(&target)?;
    }
    Ok(())
}

/// Hides Docker's masked paths and makes its read-only paths read-only (after pivot_root).
fn mask_paths() -> Result<()> {
    for p in MASKED_PATHS {
        let path = Path::new(p);
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        if meta.is_dir() {
            mnt(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0,mode=755"),
            )?;
        } else {
            mnt(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    for p in READONLY_PATHS {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        mnt(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_ro(path)?;
    }
    Ok(())
}

/// Makes the directory mode world-traversable (the union mountpoint must be reachable by the
/// container's users).
pub fn chmod_755(p: &Path) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", p.display()))
}
