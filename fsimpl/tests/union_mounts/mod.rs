//! Union mounts for the fsimpl integration tests, in one place: build layer trees ([`Fixture`],
//! [`build`], [`put`]), mount them three ways, each behind a guard and bounded by timeouts, and
//! look inside only through subprocesses or threads bounded by a timeout ([`within`]):
//!
//! - [`Mounted`]: a mount made by a command, either kernel overlayfs (`mount -t overlay`, the
//!   reference) or the `rcl-fs` binary (a separate server process); see [`Imp`].
//! - [`InProcessMount`]: a mount served by this test process through the library
//!   (`fsimpl::mount` with an [`fsimpl::OverlayConfig`]), for tests that set config fields the
//!   command line does not reach.
//!
//! Guards: [`need!`] skips unless an [`Imp`] can mount here; [`need_fuse!`] skips unless FUSE is
//! usable (the in-process tests).
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fsimpl::{OverlayConfig, UnionFs};
use testkit::{run_timeout, MountGuard, Output};

/// Default limit for one step inside a mount.
pub const STEP: Duration = Duration::from_secs(30);

/// Limit for one shell script inside an [`InProcessMount`].
pub const IN_PROCESS_SCRIPT: Duration = Duration::from_secs(60);

/// Which implementation serves the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imp {
    /// Linux kernel overlayfs (`mount -t overlay`), the reference.
    Kernel,
    /// The `rcl-fs` program built from this workspace.
    RclFs,
}

/// Why `imp` cannot run here, if it cannot.
pub fn unavailable(imp: Imp) -> Option<String> {
    if !testkit::is_root() {
        return Some("mounting needs root (run as root, as CI does)".into());
    }
    match imp {
        Imp::Kernel => {
            let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            if fs.lines().any(|l| l.ends_with("\toverlay")) {
                None
            } else {
                // Loading the module may make it appear.
                let _ = run_timeout(Command::new("modprobe").arg("overlay"), STEP);
                let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
                (!fs.lines().any(|l| l.ends_with("\toverlay")))
                    .then(|| "kernel overlayfs is not available".to_string())
            }
        }
        Imp::RclFs => testkit::fuse_unavailable(),
    }
}

/// Skips the test (returns from the calling function) unless `imp` can mount here.
#[allow(unused_macros)]
macro_rules! need {
    ($imp:expr) => {
        if let Some(why) = crate::union_mounts::unavailable($imp) {
            testkit::skip!("{why}");
        }
    };
}

/// Skips the test unless FUSE is usable (all an [`InProcessMount`] needs).
#[allow(unused_macros)]
macro_rules! need_fuse {
    () => {
        if let Some(why) = testkit::fuse_unavailable() {
            testkit::skip!("{why}");
        }
    };
}

/// Runs `check(imp)`, or skips when `imp` cannot mount here (what [`both!`] calls).
pub fn run_check(check: fn(Imp), imp: Imp) {
    need!(imp);
    check(imp);
}

/// Generates `mod CHECK { fn kernel(); fn rclfs(); }` running `CHECK(Imp)` against both
/// implementations; `rclfs_ignore = "why"` marks the rcl-fs half ignored.
#[allow(unused_macros)]
macro_rules! both {
    ($check:ident) => {
        mod $check {
            #[test]
            fn kernel() {
                crate::union_mounts::run_check(super::$check, crate::union_mounts::Imp::Kernel);
            }
            #[test]
            fn rclfs() {
                crate::union_mounts::run_check(super::$check, crate::union_mounts::Imp::RclFs);
            }
        }
    };
    ($check:ident, rclfs_ignore = $why:literal) => {
        mod $check {
            #[test]
            fn kernel() {
                crate::union_mounts::run_check(super::$check, crate::union_mounts::Imp::Kernel);
            }
            #[test]
            #[ignore = $why]
            fn rclfs() {
                crate::union_mounts::run_check(super::$check, crate::union_mounts::Imp::RclFs);
            }
        }
    };
}

/// Layers of one test: lower layers (top first), upper, work, mountpoint, all in one temp dir.
pub struct Fixture {
    /// The temp dir holding everything (world-traversable).
    pub dir: tempfile::TempDir,
    /// Lower layers, top first.
    pub lowers: Vec<PathBuf>,
    /// The upper layer.
    pub upper: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// The mountpoint.
    pub mnt: PathBuf,
}

