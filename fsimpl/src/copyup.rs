//! Copy-up: making a lower object (and its parent directories) exist in the upper layer,
//! atomically: every copy is built in the private work directory and renamed into place.

use crate::core::{kind_of, UnionFs};
use crate::node::{Fd, Node, Obj};
use crate::{sys, xattr};
use fuser::FileType;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
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
        if self.upper.is_none() {
            return Err(err(libc::EROFS));
        }
        {
            let st = node.st.read();
            if st.upper.is_some() && (!st.metacopy || mode == CopyMode::Meta) {
                return Ok(());
            }
        }
        let _g = node.copy_lock.lock();
        let (has_upper, metacopy, parent, name) = {
            let st = node.st.read();
            (st.upper.is_some(), st.metacopy, st.parent, st.name.clone())
        };
        if has_upper {
            if metacopy && mode != CopyMode::Meta {
                return self.complete_metacopy(node, mode);
            }
            return Ok(());
        }
        let pfd = self.upper_dir(parent)?;
        if node.unlinked.load(Ordering::Acquire) {
            // The name is gone: build an anonymous upper copy that only open handles see.
            return self.copy_up_into(node, None, &name, mode);
        }
        self.copy_up_into(node, Some(&pfd), &name, mode)
    }

    fn copy_up_into(
        &self,
        node: &Arc<Node>,
        pdir: Option<&Fd>,
        name: &OsStr,
        mut mode: CopyMode,
    ) -> io::Result<()> {
        let st = node.st.read().clone();
        let (_, lobj) = st.lowers.first().ok_or_else(|| err(libc::EIO))?.clone();
        let lfd = lobj.fd()?;
        let lraw = lfd.as_raw_fd();
        // A metacopy file in a lower layer: metadata from it, data from the file below.
        let data_obj = match (st.lower_metacopy, st.lowers.get(1)) {
            (true, Some((_, d))) => Some(d.clone()),
            _ => None,
        };
        if data_obj.is_some() && mode == CopyMode::Meta {
            mode = CopyMode::Full;
        }
        let lst = sys::fstat(lraw)?;
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
                return Ok(());
            }
        }
        if mode == CopyMode::Meta && !is_reg {
            mode = CopyMode::Full;
        }
        let built = (|| -> io::Result<OwnedFd> {
            let pathfd = match kind {
                FileType::Directory => {
                    sys::mkdirat(w, &tmp, 0o700)?;
                    sys::open_dir(w, &tmp)?
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
                            None => self.copy_data(lraw, dst.as_raw_fd(), &lst)?,
                        },
                        CopyMode::Meta => sys::ftruncate(dst.as_raw_fd(), lst.st_size as u64)?,
                        CopyMode::Empty => {}
                    }
                    if mode == CopyMode::Full && self.cfg.fsync {
                        sys::fsync(dst.as_raw_fd(), false)?;
                    }
                    sys::open_path(w, &tmp)?
                }
                FileType::Symlink => {
                    let target = sys::readlink_fd(lraw)?;
                    sys::symlinkat(&target, w, &tmp)?;
                    sys::open_path(w, &tmp)?
                }
                _ => {
                    sys::mknodat(w, &tmp, (lst.st_mode & libc::S_IFMT) | 0o600, lst.st_rdev)?;
                    sys::open_path(w, &tmp)?
                }
            };
            let raw = pathfd.as_raw_fd();
            // Owner first: a chown drops security.capability, which the xattr copy restores.
            sys::fchown_fd(raw, lst.st_uid, lst.st_gid)?;
            self.copy_xattrs(lraw, raw);
            let origin = format!("{}:{}", st.origin.0, st.origin.1);
            let _ = sys::setxattr_fd(raw, &self.rcl_xattr("origin"), origin.as_bytes(), 0);
            if mode == CopyMode::Meta {
                sys::setxattr_fd(raw, &self.ovl_xattr("metacopy"), b"", 0)?;
                if let Some(lp) = &self.lower_path_of(&st) {
                    let lp = lp.as_os_str().as_bytes();
                    sys::setxattr_fd(raw, &self.rcl_xattr("lower"), lp, 0)?;
                    // Kernel overlayfs (metacopy=on) finds the data through an absolute
                    // redirect once the file is renamed.
                    let _ = sys::setxattr_fd(raw, &self.ovl_xattr("redirect"), lp, 0);
                }
            }
            let times = [
                libc::timespec {
                    tv_sec: lst.st_atime,
                    tv_nsec: lst.st_atime_nsec,
                },
                libc::timespec {
                    tv_sec: lst.st_mtime,
                    tv_nsec: lst.st_mtime_nsec,
                },
            ];
            if kind != FileType::Symlink {
                sys::fchmod_fd(raw, lst.st_mode & 0o7777)?;
            }
            sys::utimensat(w, &tmp, &times)?;
            if multi && mode != CopyMode::Meta {
                let idx = self.index.as_ref().expect("checked").as_raw_fd();
                let n = lst.st_nlink.saturating_sub(st.removed_links as u64);
                let _ =
                    sys::setxattr_fd(raw, &self.rcl_xattr("nlink"), n.to_string().as_bytes(), 0);
                let _ = sys::link_fd(raw, idx, OsStr::new(&Self::index_name(st.origin)));
            }
            Ok(pathfd)
        })();
        let pathfd = match built {
            Ok(f) => f,
            Err(e) => {
                let _ = Self::remove_tree(w, &tmp);
                return Err(e);
            }
        };
        let obj = match pdir {
            Some(p) => {
                if let Err(e) = sys::renameat2(w, &tmp, p.as_raw_fd(), name, 0) {
                    let _ = Self::remove_tree(w, &tmp);
                    return Err(e);
                }
                if kind == FileType::Directory {
                    Obj::Fd(Arc::new(pathfd))
                } else {
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
        Ok(())
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

    /// Copies the data of the file behind `src` (an O_PATH fd) into `dst`, keeping holes.
    fn copy_data(&self, src: RawFd, dst: RawFd, st: &libc::stat) -> io::Result<()> {
        let size = st.st_size as u64;
        if size == 0 {
            return Ok(());
        }
        let s = sys::reopen_noatime(src, libc::O_RDONLY)?;
        let s = s.as_raw_fd();
        if sys::ficlone(dst, s).is_ok() {
            return Ok(());
        }
        let mut off = 0u64;
        let mut use_cfr = true;
        let mut buf = Vec::new();
        while off < size {
            let data = match sys::lseek(s, off as i64, libc::SEEK_DATA) {
                Ok(d) => d as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                Err(_) => off,
            };
            let end = match sys::lseek(s, data as i64, libc::SEEK_HOLE) {
                Ok(h) => (h as u64).min(size),
                Err(_) => size,
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
            off = end.max(data + 1);
        }
        sys::ftruncate(dst, size)
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

    /// Makes sure `parent/name` exists in the upper layer as the non-directory `node`.
    pub(crate) fn upper_name(&self, parent: u64, name: &OsStr, node: &Arc<Node>) -> io::Result<()> {
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
