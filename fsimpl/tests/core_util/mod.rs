//! Shared helpers for the fscore integration tests: mount in-process, run shell checks with
//! timeouts, inspect the layers directly.
#![allow(dead_code)]

use fsimpl::{OverlayConfig, UnionFs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A mounted union fs over temp dirs.
pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
    session: Option<fuser::BackgroundSession>,
    guard: Option<testkit::MountGuard>,
}

impl Mounted {
    /// Creates `n` lower dirs, an upper and a work dir; `populate` fills the lowers first.
    pub fn layers(n: usize) -> Mounted {
        let dir = testkit::shared_tempdir();
        let lowers: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("l{i}"))).collect();
        for l in &lowers {
            std::fs::create_dir(l).unwrap();
        }
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        let mnt = dir.path().join("mnt");
        for d in [&upper, &work, &mnt] {
            std::fs::create_dir(d).unwrap();
        }
        Mounted {
            dir,
            lowers,
            upper,
            work,
            mnt,
            session: None,
            guard: None,
        }
    }

    /// A default config (with upper) for these layers.
    pub fn config(&self) -> OverlayConfig {
        let mut c = OverlayConfig::new(self.lowers.clone())
            .with_upper(self.upper.clone(), self.work.clone());
        c.threads = 2;
        c
    }

    /// Mounts with `cfg`.
    pub fn mount(&mut self, cfg: OverlayConfig) {
        let fs = UnionFs::new(cfg).expect("UnionFs::new");
        let guard = testkit::MountGuard::new(&self.mnt);
        let s = fsimpl::mount(fs, &self.mnt).expect("mount");
        self.session = Some(s.spawn().expect("spawn"));
        self.guard = Some(guard);
    }

    /// Unmounts (and waits for the server to end).
    pub fn unmount(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !s.guard.is_finished() && std::time::Instant::now() < deadline {
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

    /// Runs a shell script with cwd = the mountpoint; panics with its output on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = testkit::run_timeout(
            std::process::Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&self.mnt),
            Duration::from_secs(60),
        );
        assert!(out.success(), "script failed:\n{script}\n{out:#?}");
        out.stdout
    }

    /// Runs a shell script in the mount and returns whether it succeeded, and its output.
    pub fn try_sh(&self, script: &str) -> (bool, String) {
        let out = testkit::run_timeout(
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(&self.mnt),
            Duration::from_secs(60),
        );
        (out.success(), format!("{}{}", out.stdout, out.stderr))
    }

    pub fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Writes `data` at `path`, creating parents.
pub fn put(path: &Path, data: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// True when `path` is a kernel-format whiteout (char 0/0).
pub fn is_whiteout(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}

/// Reads xattr `name` of `path` (no follow).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// Skips the test unless FUSE is usable.
#[macro_export]
macro_rules! need_fuse {
    () => {
        if let Some(why) = testkit::fuse_unavailable() {
            testkit::skip!("{why}");
        }
    };
}

/// Runs `f` (which touches the mount) on a thread and panics if it takes over 30 s, so a hung
/// server fails the test instead of hanging it.
pub fn timed<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("filesystem call timed out or panicked")
}

/// setxattr (no follow) as an io::Result.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Lists xattr names (no follow).
pub fn list_xattr(path: &Path) -> Vec<String> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Vec::new();
    }
    buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// renameat2 with flags, as an io::Result.
pub fn rename2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let a = std::ffi::CString::new(from.as_os_str().as_encoded_bytes()).unwrap();
    let b = std::ffi::CString::new(to.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