impl Fixture {
    /// Lower layers from descriptions (top first; see [`build`]), empty upper.
    pub fn new(lowers: &[&str]) -> Self {
        let dir = testkit::shared_tempdir();
        let root = dir.path().to_path_buf();
        let mut paths = Vec::new();
        for (i, desc) in lowers.iter().enumerate() {
            let p = root.join(format!("l{i}"));
            std::fs::create_dir(&p).unwrap();
            build(&p, desc);
            paths.push(p);
        }
        let upper = root.join("upper");
        let work = root.join("work");
        let mnt = root.join("mnt");
        for p in [&upper, &work, &mnt] {
            std::fs::create_dir(p).unwrap();
        }
        for p in [&upper, &mnt] {
            testkit::set_mode(p, 0o755);
        }
        Fixture {
            dir,
            lowers: paths,
            upper,
            work,
            mnt,
        }
    }

    /// Fills the upper layer from a description.
    pub fn with_upper(self, desc: &str) -> Self {
        build(&self.upper, desc);
        self
    }

    /// `lowerdir=...` value.
    pub fn lowerdir_opt(&self) -> String {
        let l: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("lowerdir={}", l.join(":"))
    }

    /// Full option string with upper and work.
    pub fn rw_opts(&self) -> String {
        format!(
            "{},upperdir={},workdir={}",
            self.lowerdir_opt(),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mounts read-write with `imp`; `kopts`/`ropts` are extra options for the kernel / rcl-fs.
    pub fn mount(&self, imp: Imp, kopts: &str, ropts: &str) -> Mounted {
        self.mount_with(imp, &self.rw_opts(), kopts, ropts)
    }

    /// Mounts without an upper (read-only).
    pub fn mount_ro(&self, imp: Imp) -> Mounted {
        self.mount_with(imp, &self.lowerdir_opt(), "", "")
    }

    /// Mounts with a base option string plus per-implementation extras.
    pub fn mount_with(&self, imp: Imp, base: &str, kopts: &str, ropts: &str) -> Mounted {
        let extra = match imp {
            Imp::Kernel => kopts,
            Imp::RclFs => ropts,
        };
        let opts = if extra.is_empty() {
            base.to_string()
        } else {
            format!("{base},{extra}")
        };
        mount_at(imp, &opts, &self.mnt)
    }

    /// Path of `rel` in the upper layer (on disk, safe to stat directly).
    pub fn up(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    /// Lower layer `i` (top first).
    pub fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }
}

/// Runs `script` with `sh FLAGS` after `cd` into `mnt` (`$M` = mountpoint), bounded by `limit`.
fn sh_in(mnt: &Path, flags: &str, script: &str, limit: Duration) -> Output {
    let full = format!("cd \"$M\" || exit 99\n{script}");
    run_timeout(Command::new("sh").arg(flags).arg(full).env("M", mnt), limit)
}

/// Mounts `opts` on `mnt` with `imp`; panics with the output if it fails.
pub fn mount_at(imp: Imp, opts: &str, mnt: &Path) -> Mounted {
    let out = match imp {
        Imp::Kernel => {
            // An unmounted overlay keeps its upper "in use" (refused by index=on) while a mount
            // namespace created meanwhile by any process on the machine still holds a copy:
            // retry for a while.
            let mut tries = 0;
            loop {
                let out = mount_kernel_overlay(opts, mnt, STEP);
                tries += 1;
                if out.success() || tries == 20 || testkit::is_mounted(mnt) {
                    break out;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Imp::RclFs => run_timeout(
            Command::new(testkit::workspace_bin("rcl-fs"))
                .arg("-o")
                .arg(opts)
                .arg(mnt),
            STEP,
        ),
    };
    // Guard first, so a mount that half-happened is undone too.
    let mut guard = MountGuard::new(mnt);
    let server = (imp == Imp::RclFs).then(|| server_pid(mnt)).flatten();
    if let Some(pid) = server {
        guard = guard.with_server(pid);
    }
    assert!(out.success(), "mount {imp:?} -o {opts} failed: {out:#?}");
    assert!(
        testkit::is_mounted(mnt),
        "{imp:?}: not mounted after success: {out:#?}"
    );
    Mounted {
        guard: Some(guard),
        mnt: mnt.to_path_buf(),
        imp,
        server,
    }
}

/// Runs `mount -t overlay overlay -o OPTS MNT` once, bounded by `limit`; the caller guards the
/// mountpoint (see [`mount_at`] for the retrying, guarded form).
pub fn mount_kernel_overlay(opts: &str, mnt: &Path, limit: Duration) -> Output {
    run_timeout(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", opts])
            .arg(mnt),
        limit,
    )
}

/// A live mount; unmounted (lazily) and its server killed when dropped.
pub struct Mounted {
    guard: Option<MountGuard>,
    /// The mountpoint.
    pub mnt: PathBuf,
    /// Who serves it.
    pub imp: Imp,
    /// The rcl-fs server's pid.
    pub server: Option<i32>,
}

impl Mounted {
    /// Runs `script` with `sh -c` after `cd` into the mount (`$M` = mountpoint); panics unless it
    /// succeeds; returns stdout.
    #[track_caller]
    pub fn sh(&self, script: &str) -> String {
        let out = self.try_sh(script);
        assert!(
            out.success(),
            "{:?}: script failed: {script}\n{out:#?}",
            self.imp
        );
        out.stdout
    }

    /// Like [`Mounted::sh`] but returns the output whatever happens.
    pub fn try_sh(&self, script: &str) -> Output {
        sh_in(&self.mnt, "-c", script, STEP)
    }

    /// Path inside the mount (only touch it through [`within`] or [`Mounted::sh`]).
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Unmounts with `umount` and waits for the server to exit.
    pub fn unmount(mut self) {
        let out = run_timeout(Command::new("umount").arg(&self.mnt), STEP);
        assert!(out.success(), "umount {}: {out:#?}", self.mnt.display());
        if let Some(pid) = self.server {
            assert!(
                wait_gone(pid, Duration::from_secs(20)),
                "rcl-fs server {pid} still running after umount"
            );
        }
        self.guard.take();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.guard.take());
    }
}

/// A union mount served by this test process through the library (`fsimpl::mount`), over a
/// [`Fixture`] with empty layers; [`InProcessMount::mount`] may be called again after
/// [`InProcessMount::unmount`]. Unmounted when dropped.
pub struct InProcessMount {
    fx: Fixture,
    session: Option<fuser::BackgroundSession>,
    guard: Option<MountGuard>,
}

impl std::ops::Deref for InProcessMount {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.fx
    }
}

impl InProcessMount {
    /// `n` empty lower layers, an empty upper, work dir and mountpoint; nothing mounted yet
    /// (fill the lowers, then [`InProcessMount::mount`]).
    pub fn layers(n: usize) -> Self {
        InProcessMount {
            fx: Fixture::new(&vec![""; n]),
            session: None,
            guard: None,
        }
    }

    /// A default config (with upper, two server threads) for these layers.
    pub fn config(&self) -> OverlayConfig {
        config_for(self.lowers.clone(), self.upper.clone(), self.work.clone())
    }

    /// Mounts with `cfg`, served by threads of this process.
    pub fn mount(&mut self, cfg: OverlayConfig) {
        let guard = MountGuard::new(&self.mnt);
        let s = library_mount(cfg, &self.mnt);
        self.session = Some(s.spawn().expect("spawn"));
        self.guard = Some(guard);
    }

    /// Unmounts (lazily) and waits up to 10 s for the server threads to end.
    pub fn unmount(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !s.guard.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if s.guard.is_finished() {
                let _ = s.join();
            } else {
                std::mem::forget(s);
            }
        }
        self.guard = None;
    }

    /// Runs `script` with `sh -e` in the mount; panics with its output on failure; returns
    /// stdout.
    #[track_caller]
    pub fn sh(&self, script: &str) -> String {
        sh_ok_in(&self.mnt, script)
    }

    /// Runs `script` in the mount: whether it succeeded, and its stdout then stderr.
    pub fn try_sh(&self, script: &str) -> (bool, String) {
        let out = sh_in(&self.mnt, "-c", script, IN_PROCESS_SCRIPT);
        (out.success(), format!("{}{}", out.stdout, out.stderr))
    }
}

/// The config an in-process test starts from: `lowers` (top first), an upper and work dir, two
/// server threads.
pub fn config_for(lowers: Vec<PathBuf>, upper: PathBuf, work: PathBuf) -> OverlayConfig {
    let mut c = OverlayConfig::new(lowers).with_upper(upper, work);
    c.threads = 2;
    c
}

/// Builds a [`UnionFs`] from `cfg` and mounts it on `mnt` through the library, not served yet
/// (`run` or `spawn` the session); panics on error. The caller guards `mnt`.
pub fn library_mount(cfg: OverlayConfig, mnt: &Path) -> fsimpl::Session {
    let fs = UnionFs::new(cfg).expect("UnionFs::new");
    fsimpl::mount(fs, mnt).unwrap_or_else(|e| panic!("fsimpl::mount on {}: {e}", mnt.display()))
}

/// Arguments that make this test binary, run again as a child, run only the test `name` (a body
/// that does its work when its environment variable is set and nothing otherwise).
pub fn only_test(name: &str) -> [&str; 4] {
    ["--exact", name, "--nocapture", "--test-threads=1"]
}

/// Runs `script` with `sh -e` in `dir` (a mount served in-process, or by this process's child),
/// bounded by [`IN_PROCESS_SCRIPT`]; panics with its output on failure; returns stdout.
#[track_caller]
pub fn sh_ok_in(dir: &Path, script: &str) -> String {
    let out = sh_in(dir, "-ec", script, IN_PROCESS_SCRIPT);
    assert!(out.success(), "script failed:\n{script}\n{out:#?}");
    out.stdout
}

impl Drop for InProcessMount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The pid of the rcl-fs server serving `mnt` (found by its command line).
pub fn server_pid(mnt: &Path) -> Option<i32> {
    let want = mnt.as_os_str().as_bytes();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_rclfs = args
            .first()
            .is_some_and(|a| Path::new(std::ffi::OsStr::from_bytes(a)).ends_with("rcl-fs"));
        if is_rclfs && args.contains(&want) && !is_zombie(pid) {
            return Some(pid);
        }
    }
    None
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
        })
        .unwrap_or(true)
}

