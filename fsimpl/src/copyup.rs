//! Copy-up: making a lower object (and its parent directories) exist in the upper layer,
//! atomically: every copy is built in the private work directory and renamed into place.

use crate::core::{kind_of, UnionFs};
use crate::node::{Fd, FdHold, Node, Obj};
use crate::{sys, xattr};
use fuser::FileType;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How much of a regular file a copy-up brings along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Data and metadata.
    Full,
    /// Metadata only (metacopy): data keeps coming from the lower until the first write.
    Meta,
    /// Metadata only and an empty file (the caller truncates it anyway).
    Empty,
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Attribute changes to make on a copy before it goes into place (host ids).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NewAttrs {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New atime and mtime (`UTIME_OMIT` keeps one, `UTIME_NOW` works).
    pub times: Option<[libc::timespec; 2]>,
}

impl NewAttrs {
    /// The permission bits of the copy of an object with stat `lower` after these changes: a
    /// chown without a mode clears the set-ID bits of a non-directory, as chown(2) does.
    fn mode_after(&self, lower: &libc::stat) -> u32 {
        let m = lower.st_mode & 0o7777;
        match self.mode {
            Some(x) => x & 0o7777,
            None if (self.uid.is_some() || self.gid.is_some())
                && lower.st_mode & libc::S_IFMT != libc::S_IFDIR =>
            {
                m & !kill_bits(m)
            }
            None => m,
        }
    }
}

/// What a copy-up did.
#[derive(Debug, Default)]
pub(crate) struct CopiedUp {
    /// The attribute changes asked for were made on the copy.
    pub applied: bool,
    /// The new upper regular file, open for reading and writing.
    pub data: Option<OwnedFd>,
}

/// The set-ID bits a write, truncate or chown takes away (FUSE_HANDLE_KILLPRIV_V2, as the
/// VFS): set-user-ID, and set-group-ID where group execute is set.
pub(crate) fn kill_bits(mode: u32) -> u32 {
    let mut k = mode & libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP) {
        k |= libc::S_ISGID;
    }
    k
}

/// Set once FICLONE failed for lack of support: copy_file_range (which clones where the
/// filesystem can) is tried first from then on.
static NO_FICLONE: AtomicBool = AtomicBool::new(false);

/// Copies the data of the readable file `src` (stat `st`) into `dst`, keeping holes; a file
/// without holes is copied without looking for them.
fn copy_data_from(s: RawFd, dst: RawFd, st: &libc::stat) -> io::Result<()> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(());
    }
    if !NO_FICLONE.load(Ordering::Relaxed) {
        match sys::ficlone(dst, s) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL)
                ) =>
            {
                NO_FICLONE.store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
    }
    // Allocated at least as much as the size: no holes to keep.
    let dense = (st.st_blocks as u64) * 512 >= size;
    let mut off = 0u64;
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while off < size {
        let (data, end) = if dense {
            (off, size)
        } else {
            let data = match sys::lseek(s, off as i64, libc::SEEK_DATA) {
                Ok(d) => d as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                Err(_) => off,
            };
            let end = match sys::lseek(s, data as i64, libc::SEEK_HOLE) {
                Ok(h) => (h as u64).min(size),
                Err(_) => size,
            };
            (data, end)
        };
        let mut pos = data;
        while pos < end {
            let want = ((end - pos) as usize).min(1 << 30);
            if use_cfr {
                match sys::copy_file_range(s, dst, pos, want) {
                    Ok(0) => break,
                    Ok(n) => {
                        pos += n as u64;
                        continue;
                    }
                    Err(_) => use_cfr = false,
                }
            }
            if buf.is_empty() {
                buf = vec![0u8; 1 << 20];
            }
            let chunk = want.min(buf.len());
            let n = sys::pread(s, &mut buf[..chunk], pos)?;
            if n == 0 {
                break;
            }
            sys::pwrite(dst, &buf[..n], pos)?;
            pos += n as u64;
        }
        if dense && pos >= size {
            // All there: the size is right without a truncate.
            return Ok(());
        }
        off = end.max(data + 1);
    }
    sys::ftruncate(dst, size)
}

