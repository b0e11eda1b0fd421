//! Shared helpers for the cgroup tests: unique names, a guard that destroys a group even when
//! a test fails, and processes started behind a gate so they join a group before they run.

#![allow(dead_code)]

use rcl::cgroup::Cgroup;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A container name unique to this test and process.
pub fn unique(test: &str) -> String {
    format!("t-{test}-{}", std::process::id())
}

/// Destroys the group when dropped, so a failing test leaves no group or process behind.
pub struct CgGuard(pub Option<Cgroup>);

impl CgGuard {
    /// The guarded group.
    pub fn cg(&self) -> &Cgroup {
        self.0.as_ref().expect("cgroup already destroyed")
    }

    /// Destroys now and returns the result.
    pub fn destroy(&mut self) -> anyhow::Result<()> {
        self.0.take().expect("cgroup already destroyed").destroy()
    }
}

impl Drop for CgGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            if let Err(e) = cg.destroy() {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

/// A `sh` script started behind a gate: it waits on stdin until [`Gated::release`], so it can be
/// moved into a group first. Its stdout and stderr go to files. Killed when dropped.
pub struct Gated {
    pub child: Child,
    gate: Option<ChildStdin>,
    out: tempfile::NamedTempFile,
    err: tempfile::NamedTempFile,
}

impl Gated {
    /// Starts `sh -c SCRIPT` held at the gate.
    pub fn sh(script: &str) -> Gated {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("read _ && exec sh -c \"$0\"").arg(script);
        Gated::spawn(cmd)
    }

    /// Starts `cmd` (which must read one line from stdin before doing anything).
    pub fn spawn(mut cmd: Command) -> Gated {
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        cmd.stdin(Stdio::piped())
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .process_group(0);
        let mut child = cmd.spawn().expect("spawn");
        let gate = child.stdin.take();
        Gated {
            child,
            gate,
            out,
            err,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lets the script run.
    pub fn release(&mut self) {
        let mut g = self.gate.take().expect("released twice");
        g.write_all(b"go\n").unwrap();
    }

    /// Waits up to `limit` for the script to exit; `None` when it is still running.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.err.path()).unwrap_or_default()
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let pg = nix::unistd::Pid::from_raw(-self.pid());
        let _ = nix::sys::signal::kill(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a cgroup file, trimmed.
pub fn read(dir: &Path, file: &str) -> String {
    let p = dir.join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The value of `key` in a "key value" file (pids.events, memory.oom_control, cpu.stat).
pub fn keyed(dir: &Path, file: &str, key: &str) -> u64 {
    let text = read(dir, file);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no '{key}' in {}: {text}", dir.join(file).display()))
}

/// Pids listed in a cgroup.procs (or tasks) file.
pub fn listed(dir: &Path, file: &str) -> Vec<i32> {
    read(dir, file)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Why root cgroup tests cannot run here, if they cannot.
pub fn root_unavailable() -> Option<String> {
    if !testkit::is_root() {
        return Some("cgroup tests that create groups need root".into());
    }
    let host = rcl::cgroup::CgroupHost::detect().ok()?;
    if host.layout() == rcl::cgroup::Layout::None {
        return Some("no cgroup filesystem is mounted".into());
    }
    None
}

/// A copy of this test binary that the unprivileged test user can run, in a shared temp dir.
pub fn user_copy_of_self(dir: &Path) -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let copy = dir.join(me.file_name().unwrap());
    std::fs::copy(&me, &copy).unwrap();
    testkit::set_mode(&copy, 0o755);
    copy
}

/// True when `pid` is gone or a zombie.
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}
