//! The union filesystems under test, mounted by their command lines, and a watchdog that aborts
//! a FUSE connection when one workload step hangs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::run_timeout;

/// One implementation of an overlay mount.
#[derive(Debug, Clone, PartialEq)]
pub enum Impl {
    /// Kernel overlayfs, default options.
    Kernel,
    /// Kernel overlayfs with `metacopy=on,redirect_dir=on`.
    KernelMeta,
    /// fuse-overlayfs (the C one) at this path.
    FuseOverlayfs(PathBuf),
    /// rcl-fs at this path.
    RclFs(PathBuf),
    /// rcl-fs with `fsync=0` (copy-ups not fsynced, as fuse-overlayfs 1.10 does them): only
    /// for the copy-up workloads, to compare the two at the same durability.
    RclFsNoSync(PathBuf),
}

impl Impl {
    /// Short name used in group/function ids and the report.
    pub fn name(&self) -> &'static str {
        match self {
            Impl::Kernel => "kernel",
            Impl::KernelMeta => "kernel-metacopy",
            Impl::FuseOverlayfs(_) => "fuse-overlayfs",
            Impl::RclFs(_) => "rcl-fs",
            Impl::RclFsNoSync(_) => "rcl-fs-fsync0",
        }
    }

    /// True for implementations served by a FUSE daemon.
    pub fn is_fuse(&self) -> bool {
        matches!(
            self,
            Impl::FuseOverlayfs(_) | Impl::RclFs(_) | Impl::RclFsNoSync(_)
        )
    }
}

/// A live mount with a fresh upper and work dir; unmounted (and its upper removed) on drop.
pub struct Mounted {
    /// The merged view.
    pub mnt: PathBuf,
    state: PathBuf,
    /// Server process of a FUSE implementation, when found.
    pub server_pid: Option<i32>,
    fuse_conn: Option<String>,
}

/// Mounts `imp` over `lowerdir` on `base/mnt-<impl>` with a fresh upper under `base/state-<impl>`.
pub fn mount(imp: &Impl, lowerdir: &str, base: &Path) -> Result<Mounted, String> {
    let mnt = base.join(format!("mnt-{}", imp.name()));
    let state = base.join(format!("state-{}", imp.name()));
    if testkit::is_mounted(&mnt) {
        force_unmount(&mnt, None);
    }
    if state.exists() {
        fs::remove_dir_all(&state).map_err(|e| format!("rm {}: {e}", state.display()))?;
    }
    let upper = state.join("upper");
    let work = state.join("work");
    for d in [&mnt, &upper, &work] {
        fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let mut cmd = match imp {
        Impl::Kernel | Impl::KernelMeta => {
            let mut c = Command::new("mount");
            let o = if *imp == Impl::KernelMeta {
                format!("{opts},metacopy=on,redirect_dir=on")
            } else {
                opts
            };
            c.args(["-t", "overlay", "overlay", "-o", &o]).arg(&mnt);
            c
        }
        Impl::FuseOverlayfs(bin) | Impl::RclFs(bin) => {
            let mut c = Command::new(bin);
            c.args(["-o", &opts]).arg(&mnt);
            c
        }
        Impl::RclFsNoSync(bin) => {
            let mut c = Command::new(bin);
            c.args(["-o", &format!("{opts},fsync=0")]).arg(&mnt);
            c
        }
    };
    let out = run_timeout(&mut cmd, Duration::from_secs(30));
    if !out.success() || !testkit::is_mounted(&mnt) {
        force_unmount(&mnt, None);
        return Err(format!(
            "{} mount failed ({:?}): {}{}",
            imp.name(),
            out.status,
            out.stdout,
            out.stderr
        ));
    }
    let (server_pid, fuse_conn) = if imp.is_fuse() {
        (find_server(&mnt), fuse_connection(&mnt))
    } else {
        (None, None)
    };
    Ok(Mounted {
        mnt,
        state,
        server_pid,
        fuse_conn,
    })
}

impl Mounted {
    /// The FUSE connection number (`/sys/fs/fuse/connections/N`) of this mount, if FUSE.
    pub fn fuse_conn(&self) -> Option<&str> {
        self.fuse_conn.as_deref()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let out = run_timeout(
            Command::new("umount").arg(&self.mnt),
            Duration::from_secs(60),
        );
        if !out.success() {
            eprintln!(
                "rcl-bench: umount {} failed: {}",
                self.mnt.display(),
                out.stderr.trim()
            );
            force_unmount(&self.mnt, self.fuse_conn.as_deref());
        }
        if let Some(pid) = self.server_pid {
            wait_gone(pid, Duration::from_secs(10));
        }
        let _ = fs::remove_dir_all(&self.state);
    }
}

/// Aborts the FUSE connection (if any) and lazily unmounts `mnt`.
pub fn force_unmount(mnt: &Path, conn: Option<&str>) {
    if let Some(c) = conn.map(str::to_string).or_else(|| fuse_connection(mnt)) {
        let _ = fs::write(format!("/sys/fs/fuse/connections/{c}/abort"), "1");
    }
    let _ = run_timeout(
        Command::new("umount").arg("-l").arg(mnt),
        Duration::from_secs(30),
    );
}

/// The FUSE connection of the mount at `mnt`: its device minor, read from mountinfo without
/// touching the (possibly hung) mount itself.
fn fuse_connection(mnt: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.to_str()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().skip_while(|x| **x != "-").nth(1)?;
        if f.get(4) == Some(&want) && fstype.starts_with("fuse") {
            f.get(2)?.split(':').nth(1).map(str::to_string)
        } else {
            None
        }
    })
}

/// The daemon serving `mnt`: the process whose command line names the mountpoint.
fn find_server(mnt: &Path) -> Option<i32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            if cmd.split(|b| *b == 0).any(|a| a == want) && pid != std::process::id() as i32 {
                return Some(pid);
            }
        }
    }
    None
}

/// Waits until `pid` has exited (a zombie counts as exited: its parent may not reap it).
fn wait_gone(pid: i32, limit: Duration) {
    let end = Instant::now() + limit;
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    while alive() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Peak resident set (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Watches one step at a time: if it runs past its deadline, the FUSE connection is aborted so
/// that the stuck system calls fail (ENOTCONN) instead of hanging the whole benchmark.
#[derive(Clone, Default)]
pub struct Watchdog {
    armed: Arc<Mutex<Option<(Instant, String)>>>,
}

impl Watchdog {
    /// Starts the watchdog thread.
    pub fn start() -> Self {
        let w = Watchdog::default();
        let armed = w.armed.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let mut g = armed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((deadline, conn)) = g.as_ref() {
                if Instant::now() > *deadline {
                    eprintln!("rcl-bench: step hung, aborting FUSE connection {conn}");
                    let _ = fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1");
                    *g = None;
                }
            }
        });
        w
    }

    /// Arms the watchdog for the FUSE connection of `m` (no-op for kernel mounts).
    pub fn arm(&self, m: &Mounted, limit: Duration) {
        if let Some(c) = m.fuse_conn() {
            *self.armed.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now() + limit, c.to_string()));
        }
    }

    /// Disarms it.
    pub fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