impl UnionFs {
    /// Ensures the directory `ino` exists in the upper layer (copying it and its parents up);
    /// returns its upper directory fd.
    pub(crate) fn upper_dir(&self, ino: u64) -> io::Result<Fd> {
        if self.upper.is_none() {
            return Err(err(libc::EROFS));
        }
        let node = self.node(ino)?;
        if node.kind != FileType::Directory {
            return Err(err(libc::ENOTDIR));
        }
        if let Some(u) = node.st.read().upper_dir() {
            return Ok(u.clone());
        }
        self.copy_up(&node, CopyMode::Full)?;
        let up = node.st.read().upper_dir().cloned();
        up.ok_or_else(|| err(libc::EIO))
    }

    /// Copies `node` up (at the name it was last looked up under) as `mode` asks; completes a
    /// metacopy when data is wanted.
    pub(crate) fn copy_up(&self, node: &Arc<Node>, mode: CopyMode) -> io::Result<()> {
        self.copy_up_with(node, mode, None).map(drop)
    }

    /// [`UnionFs::copy_up`], with attribute changes (`set`) made on the copy before it goes
    /// into place, so that a chmod, chown or utimes that causes a copy-up costs no second
    /// change. Says whether `set` was applied (only when this call copied the node up) and
    /// hands back the copy's data fd (read-write) when it made a regular file with data.
    pub(crate) fn copy_up_with(
        &self,
        node: &Arc<Node>,
        mode: CopyMode,
        set: Option<&NewAttrs>,
    ) -> io::Result<CopiedUp> {
        if self.upper.is_none() {
            return Err(err(libc::EROFS));
        }
        {
            let st = node.st.read();
            if st.upper.is_some() && (!st.metacopy || mode == CopyMode::Meta) {
                return Ok(CopiedUp::default());
            }
        }
        let _g = node.copy_lock.lock();
        let (has_upper, metacopy, parent, name) = {
            let st = node.st.read();
            (st.upper.is_some(), st.metacopy, st.parent, st.name.clone())
        };
        if has_upper {
            if metacopy && mode != CopyMode::Meta {
                self.complete_metacopy(node, mode)?;
            }
            return Ok(CopiedUp::default());
        }
        let pfd = self.upper_dir(parent)?;
        if node.unlinked.load(Ordering::Acquire) {
            // The name is gone: build an anonymous upper copy that only open handles see.
            return self.copy_up_into(node, None, &name, mode, set);
        }
        self.copy_up_into(node, Some(&pfd), &name, mode, set)
    }

