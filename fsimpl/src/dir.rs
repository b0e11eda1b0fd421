//! Merged directory listings.

use crate::core::{kind_of_dtype, UnionFs};
use crate::dircache::Listing;
use crate::node::{Node, NodeState};
use crate::{sys, whiteout};
use fuser::FileType;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

impl UnionFs {
    /// The merged listing of directory `node`: the kept one, or a new one (then kept).
    pub(crate) fn listing(&self, node: &Arc<Node>) -> io::Result<Arc<Listing>> {
        if let Some(l) = self.dircache.get(node) {
            return Ok(l);
        }
        let epoch = self.dircache.epoch();
        // A copy of the state: reading the layers must not hold the node's lock.
        let st = node.st.read().clone();
        let names = self.list_dir(&st)?;
        let l = Arc::new(Listing::new(names));
        self.dircache.keep(node, &l, epoch);
        Ok(l)
    }

    /// The entries of directory `ino` changed (a name added, removed or replaced, or the
    /// directory itself removed): its kept listing must not be used again. Called by every
    /// directory-changing operation, after the change.
    pub(crate) fn dir_changed(&self, ino: u64) {
        self.dircache.changed(ino);
    }

    /// A guard for an operation that may change the entries of directories `a` and `b` (the
    /// same number twice for one): [`UnionFs::dir_changed`] runs for both when it is dropped,
    /// at the end of the operation, on its error paths too.
    pub(crate) fn changing(&self, a: u64, b: u64) -> DirChange<'_> {
        DirChange {
            fs: self,
            dirs: [a, b],
        }
    }

    /// Every visible entry of the directory described by `st` (without `.` and `..`):
    /// upper first, then lowers; whiteouts (every format) hide names of the layers below.
    pub(crate) fn list_dir(&self, st: &NodeState) -> io::Result<Vec<(OsString, FileType)>> {
        let mut out = Vec::new();
        let mut seen: HashSet<OsString> = HashSet::new();
        let layers = st.upper_dir().into_iter().chain(st.lower_dirs());
        for fd in layers {
            let raw = fd.as_raw_fd();
            let ents = sys::read_dir(raw)?;
            let mut hide = Vec::new();
            for e in ents {
                let n = e.name.as_bytes();
                if n.starts_with(whiteout::WH_PREFIX) {
                    if e.name != whiteout::WH_OPAQUE {
                        hide.push(OsStr::from_bytes(&n[whiteout::WH_PREFIX.len()..]).to_owned());
                    }
                    continue;
                }
                if seen.contains(&e.name) {
                    continue;
                }
                let mut dtype = e.dtype;
                if dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                    if let Ok(Some(s)) = sys::lstatat_opt(raw, &e.name) {
                        if whiteout::is_whiteout(&s) {
                            seen.insert(e.name);
                            continue;
                        }
                        dtype = dtype_of(s.st_mode);
                    }
                }
                seen.insert(e.name.clone());
                out.push((e.name, kind_of_dtype(dtype)));
            }
            for h in hide {
                seen.insert(h);
            }
        }
        Ok(out)
    }

    /// True when the directory described by `st` shows no entry at all.
    pub(crate) fn dir_is_empty(&self, st: &NodeState) -> io::Result<bool> {
        Ok(self.list_dir(st)?.is_empty())
    }

    /// Removes whiteouts (and `.wh.` files) from an upper directory that is logically empty,
    /// so that it can be replaced or removed.
    pub(crate) fn clear_upper_dir(fd: std::os::fd::RawFd) -> io::Result<()> {
        for e in sys::read_dir(fd)? {
            Self::remove_tree(fd, &e.name)?;
        }
        Ok(())
    }
}

/// See [`UnionFs::changing`].
pub(crate) struct DirChange<'a> {
    fs: &'a UnionFs,
    dirs: [u64; 2],
}

impl Drop for DirChange<'_> {
    fn drop(&mut self) {
        self.fs.dir_changed(self.dirs[0]);
        if self.dirs[1] != self.dirs[0] {
            self.fs.dir_changed(self.dirs[1]);
        }
    }
}

fn dtype_of(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        _ => libc::DT_REG,
    }
}
