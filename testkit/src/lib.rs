//! Test support shared by rcl's integration tests.
//!
//! - [`skip!`]: a test that cannot run here says why on stderr with a `RCL-SKIP` marker line;
//!   `.ci/run` counts those as skipped, never as passed.
//! - [`MountGuard`]: lazily unmounts a mountpoint when dropped, even when the test panics.
//! - [`run_timeout`]: runs a command and kills it (and its process group) at a deadline, so a
//!   hung FUSE server fails one test instead of hanging CI.
//! - [`test_user`]: an unprivileged user (created on first use) for rootless tests.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Name of the unprivileged user the rootless tests run as.
pub const TEST_USER: &str = "rcl-test";

/// Marks the current test as skipped and returns from the test function: see [`record_skip`].
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::record_skip(module_path!(), &format!($($arg)*));
        return;
    }};
}

/// Records a skip: prints `RCL-SKIP <where>: <reason>` on stderr and, when `RCL_SKIP_LOG` names
/// a file, appends the same line there (cargo test hides the output of tests that return).
pub fn record_skip(place: &str, reason: &str) {
    let test = std::thread::current().name().unwrap_or(place).to_string();
    let line = format!("RCL-SKIP {test}: {reason}\n");
    eprint!("{line}");
    if let Some(log) = std::env::var_os("RCL_SKIP_LOG") {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    }
}

/// True when running as root in the initial user namespace's sense (euid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why FUSE cannot be used here, or `None` when /dev/fuse is usable by root.
pub fn fuse_unavailable() -> Option<String> {
    if !is_root() {
        return Some("tests that mount need root (run as root, as CI does)".into());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/fuse cannot be opened: {e}")),
    }
}

/// Output of a command run with [`run_timeout`].
#[derive(Debug)]
pub struct Output {
    /// Exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Output {
    /// True when the command exited 0 before the deadline.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Exit code, if it exited (not signalled, not timed out).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with the command's output unless it succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "command failed: {self:#?}");
        self
    }
}

/// Runs `cmd` (stdin null, stdout and stderr captured) in its own process group and kills the
/// whole group if it is still running after `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Pipes may be held open by grandchildren that escaped the group; do not wait forever.
    let stdout = join_for(t_out, Duration::from_secs(2));
    let stderr = join_for(t_err, Duration::from_secs(2));
    if status.is_none() {
        eprintln!("TIMEOUT after {timeout:?}: {cmd:?}");
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn join_for(t: std::thread::JoinHandle<Vec<u8>>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if t.is_finished() {
        String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned()
    } else {
        String::from("<output not closed>")
    }
}

/// `sh -c SCRIPT` with a timeout.
pub fn sh(script: &str, timeout: Duration) -> Output {
    run_timeout(Command::new("sh").arg("-c").arg(script), timeout)
}

/// Unmounts its path (lazily, so a busy or dead FUSE mount cannot block) when dropped, and
/// kills the server process if one was registered.
#[derive(Debug)]
pub struct MountGuard {
    path: PathBuf,
    server_pid: Option<i32>,
}

impl MountGuard {
    /// Guards the mount at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MountGuard {
            path: path.into(),
            server_pid: None,
        }
    }

    /// Also kill this process (the FUSE server) after unmounting.
    pub fn with_server(mut self, pid: i32) -> Self {
        self.server_pid = Some(pid);
        self
    }

    /// The guarded mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(pid) = self.server_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// True when `path` is a mountpoint in this mount namespace (read from /proc/self/mountinfo,
/// without touching the path itself, which may be a dead FUSE mount).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A temporary directory that every user can traverse (mode 0755), for tests that hand paths to
/// the unprivileged test user. Removed on drop.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rcl-test-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    set_mode(dir.path(), 0o755);
    dir
}

/// chmod helper for tests.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The unprivileged test user's (uid, gid), created (with a /etc/subuid and /etc/subgid range)
/// if it does not exist yet. `Err` says why it cannot be had (not root, no useradd).
pub fn test_user() -> Result<(u32, u32), String> {
    if let Some(ids) = lookup_user(TEST_USER) {
        return Ok(ids);
    }
    if !is_root() {
        return Err(format!(
            "user {TEST_USER} does not exist and only root can create it"
        ));
    }
    let out = run_timeout(
        Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
            .arg(TEST_USER),
        Duration::from_secs(30),
    );
    // Another test may have created it concurrently: look again before failing.
    if let Some(ids) = lookup_user(TEST_USER) {
        ensure_subid_range("/etc/subuid");
        ensure_subid_range("/etc/subgid");
        return Ok(ids);
    }
    Err(format!("useradd {TEST_USER} failed: {}", out.stderr.trim()))
}

fn ensure_subid_range(file: &str) {
    let current = std::fs::read_to_string(file).unwrap_or_default();
    if current
        .lines()
        .any(|l| l.starts_with(&format!("{TEST_USER}:")))
    {
        return;
    }
    let line = format!("{TEST_USER}:300000:65536\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// A command that runs `program` as the unprivileged test user (via setpriv, which util-linux
/// ships everywhere), with a clean environment.
pub fn as_test_user(program: impl AsRef<OsStr>) -> Command {
    let (uid, gid) = test_user().expect("test user");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/tmp");
    // Keep the child from inheriting a parent-death-unaware process group of ours.
    // SAFETY: setsid is async-signal-safe and only affects the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd
}

/// Builds (once per test binary) and returns the path of a workspace binary, copied to a
/// world-readable place so the unprivileged test user can run it too.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-hash -> target/<profile>/<name>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` first (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}
