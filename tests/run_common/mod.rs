//! Shared helpers for the `rcl run` integration tests: a busybox rootfs in two layers, spec
//! files, running rcl as root or as the unprivileged test user, and leftover checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use testkit::Output;

/// How long one rcl run may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Who runs rcl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// root (no user namespace unless asked).
    Root,
    /// The unprivileged test user (rootless, with a /etc/subuid range).
    User,
    /// A uid with no passwd entry and no /etc/subuid range (rootless with a single-id map).
    Unmapped,
}

/// The uid and gid of [`As::Unmapped`].
pub const UNMAPPED: u32 = 54321;

impl As {
    /// The caller's (uid, gid), `None` for root.
    pub fn ids(self) -> Option<(u32, u32)> {
        match self {
            As::Root => None,
            As::User => Some(testkit::test_user().unwrap()),
            As::Unmapped => Some((UNMAPPED, UNMAPPED)),
        }
    }
}

/// A test environment: a busybox rootfs (layers `base` and `app`), a home with XDG dirs for
/// the caller, and spec files.
pub struct Env {
    /// Temp dir holding everything (readable by the test user).
    pub dir: tempfile::TempDir,
    /// Who runs rcl.
    pub who: As,
    /// Unique container name of this test.
    pub name: String,
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Why the runtime cannot be tested here, if it cannot.
pub fn unavailable(who: As) -> Option<String> {
    if let Some(why) = testkit::fuse_unavailable() {
        return Some(why);
    }
    if busybox().is_none() {
        return Some("busybox-static is not installed (apt-get install busybox-static)".into());
    }
    if who != As::Root {
        if let Err(e) = testkit::test_user() {
            return Some(e);
        }
        let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
        if max.trim() == "0" {
            return Some("user namespaces are disabled (user.max_user_namespaces = 0)".into());
        }
    }
    None
}

/// Skips the calling test when the runtime cannot be tested here.
#[macro_export]
macro_rules! need {
    ($who:expr) => {
        if let Some(why) = run_common::unavailable($who) {
            testkit::skip!("{why}");
        }
    };
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

impl Env {
    /// A fresh environment for container `name` run by `who`.
    pub fn new(who: As, name: &str) -> Env {
        let dir = testkit::shared_tempdir();
        let base = dir.path().join("layers/base");
        for d in [
            "bin",
            "proc",
            "dev",
            "sys",
            "etc",
            "tmp",
            "root",
            "home/user",
        ] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        testkit::set_mode(&base.join("tmp"), 0o1777);
        std::fs::copy(busybox().unwrap(), base.join("bin/busybox")).unwrap();
        // The host's copy: executing the fresh copy could race with another test's fork
        // (ETXTBSY).
        let list = Command::new(busybox().unwrap())
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = symlink("busybox", base.join("bin").join(applet));
            }
        }
        std::fs::write(
            base.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            base.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n",
        )
        .unwrap();
        let app = dir.path().join("layers/app");
        std::fs::create_dir_all(app.join("etc")).unwrap();
        std::fs::write(app.join("app.txt"), "hello from the app layer\n").unwrap();
        std::fs::write(app.join("etc/motd"), "app motd\n").unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("run")).unwrap();
        std::fs::create_dir_all(home.join("data")).unwrap();
        testkit::set_mode(&home.join("run"), 0o700);
        if let Some((uid, gid)) = who.ids() {
            // A rootless user's layers are their own files.
            chown_tree(&home, uid, gid);
            chown_tree(&dir.path().join("layers"), uid, gid);
        }
        Env {
            dir,
            who,
            name: format!(
                "{name}-{}",
                match who {
                    As::Root => "root",
                    As::User => "user",
                    As::Unmapped => "single",
                }
            ),
        }
    }

    /// Path inside the environment.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A directory owned by the caller (for uppers and bind sources).
    pub fn owned_dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        if let Some((uid, gid)) = self.who.ids() {
            chown_tree(&p, uid, gid);
        }
        p
    }

    /// Writes a spec with the two layers, this test's name, and `body` (TOML tables).
    pub fn spec(&self, command: &str, body: &str) -> PathBuf {
        self.spec_with("", command, body)
    }

    /// Like [`Env::spec`] with extra `[rootfs]` keys.
    pub fn spec_with(&self, rootfs: &str, command: &str, body: &str) -> PathBuf {
        let p = self.path(&format!("{}.toml", self.name));
        let text = format!(
            "name = {:?}\n[rootfs]\nlayers = [\"layers/app\", \"layers/base\"]\n{}\n\
             [process]\ncommand = [\"/bin/sh\", \"-c\", {:?}]\n{}\n",
            self.name, rootfs, command, body
        );
        std::fs::write(&p, text).unwrap();
        testkit::set_mode(&p, 0o644);
        p
    }

    /// Writes a spec from complete text (the name and layers are up to the caller).
    pub fn spec_text(&self, text: &str) -> PathBuf {
        let p = self.path(&format!("{}.toml", self.name));
        std::fs::write(&p, text).unwrap();
        testkit::set_mode(&p, 0o644);
        p
    }

    /// The rcl command for this environment (as root or as the test user).
    pub fn command(&self) -> Command {
        let bin = testkit::workspace_bin("rcl");
        let mut cmd = match self.who {
            As::Root => {
                let mut c = Command::new(&bin);
                c.env_clear().env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                );
                c
            }
            As::User if fuse_open_to_all() => testkit::as_test_user(&bin),
            _ => self.user_with_private_fuse(&bin),
        };
        cmd.env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("home/run"))
            .env("XDG_DATA_HOME", self.path("home/data"))
            .current_dir(self.dir.path());
        cmd
    }

    /// Distributions make /dev/fuse 0666; where it is root-only (no udev rule on this machine),
    /// run rcl as the test user in a private mount namespace where a node of its own is bound
    /// over /dev/fuse. The host's /dev/fuse is left alone.
    fn user_with_private_fuse(&self, bin: &Path) -> Command {
        let (uid, gid) = self.who.ids().unwrap();
        let node = self.path("home/fuse");
        if !node.exists() {
            nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(10, 229),
            )
            .expect("mknod fuse");
            std::os::unix::fs::chown(&node, Some(uid), Some(gid)).unwrap();
        }
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind \"$RCL_TEST_FUSE\" /dev/fuse && \
                 exec setpriv --reuid={uid} --regid={gid} --clear-groups -- \"$0\" \"$@\""
            ))
            .arg(bin)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("RCL_TEST_FUSE", &node);
        // SAFETY: setsid is async-signal-safe and only affects the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd
    }

    /// Runs `rcl ARGS` to completion (with a timeout).
    pub fn rcl(&self, args: &[&str]) -> Output {
        let out = testkit::run_timeout(self.command().args(args), TIMEOUT);
        assert!(out.status.is_some(), "rcl timed out: {out:#?}");
        out
    }

    /// `rcl run SPEC`.
    pub fn run(&self, spec: &Path) -> Output {
        self.rcl(&["run", spec.to_str().unwrap()])
    }

    /// Runs `rcl ARGS` in the background, returns once a stdout line equals `marker`.
    pub fn spawn_until(&self, args: &[&str], marker: &str) -> Running {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.who == As::Root {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().expect("spawn rcl");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let hit = l == marker;
                    lines.push(l);
                    if hit {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                        let _ = child.kill();
                        let out = child.wait_with_output().unwrap();
                        panic!(
                            "marker {marker:?} never came; stdout {lines:?}; stderr {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "rcl stdout closed before {marker:?}: {lines:?}; stderr {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        Running { child, rx, lines }
    }

    /// Asserts that nothing of this test's containers is left: state dirs, cgroups, mounts,
    /// processes.
    pub fn assert_clean(&self) {
        let prefix = format!("{}-", self.name);
        let state = match self.who {
            As::Root => PathBuf::from("/run/rcl"),
            _ => self.path("home/run/rcl"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&state) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        left.push(format!("state dir {}", e.path().display()));
                    }
                }
            }
            for cg in cgroup_dirs(&prefix) {
                left.push(format!("cgroup {}", cg.display()));
            }
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            for l in info.lines() {
                if l.contains(&prefix) {
                    left.push(format!("mount {l}"));
                }
            }
            for pid in processes_with(&self.name) {
                left.push(format!("process {pid}"));
            }
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("left behind: {left:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// True when /dev/fuse is readable and writable by every user.
pub fn fuse_open_to_all() -> bool {
    std::fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

/// rcl cgroup directories whose name starts with `prefix`.
pub fn cgroup_dirs(prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    let mut roots: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for r in roots {
        if let Ok(rd) = std::fs::read_dir(r.join("rcl")) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

/// Pids of processes whose command line or environment mentions `marker` (the containers'
/// commands carry their test's unique name).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // rcl itself (still exiting) names the spec file; the container's processes run
        // commands that embed the marker.
        if text.contains(marker) && !text.contains("cargo") {
            out.push(pid);
        }
    }
    out
}

/// A running rcl started by [`Env::spawn_until`].
pub struct Running {
    /// The rcl process.
    pub child: Child,
    rx: std::sync::mpsc::Receiver<String>,
    /// Stdout lines read so far.
    pub lines: Vec<String>,
}

impl Running {
    /// Sends `sig` to rcl.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits (with a timeout) for rcl to exit; returns its exit code and all stdout lines.
    pub fn wait(mut self) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("rcl did not exit; stdout so far {:?}", self.lines);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.rx.recv_timeout(Duration::from_millis(500)) {
            self.lines.push(l);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (
            std::os::unix::process::ExitStatusExt::signal(&status)
                .map(|s| 128 + s)
                .or(status.code()),
            self.lines,
            err,
        )
    }
}

/// Makes `p` world-readable and traversable.
pub fn open_up(p: &Path) {
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
}