/// Waits until `pid` has exited (gone or a zombie).
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if is_zombie(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until `mnt` is a mountpoint (polling the mount table, never the mount itself).
pub fn wait_mounted(mnt: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if testkit::is_mounted(mnt) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs `f` on a thread and panics if it does not finish within [`STEP`] (a hung FUSE request
/// then fails the test instead of hanging it; the thread is left behind).
#[track_caller]
pub fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(STEP) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("step timed out after {STEP:?}"),
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A libc return value: the count when not negative, else the errno.
fn counted(r: isize) -> Result<usize, i32> {
    usize::try_from(r).map_err(|_| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// `lgetxattr`: the value, or the errno.
pub fn get_xattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    let (b, len) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: valid C strings and a buffer of `len` bytes.
    let n = counted(unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), b, len) })?;
    buf.truncate(n);
    Ok(buf)
}

/// `lsetxattr`; Err(errno) on failure.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: valid C strings and a value of `len` bytes.
    counted(unsafe { libc::lsetxattr(cp.as_ptr(), cn.as_ptr(), v, len, 0) } as isize).map(drop)
}

/// `lremovexattr`; Err(errno) on failure.
pub fn remove_xattr(p: &Path, name: &str) -> Result<(), i32> {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    counted(unsafe { libc::lremovexattr(cp.as_ptr(), cn.as_ptr()) } as isize).map(drop)
}

