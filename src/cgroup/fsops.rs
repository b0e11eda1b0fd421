//! Small helpers over cgroup files: every error names the file at fault.

use anyhow::Context;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// Reads a cgroup file, trimmed.
pub(crate) fn read_trim(path: &Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().to_string())
}

/// Reads a cgroup file holding one number ("max" reads as `None`).
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `value` to a cgroup file in one write(2), as the kernel expects.
pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Writes `value` to a cgroup file; the error names the value and the file.
pub(crate) fn write_value(path: &Path, value: &str) -> anyhow::Result<()> {
    write_raw(path, value).with_context(|| format!("writing '{value}' to {}", path.display()))
}

/// True when this process may write `path` (access(2) with W_OK, which also sees a read-only
/// mount).
pub(crate) fn writable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// True for errors that mean "not allowed" rather than "broken".
pub(crate) fn is_permission(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}

/// Process ids listed in a `cgroup.procs` file; a missing file (the cgroup is gone) is empty.
pub(crate) fn read_procs(path: &Path) -> anyhow::Result<Vec<i32>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// True when `pid` is a zombie (exited, waiting for its parent to reap it) or already gone.
pub(crate) fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the last ')' (the command name may contain one).
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

/// Removes a cgroup directory; already gone is fine. Retries while the kernel still reports it
/// busy (exiting tasks) until `deadline`.
pub(crate) fn rmdir_retry(dir: &Path, deadline: Instant) -> anyhow::Result<()> {
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                let left = read_procs(&dir.join("cgroup.procs")).unwrap_or_default();
                return Err(e).with_context(|| {
                    format!(
                        "removing cgroup {} (processes still in it: {left:?})",
                        dir.display()
                    )
                });
            }
        }
    }
}

/// Polls `done` every 5 ms until it returns true or `limit` passes; returns its last answer.
pub(crate) fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
