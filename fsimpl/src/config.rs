//! What a union mount is made of: its layers and the behaviour switches.
//!
//! [`OverlayConfig`] is the one value a caller builds (the `rcl-fs` command line parser builds it
//! from fuse-overlayfs's `-o` options, the rcl launcher from a container spec) and hands to
//! [`crate::UnionFs::new`].

use std::path::PathBuf;

/// One contiguous range of an id mapping: `count` ids starting at `container` inside the mount
/// correspond to `count` ids starting at `host` on the layers' disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id as seen through the mount.
    pub container: u32,
    /// First id as stored on the underlying layers.
    pub host: u32,
    /// Number of ids in the range.
    pub count: u32,
}

/// An id mapping in fuse-overlayfs's `uidmapping=`/`gidmapping=` sense. Empty = identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMapping {
    /// The ranges, in the order given.
    pub ranges: Vec<IdRange>,
}

impl IdMapping {
    /// True when no range is set: ids pass through unchanged.
    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Id stored on disk -> id shown through the mount. Ids outside every range show as the
    /// overflow id 65534, as the kernel shows unmapped ids.
    pub fn to_container(&self, host: u32) -> u32 {
        if self.ranges.is_empty() {
            return host;
        }
        for r in &self.ranges {
            if host >= r.host && host - r.host < r.count {
                return r.container + (host - r.host);
            }
        }
        OVERFLOW_ID
    }

    /// Id given through the mount -> id to store on disk; `None` if the id is not mapped.
    pub fn to_host(&self, container: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(container);
        }
        self.ranges.iter().find_map(|r| {
            (container >= r.container && container - r.container < r.count)
                .then(|| r.host + (container - r.container))
        })
    }
}

/// The id the kernel shows for ids that have no mapping.
pub const OVERFLOW_ID: u32 = 65534;

/// How deletions are recorded in the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutFormat {
    /// Kernel overlayfs format: a character device 0/0 per deleted name, opaque directories
    /// marked by an `overlay.opaque` xattr.
    #[default]
    CharDevice,
    /// OCI layer format: an empty `.wh.NAME` file per deleted name, `.wh..wh..opq` in opaque
    /// directories (what podman stores when it drives a mount program).
    WhFiles,
}

/// Which xattr namespace holds the overlay markers (opaque, redirect, metacopy, origin) that
/// rcl-fs writes into the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrNamespace {
    /// `trusted.` when the server may set trusted xattrs on the upper fs, `user.` otherwise.
    #[default]
    Auto,
    /// `trusted.overlay.*`, as kernel overlayfs writes as root.
    Trusted,
    /// `user.overlay.*`, as kernel overlayfs writes with `userxattr` (rootless).
    User,
}

/// Whether regular files are served by FUSE passthrough (Linux 6.9+, needs CAP_SYS_ADMIN in the
/// initial user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Passthrough {
    /// Use it when the kernel and privileges allow, fall back silently otherwise.
    #[default]
    Auto,
    /// Require it: mounting fails when it cannot be had.
    On,
    /// Never use it.
    Off,
}

/// Everything that defines one union mount.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// Read-only layers, the first being the top one. At least one.
    pub lowerdirs: Vec<PathBuf>,
    /// The writable layer; `None` makes the mount read-only (writes fail with EROFS).
    pub upperdir: Option<PathBuf>,
    /// Scratch directory on the same filesystem as `upperdir`, for atomic copy-up.
    pub workdir: Option<PathBuf>,
    /// uid translation between the layers' disks and the mount.
    pub uid_mapping: IdMapping,
    /// gid translation between the layers' disks and the mount.
    pub gid_mapping: IdMapping,
    /// Show every file as owned by this uid (fuse-overlayfs `squash_to_uid=`, `squash_to_root`).
    pub squash_uid: Option<u32>,
    /// Show every file as owned by this gid (fuse-overlayfs `squash_to_gid=`, `squash_to_root`).
    pub squash_gid: Option<u32>,
    /// Report nlink 1 for directories instead of counting subdirectories.
    pub static_nlink: bool,
    /// Do not expose POSIX ACL xattrs.
    pub noacl: bool,
    /// Make copy-ups and fsync durable (fsync the copied files). `fsync=0` turns it off.
    pub fsync: bool,
    /// How deletions are recorded in the upper layer.
    pub whiteout_format: WhiteoutFormat,
    /// Where overlay markers go.
    pub xattr_namespace: XattrNamespace,
    /// FUSE passthrough policy.
    pub passthrough: Passthrough,
    /// Copy only metadata on chmod/chown/utimes/setxattr of a lower file (data on first write).
    pub metacopy: bool,
    /// Number of request-serving threads.
    pub threads: usize,
    /// Let other users (and root) use the mount (`allow_other`).
    pub allow_other: bool,
    /// Name shown as the mount's source in /proc/self/mountinfo.
    pub fsname: String,
}

impl OverlayConfig {
    /// A configuration with the given lower layers (top first) and every switch at its default.
    pub fn new(lowerdirs: Vec<PathBuf>) -> Self {
        OverlayConfig {
            lowerdirs,
            upperdir: None,
            workdir: None,
            uid_mapping: IdMapping::default(),
            gid_mapping: IdMapping::default(),
            squash_uid: None,
            squash_gid: None,
            static_nlink: false,
            noacl: false,
            fsync: true,
            whiteout_format: WhiteoutFormat::default(),
            xattr_namespace: XattrNamespace::default(),
            passthrough: Passthrough::default(),
            metacopy: true,
            threads: default_threads(),
            allow_other: false,
            fsname: "rcl-fs".to_string(),
        }
    }

    /// Sets the writable layer and its work directory.
    pub fn with_upper(mut self, upperdir: PathBuf, workdir: PathBuf) -> Self {
        self.upperdir = Some(upperdir);
        self.workdir = Some(workdir);
        self
    }

    /// True when there is no upper layer.
    pub fn is_readonly(&self) -> bool {
        self.upperdir.is_none()
    }
}

/// Default thread count: enough to overlap blocking I/O on a small machine.
pub fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cpus * 2).clamp(2, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_mapping_round_trip() {
        let m = IdMapping {
            ranges: vec![
                IdRange {
                    container: 0,
                    host: 1000,
                    count: 1,
                },
                IdRange {
                    container: 1,
                    host: 100000,
                    count: 65536,
                },
            ],
        };
        assert_eq!(m.to_container(1000), 0);
        assert_eq!(m.to_container(100005), 6);
        assert_eq!(m.to_container(5), OVERFLOW_ID);
        assert_eq!(m.to_host(0), Some(1000));
        assert_eq!(m.to_host(6), Some(100005));
        assert_eq!(m.to_host(70000), None);
        assert_eq!(IdMapping::default().to_host(42), Some(42));
    }
}