    fn copy_up_into(
        &self,
        node: &Arc<Node>,
        pdir: Option<&Fd>,
        name: &OsStr,
        mut mode: CopyMode,
        set: Option<&NewAttrs>,
    ) -> io::Result<CopiedUp> {
        let st = node.st.read().clone();
        let (_, lobj) = st.lowers.first().ok_or_else(|| err(libc::EIO))?.clone();
        // A metacopy file in a lower layer: metadata from it, data from the file below.
        let data_obj = match (st.lower_metacopy, st.lowers.get(1)) {
            (true, Some((_, d))) => Some(d.clone()),
            _ => None,
        };
        if data_obj.is_some() && mode == CopyMode::Meta {
            mode = CopyMode::Full;
        }
        // A regular file whose data is copied is opened for reading at once (no O_PATH open
        // and reopen); everything else needs an O_PATH fd only.
        let readable =
            if node.kind == FileType::RegularFile && data_obj.is_none() && mode == CopyMode::Full {
                lobj.open_noatime(libc::O_RDONLY).ok()
            } else {
                None
            };
        let is_readable = readable.is_some();
        // A metacopy needs only the lower's stat and xattrs: read by name, no fd at all.
        let by_name = match &lobj {
            Obj::At(d, n)
                if node.kind == FileType::RegularFile
                    && data_obj.is_none()
                    && mode == CopyMode::Meta =>
            {
                Some((d.as_raw_fd(), n.clone()))
            }
            _ => None,
        };
        let mut lfd = match (readable, &by_name) {
            (Some(f), _) => Some(FdHold::Own(f)),
            (None, None) => Some(lobj.fd()?),
            (None, Some(_)) => None,
        };
        let lst = match (&lfd, &by_name) {
            (Some(f), _) => sys::fstat(f.as_raw_fd())?,
            (None, Some((d, n))) => sys::lstatat(*d, n)?,
            (None, None) => unreachable!("one of them is set"),
        };
        let kind = kind_of(lst.st_mode);
        let w = self.work_fd()?;
        let tmp = self.tmp_name();
        let is_reg = kind == FileType::RegularFile;
        let multi = is_reg && lst.st_nlink > 1 && self.index.is_some();
        if multi {
            mode = if mode == CopyMode::Empty {
                CopyMode::Empty
            } else {
                CopyMode::Full
            };
            let idxfd = self.index.clone().expect("checked");
            let idx = idxfd.as_raw_fd();
            let iname = Self::index_name(st.origin);
            if let Ok(ifd) = sys::open_path(idx, OsStr::new(&iname)) {
                // Another alias was copied up already: link to it.
                if let Some(p) = pdir {
                    sys::link_fd(ifd.as_raw_fd(), w, &tmp)?;
                    sys::renameat2(w, &tmp, p.as_raw_fd(), name, 0)?;
                }
                let mut s = node.st.write();
                s.upper = Some(Obj::at(idxfd, OsStr::new(&iname)));
                s.metacopy = false;
                s.lowers.clear();
                return Ok(CopiedUp::default());
            }
        }
        if mode == CopyMode::Meta && !is_reg {
            mode = CopyMode::Full;
        }
        if mode != CopyMode::Meta && lfd.is_none() {
            lfd = Some(lobj.fd()?);
        }
        // -1 only where the lower is read by name (`by_name`, a metacopy).
        let lraw = lfd.as_ref().map_or(-1, |f| f.as_raw_fd());
        let built = (|| -> io::Result<(OwnedFd, bool)> {
            // The copy, and whether it is open for reading and writing (a regular file).
            let (fd, rw) = match kind {
                FileType::Directory => {
                    sys::mkdirat(w, &tmp, 0o700)?;
                    (sys::open_dir(w, &tmp)?, false)
                }
                FileType::RegularFile => {
                    let dst =
                        sys::openat(w, &tmp, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR, 0o600)?;
                    match mode {
                        CopyMode::Full => match &data_obj {
                            Some(d) => {
                                let dfd = d.fd()?;
                                let dst_st = sys::fstat(dfd.as_raw_fd())?;
                                self.copy_data(dfd.as_raw_fd(), dst.as_raw_fd(), &dst_st)?;
                                sys::ftruncate(dst.as_raw_fd(), lst.st_size as u64)?;
                            }
                            None if is_readable => copy_data_from(lraw, dst.as_raw_fd(), &lst)?,
                            None => self.copy_data(lraw, dst.as_raw_fd(), &lst)?,
                        },
                        CopyMode::Meta => sys::ftruncate(dst.as_raw_fd(), lst.st_size as u64)?,
                        CopyMode::Empty => {}
                    }
                    if mode == CopyMode::Full && self.cfg.fsync {
                        sys::fsync(dst.as_raw_fd(), false)?;
                    }
                    (dst, true)
                }
                FileType::Symlink => {
                    let target = sys::readlink_fd(lraw)?;
                    sys::symlinkat(&target, w, &tmp)?;
                    (sys::open_path(w, &tmp)?, false)
                }
                _ => {
                    sys::mknodat(w, &tmp, (lst.st_mode & libc::S_IFMT) | 0o600, lst.st_rdev)?;
                    (sys::open_path(w, &tmp)?, false)
                }
            };
            let raw = fd.as_raw_fd();
            // Owner first: a chown drops security.capability, which the xattr copy restores.
            let uid = set.and_then(|s| s.uid).unwrap_or(lst.st_uid);
            let gid = set.and_then(|s| s.gid).unwrap_or(lst.st_gid);
            sys::fchown_fd(raw, uid, gid)?;
            match &by_name {
                Some((d, n)) if lfd.is_none() => self.copy_xattrs_at(*d, n, raw),
                _ => self.copy_xattrs(lraw, raw),
            }
            let origin = format!("{}:{}", st.origin.0, st.origin.1);
            let _ = sys::setxattr_fd(raw, &self.rcl_xattr("origin"), origin.as_bytes(), 0);
            if mode == CopyMode::Meta {
                // Where the data is, is recorded only when the file moves (`upper_name`):
                // until then the lowers show it under the same name.
                sys::setxattr_fd(raw, &self.ovl_xattr("metacopy"), b"", 0)?;
            }
            let mut times = [
                libc::timespec {
                    tv_sec: lst.st_atime,
                    tv_nsec: lst.st_atime_nsec,
                },
                libc::timespec {
                    tv_sec: lst.st_mtime,
                    tv_nsec: lst.st_mtime_nsec,
                },
            ];
            if let Some(t) = set.and_then(|s| s.times) {
                for (have, want) in times.iter_mut().zip(t) {
                    if want.tv_nsec != libc::UTIME_OMIT {
                        *have = want;
                    }
                }
            }
            if kind != FileType::Symlink {
                let m = match set {
                    Some(s) => s.mode_after(&lst),
                    None => lst.st_mode & 0o7777,
                };
                if rw {
                    sys::fchmod(raw, m)?;
                } else {
                    sys::fchmod_fd(raw, m)?;
                }
            }
            sys::utimensat(w, &tmp, &times)?;
            if multi && mode != CopyMode::Meta {
                let idx = self.index.as_ref().expect("checked").as_raw_fd();
                let n = lst.st_nlink.saturating_sub(st.removed_links as u64);
                let _ =
                    sys::setxattr_fd(raw, &self.rcl_xattr("nlink"), n.to_string().as_bytes(), 0);
                let _ = sys::link_fd(raw, idx, OsStr::new(&Self::index_name(st.origin)));
            }
            Ok((fd, rw))
        })();
        let (pathfd, rw) = match built {
            Ok(f) => f,
            Err(e) => {
                let _ = Self::remove_tree(w, &tmp);
                return Err(e);
            }
        };
        let mut data = None;
        let obj = match pdir {
            Some(p) => {
                if let Err(e) = sys::renameat2(w, &tmp, p.as_raw_fd(), name, 0) {
                    let _ = Self::remove_tree(w, &tmp);
                    return Err(e);
                }
                if kind == FileType::Directory {
                    Obj::Fd(Arc::new(pathfd))
                } else {
                    if rw && mode != CopyMode::Meta {
                        data = Some(pathfd);
                    }
                    Obj::at(p.clone(), name)
                }
            }
            None => {
                let _ = sys::unlinkat(w, &tmp, 0);
                Obj::Fd(Arc::new(pathfd))
            }
        };
        let mut s = node.st.write();
        s.upper = Some(obj);
        s.metacopy = mode == CopyMode::Meta;
        s.lower_metacopy = false;
        if kind != FileType::Directory && mode != CopyMode::Meta {
            s.lowers.clear();
        }
        Ok(CopiedUp {
            applied: set.is_some(),
            data,
        })
    }

