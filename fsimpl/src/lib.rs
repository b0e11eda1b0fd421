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
pub mod error;
pub mod options;

pub use config::{IdMapping, IdRange, OverlayConfig, Passthrough, WhiteoutFormat, XattrNamespace};
pub use error::Error;

use std::path::Path;

/// The union filesystem: implements [`fuser::Filesystem`].
pub struct UnionFs {
    _private: (),
}

impl UnionFs {
    /// Opens the layers named by `cfg`, checks them (they exist and are directories; upper and
    /// work are on one filesystem), cleans leftovers of an interrupted copy-up out of the work
    /// directory, and returns a filesystem ready to mount. Errors name the path at fault.
    pub fn new(cfg: OverlayConfig) -> Result<Self, Error> {
        let _ = cfg;
        todo!("union filesystem core")
    }
}

impl fuser::Filesystem for UnionFs {}

/// A mounted, not yet served union filesystem. Call [`fuser::Session::run`] to serve it; it
/// returns when the mount is unmounted (`umount`, `fusermount3 -u`).
pub type Session = fuser::Session<UnionFs>;

/// Mounts `fs` on `mountpoint` with the FUSE options its configuration calls for (suid, dev,
/// default_permissions, ro without an upper, allow_other, fsname) and completes the FUSE
/// handshake: when this returns `Ok`, the mount is live. Spawns no thread: a caller may still
/// fork afterwards.
pub fn mount(fs: UnionFs, mountpoint: &Path) -> std::io::Result<Session> {
    let _ = (fs, mountpoint);
    todo!("mount")
}