/// `llistxattr`: the names.
pub fn list_xattr(p: &Path) -> Result<Vec<String>, i32> {
    let cp = cpath(p);
    let mut buf = vec![0u8; 65536];
    let (b, len) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: valid C string and a buffer of `len` bytes.
    let n = counted(unsafe { libc::llistxattr(cp.as_ptr(), b, len) })?;
    buf.truncate(n);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`; Err(errno) on failure.
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    use nix::fcntl::{RenameFlags, AT_FDCWD};
    nix::fcntl::renameat2(
        AT_FDCWD,
        from,
        AT_FDCWD,
        to,
        RenameFlags::from_bits_retain(flags),
    )
    .map_err(|e| e as i32)
}

/// `mknod` of a char device (0/0 is a whiteout).
pub fn mknod_chr(p: &Path, major: u64, minor: u64) {
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

/// Writes `data` (as is, no newline added) at `path`, creating parents.
pub fn put(path: &Path, data: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// True when `path` (on disk) is a kernel-format whiteout (char 0/0).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}

/// Builds a tree under `root` from a description, one entry per line (parents are created):
///
/// - `d PATH [MODE]` directory; `f PATH [TEXT...]` file with TEXT and a newline (none if no text)
/// - `l PATH TARGET` symlink; `h PATH TARGET` hard link to TARGET (relative to root)
/// - `w PATH` whiteout (char 0/0); `c PATH MAJ MIN` char device; `p PATH` fifo; `s PATH` socket
/// - `o PATH` / `ou PATH` directory marked opaque by `trusted.` / `user.overlay.opaque=y`
/// - `x PATH NAME VALUE` xattr; `m PATH MODE` chmod; `u PATH UID GID` lchown
/// - `t PATH EPOCH` set atime and mtime; `big PATH MIB` file of MIB MiB of non-zero data
pub fn build(root: &Path, desc: &str) {
    use std::os::unix::fs::PermissionsExt;
    for line in desc.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ' ');
        let kind = parts.next().unwrap();
        let path = root.join(parts.next().unwrap_or_else(|| panic!("bad line {line}")));
        let rest = parts.next().unwrap_or("");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        match kind {
            "d" => {
                std::fs::create_dir_all(&path).unwrap();
                if !rest.is_empty() {
                    let mode = u32::from_str_radix(rest, 8).unwrap();
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                }
            }
            "f" => {
                let text = if rest.is_empty() {
                    String::new()
                } else {
                    format!("{rest}\n")
                };
                std::fs::write(&path, text).unwrap();
            }
            "l" => std::os::unix::fs::symlink(rest, &path).unwrap(),
            "h" => std::fs::hard_link(root.join(rest), &path).unwrap(),
            "w" => mknod_chr(&path, 0, 0),
            "c" => {
                let (a, b) = rest.split_once(' ').unwrap();
                mknod_chr(&path, a.parse().unwrap(), b.parse().unwrap());
            }
            "p" => {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }
            "s" => drop(std::os::unix::net::UnixListener::bind(&path).unwrap()),
            "o" | "ou" => {
                std::fs::create_dir_all(&path).unwrap();
                let ns = if kind == "o" { "trusted" } else { "user" };
                set_xattr(&path, &format!("{ns}.overlay.opaque"), b"y").unwrap();
            }
            "x" => {
                let (n, v) = rest.split_once(' ').unwrap();
                set_xattr(&path, n, v.as_bytes()).unwrap();
            }
            "m" => std::fs::set_permissions(
                &path,
                std::fs::Permissions::from_mode(u32::from_str_radix(rest, 8).unwrap()),
            )
            .unwrap(),
            "u" => {
                let (a, b) = rest.split_once(' ').unwrap();
                std::os::unix::fs::lchown(
                    &path,
                    Some(a.parse().unwrap()),
                    Some(b.parse().unwrap()),
                )
                .unwrap();
            }
            "t" => {
                let t = nix::sys::time::TimeSpec::new(rest.parse().unwrap(), 0);
                nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &path,
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .unwrap();
            }
            "big" => {
                use std::io::Write;
                let mib: usize = rest.parse().unwrap();
                let mut f = std::fs::File::create(&path).unwrap();
                let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251 + 1) as u8).collect();
                for _ in 0..mib {
                    f.write_all(&chunk).unwrap();
                }
            }
            _ => panic!("unknown layer entry kind in: {line}"),
        }
    }
}

/// `stat -c FORMAT` of a path on disk (not in a mount).
pub fn disk_stat(p: &Path, fmt: &str) -> String {
    let out = run_timeout(Command::new("stat").arg("-c").arg(fmt).arg(p), STEP);
    assert!(out.success(), "stat {}: {out:#?}", p.display());
    out.stdout.trim().to_string()
}
