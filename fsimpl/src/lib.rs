//! `fsimpl`: a userspace union filesystem over FUSE.
//!
//! Several read-only lower directories (the first is the top one) and an optional writable upper
//! directory are merged into one tree with the semantics of Linux kernel overlayfs: lookups walk
//! the upper layer then the lowers top-down, whiteouts hide names, opaque directories stop the
//! walk, and the first change to a lower file copies it up atomically. The upper layer is written
//! in kernel overlayfs's own on-disk format.
//!
//! This crate knows nothing about containers. Build an [`OverlayConfig`], make a [`UnionFs`]
//! from it and [`mount`] it:
//!
//! ```no_run
//! use fsimpl::{OverlayConfig, UnionFs};
//! let cfg = OverlayConfig::new(vec!["/layers/app".into(), "/layers/base".into()])
//!     .with_upper("/state/upper".into(), "/state/work".into());
//! let fs = UnionFs::new(cfg)?;
//! let session = fsimpl::mount(fs, std::path::Path::new("/mnt/merged"))?; // live from here
//! session.run()?; // serves until unmounted
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
mod copyup;
mod core;
mod dir;
mod dircache;
pub mod error;
mod fs;
mod layer;
pub mod mountinfo;
mod node;
mod ops;
pub mod options;
mod sys;
mod whiteout;
mod xattr;

pub use crate::core::UnionFs;
pub use config::{IdMapping, IdRange, OverlayConfig, Passthrough, WhiteoutFormat, XattrNamespace};
pub use error::Error;

use fuser::{Config, SessionACL};
use std::path::Path;

/// A mounted, not yet served union filesystem. Call [`fuser::Session::run`] to serve it; it
/// returns when the mount is unmounted (`umount`, `fusermount3 -u`).
pub type Session = fuser::Session<UnionFs>;

/// Mounts `fs` on `mountpoint` with the FUSE options its configuration calls for (suid, dev,
/// default_permissions, ro without an upper, allow_other, fsname) and completes the FUSE
/// handshake: when this returns `Ok`, the mount is live. Spawns no thread: a caller may still
/// fork afterwards.
///
/// rcl-fs calls mount(2) itself (type `fuse.rcl-fs`) and hands the /dev/fuse fd to fuser, so
/// that serving ends when the mount is unmounted and nothing is unmounted behind the user's
/// back: fuser's own mount path unmounts the *path* when a session ends, which would take away
/// a new mount made there in the meantime.
pub fn mount(fs: UnionFs, mountpoint: &Path) -> std::io::Result<Session> {
    use nix::mount::MsFlags;
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| std::io::Error::new(e.kind(), format!("/dev/fuse: {e}")))?;
    let dev = std::os::fd::OwnedFd::from(dev);
    let root_mode = nix::sys::stat::stat(mountpoint)?.st_mode;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        root_mode,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if fs.cfg.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = MsFlags::empty();
    if fs.cfg.is_readonly() {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some(fs.cfg.fsname.as_str()),
        mountpoint,
        Some("fuse.rcl-fs"),
        flags,
        Some(data.as_str()),
    )?;
    let mut config = Config::default();
    config.acl = if fs.cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(fs.cfg.threads.max(1));
    config.clone_fd = true;
    let acl = config.acl;
    let notifier = fs.notifier.clone();
    let session = fuser::Session::from_fd(fs, dev, acl, config).inspect_err(|_| {
        let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
    })?;
    let _ = notifier.set(session.notifier());
    Ok(session)
}