    /// Copies xattrs from `src` to `dst`, except overlay-private ones; failures to set (e.g.
    /// user.* on a symlink) are ignored.
    fn copy_xattrs(&self, src: RawFd, dst: RawFd) {
        let Ok(names) = sys::listxattr_fd(src) else {
            return;
        };
        for n in names {
            if xattr::is_private(n.to_bytes()) {
                continue;
            }
            if let Ok(Some(v)) = sys::getxattr_fd(src, &n) {
                let _ = sys::setxattr_fd(dst, &n, &v, 0);
            }
        }
    }

    /// [`UnionFs::copy_xattrs`] from `dir/name` (not followed).
    fn copy_xattrs_at(&self, dir: RawFd, name: &OsStr, dst: RawFd) {
        let Ok(names) = sys::listxattr_at(dir, name) else {
            return;
        };
        for n in names {
            if xattr::is_private(n.to_bytes()) {
                continue;
            }
            if let Ok(Some(v)) = sys::getxattr_at(dir, name, &n) {
                let _ = sys::setxattr_fd(dst, &n, &v, 0);
            }
        }
    }

    /// Copies the data of the file behind `src` (an O_PATH fd) into `dst`, keeping holes.
    fn copy_data(&self, src: RawFd, dst: RawFd, st: &libc::stat) -> io::Result<()> {
        if st.st_size == 0 {
            return Ok(());
        }
        let s = sys::reopen_noatime(src, libc::O_RDONLY)?;
        copy_data_from(s.as_raw_fd(), dst, st)
    }

