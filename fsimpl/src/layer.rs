//! Layers: the opened root directories of the lower layers, the upper layer and the work dir,
//! and the small per-device index used to build inode numbers.

use crate::sys;
use parking_lot::RwLock;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// One layer's root directory.
#[derive(Debug)]
pub struct Layer {
    /// Directory fd of the layer's root (O_RDONLY|O_DIRECTORY).
    pub fd: OwnedFd,
    /// Device of the root.
    pub dev: u64,
}

impl Layer {
    /// Opens `path` as a layer root; errors name the role and path.
    pub fn open(role: &'static str, path: &Path) -> Result<Layer, crate::Error> {
        let err = |source| crate::Error::Layer {
            role,
            path: path.to_path_buf(),
            source,
        };
        let c = sys::cstr(path.as_os_str()).map_err(err)?;
        let fd = sys::open_c(&c, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(err)?;
        let st = sys::fstat(fd.as_raw_fd()).map_err(err)?;
        Ok(Layer { fd, dev: st.st_dev })
    }

    /// Raw fd of the root.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Maps device numbers to small indexes (1..=0xfffe) for inode number composition.
#[derive(Debug, Default)]
pub struct DevIndex {
    devs: RwLock<Vec<u64>>,
}

/// Bits of the real inode number kept in a composed FUSE inode number.
pub const INO_BITS: u32 = 48;

impl DevIndex {
    /// Index of `dev`, registering it on first sight; `None` when the table is full.
    pub fn index(&self, dev: u64) -> Option<u64> {
        if let Some(i) = self.devs.read().iter().position(|&d| d == dev) {
            return Some(i as u64 + 1);
        }
        let mut w = self.devs.write();
        if let Some(i) = w.iter().position(|&d| d == dev) {
            return Some(i as u64 + 1);
        }
        if w.len() >= 0xfffe {
            return None;
        }
        w.push(dev);
        Some(w.len() as u64)
    }

    /// The composed inode number for (dev, ino), if it fits.
    pub fn compose(&self, dev: u64, ino: u64) -> Option<u64> {
        if ino >> INO_BITS != 0 {
            return None;
        }
        let idx = self.index(dev)?;
        Some((idx << INO_BITS) | ino)
    }
}