    /// Brings the data of a metacopy upper file in: written into the upper inode itself while
    /// the metacopy marker still sends reads to the lower, then the marker goes (atomic).
    fn complete_metacopy(&self, node: &Arc<Node>, mode: CopyMode) -> io::Result<()> {
        let st = node.st.read().clone();
        let up = st.upper.clone().ok_or_else(|| err(libc::EIO))?;
        let f = up.open(libc::O_WRONLY)?;
        let upfd = up.fd()?;
        if mode == CopyMode::Empty {
            sys::ftruncate(f.as_raw_fd(), 0)?;
        } else if let Some((_, lfd)) = st.lowers.first() {
            let lfd = lfd.fd()?;
            let lst = sys::fstat(lfd.as_raw_fd())?;
            self.copy_data(lfd.as_raw_fd(), f.as_raw_fd(), &lst)?;
            if self.cfg.fsync {
                sys::fsync(f.as_raw_fd(), false)?;
            }
        }
        let _ = sys::removexattr_fd(upfd.as_raw_fd(), &self.ovl_xattr("metacopy"));
        let _ = sys::removexattr_fd(upfd.as_raw_fd(), &self.rcl_xattr("lower"));
        let _ = sys::removexattr_fd(upfd.as_raw_fd(), &self.ovl_xattr("redirect"));
        let mut s = node.st.write();
        s.metacopy = false;
        s.lowers.clear();
        Ok(())
    }

    /// Makes sure `parent/name` exists in the upper layer as the non-directory `node`, which
    /// is about to move (rename): a metacopy file gets the lower path of its data recorded.
    pub(crate) fn upper_name(&self, parent: u64, name: &OsStr, node: &Arc<Node>) -> io::Result<()> {
        self.upper_name_only(parent, name, node)?;
        self.record_metacopy_lower(node)
    }

    /// Records on a metacopy upper file the lower path of its data (`<ns>.rclfs.lower`, and
    /// an absolute `overlay.redirect` for kernel overlayfs), which a lookup needs once the file
    /// is no longer at the name its data has in the lowers.
    fn record_metacopy_lower(&self, node: &Arc<Node>) -> io::Result<()> {
        let (up, lp) = {
            let st = node.st.read();
            match (&st.upper, self.lower_path_of(&st)) {
                (Some(u), Some(p)) if st.metacopy => (u.clone(), p),
                _ => return Ok(()),
            }
        };
        let fd = up.fd()?;
        let lp = lp.as_os_str().as_bytes();
        sys::setxattr_fd(fd.as_raw_fd(), &self.rcl_xattr("lower"), lp, 0)?;
        let _ = sys::setxattr_fd(fd.as_raw_fd(), &self.ovl_xattr("redirect"), lp, 0);
        Ok(())
    }

    fn upper_name_only(&self, parent: u64, name: &OsStr, node: &Arc<Node>) -> io::Result<()> {
        let pfd = self.upper_dir(parent)?;
        if let Some(st) = sys::lstatat_opt(pfd.as_raw_fd(), name)? {
            if !crate::whiteout::is_whiteout(&st) {
                return Ok(());
            }
        }
        // Renaming a lower file needs its metadata in the upper, not its data.
        let mode = if self.cfg.metacopy && node.kind == FileType::RegularFile {
            CopyMode::Meta
        } else {
            CopyMode::Full
        };
        self.copy_up(node, mode)?;
        if let Some(st) = sys::lstatat_opt(pfd.as_raw_fd(), name)? {
            if !crate::whiteout::is_whiteout(&st) {
                return Ok(());
            }
        }
        let up = node.st.read().upper.clone().ok_or_else(|| err(libc::EIO))?;
        let w = self.work_fd()?;
        let tmp = self.tmp_name();
        let upfd = up.fd()?;
        sys::link_fd(upfd.as_raw_fd(), w, &tmp)?;
        sys::renameat2(w, &tmp, pfd.as_raw_fd(), name, 0).inspect_err(|_| {
            let _ = sys::unlinkat(w, &tmp, 0);
        })
    }
}
