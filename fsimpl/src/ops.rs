//! Namespace-changing operations: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.

use crate::core::{is_dir, Found, UnionFs};
use crate::node::{Fd, Name, Node, Obj};
use crate::{sys, whiteout, xattr};
use fuser::FileType;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Name of the whiteout in the private work dir that new whiteouts are hard links to.
const SHARED_WHITEOUT: &str = "whiteout";

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Where a new name goes in the upper layer.
pub(crate) struct Slot {
    /// Upper parent directory.
    pub pfd: Fd,
    /// A char 0/0 whiteout occupies the name in the upper layer.
    pub over_whiteout: bool,
    /// A `.wh.NAME` file hides the name in the upper layer.
    pub wh_file: bool,
}

/// Who creates a new object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creator {
    /// Requesting uid (mount view).
    pub uid: u32,
    /// Requesting gid (mount view).
    pub gid: u32,
}

impl Creator {
    /// The requester of a FUSE request.
    pub fn of(req: &fuser::Request) -> Self {
        Creator {
            uid: req.uid(),
            gid: req.gid(),
        }
    }
}

impl UnionFs {
    /// Checks that `parent/name` can be created and finds what occupies it in the upper layer.
    pub(crate) fn slot(&self, parent: u64, name: &OsStr) -> io::Result<Slot> {
        Self::check_name(name)?;
        if whiteout::is_wh_name(name) {
            return Err(err(libc::EPERM));
        }
        let pnode = self.node(parent)?;
        let pfd = self.upper_dir(parent)?;
        // Look at the upper once: a real entry there exists; a whiteout (either format) hides
        // the lowers; only an empty upper slot needs the lowers walked.
        let over_whiteout = match sys::lstatat_opt(pfd.as_raw_fd(), name)? {
            Some(st) if whiteout::is_whiteout(&st) => true,
            Some(_) => return Err(err(libc::EEXIST)),
            None => false,
        };
        let wh_file = whiteout::has_wh_file(pfd.as_raw_fd(), name);
        if !over_whiteout && !wh_file {
            let mut lst = pnode.st.read().clone();
            lst.upper = None;
            if self.resolve(&lst, name)?.is_some() {
                return Err(err(libc::EEXIST));
            }
        }
        Ok(Slot {
            pfd,
            over_whiteout,
            wh_file,
        })
    }

    /// Creates a new object at `parent/name` with `build(dir, name, mode)`, owned by the
    /// creator with `perm`, replacing a whiteout atomically; a directory created over a
    /// whiteout is made opaque. Returns the new node (lookup count unchanged) and the fd the
    /// builder returned (a regular file opened for I/O).
    ///
    /// `perm` is the requested mode before `umask`. The builder runs with the requester's
    /// umask in force, so the upper file system gives the new object the parent's default
    /// ACL (which replaces the umask) or else applies the umask, as for a local create; an
    /// object made in the work dir (over a whiteout) is made in a scratch directory that
    /// carries the parent's default ACL. The usual case (a creator whose ids the server's own
    /// creation already gives) needs no chown and no chmod; set-ID bits come only after the
    /// chown, which clears them. The node is made from what was just created, without
    /// resolving the name again.
    pub(crate) fn create_obj(
        &self,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        (perm, umask): (u32, u32),
        who: Creator,
        build: impl FnOnce(RawFd, &OsStr, u32) -> io::Result<Option<OwnedFd>>,
    ) -> io::Result<(Arc<Node>, Option<OwnedFd>)> {
        let _changed = self.changing(parent, parent);
        let slot = self.slot(parent, name)?;
        let pfd = slot.pfd.as_raw_fd();
        let pst = sys::fstat(pfd)?;
        let uid = self.host_uid(who.uid)?;
        let mut perm = perm & 0o7777;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            if kind == FileType::Directory {
                perm |= libc::S_ISGID;
            }
            pst.st_gid
        } else {
            self.host_gid(who.gid)?
        };
        let direct = !slot.over_whiteout;
        let scratch = if direct { None } else { self.acl_scratch(pfd)? };
        let (dir, bname) = match (&scratch, direct) {
            (_, true) => (pfd, name.to_os_string()),
            (Some(s), false) => (s.fd.as_raw_fd(), self.tmp_name()),
            (None, false) => (self.work_fd()?, self.tmp_name()),
        };
        let made = sys::with_umask(umask, || build(dir, &bname, perm & 0o777))??;
        let finish = || -> io::Result<(libc::stat, Option<OwnedFd>)> {
            // The fd to finish the object through: the builder's (a regular file), the new
            // directory's (it becomes the node's), or an O_PATH one.
            let own = match (&made, kind) {
                (Some(_), _) => None,
                (None, FileType::Directory) => Some(sys::open_dir(dir, &bname)?),
                (None, _) => Some(sys::open_path(dir, &bname)?),
            };
            let fd = match (&made, &own) {
                (Some(f), _) | (None, Some(f)) => f.as_raw_fd(),
                (None, None) => unreachable!("one of them is set"),
            };
            let st = sys::fstat(fd)?;
            if st.st_uid != uid || st.st_gid != gid {
                sys::fchown_fd(fd, uid, gid)?;
            }
            // The permission bits are the file system's (umask or default ACL); the set-ID
            // and sticky bits asked for are added here, after the chown.
            let mode = (st.st_mode & 0o777) | (perm & 0o7000);
            if kind != FileType::Symlink && st.st_mode & 0o7777 != mode {
                if made.is_some() {
                    sys::fchmod(fd, mode)?;
                } else {
                    sys::fchmod_fd(fd, mode)?;
                }
            }
            if kind == FileType::Directory && (slot.over_whiteout || slot.wh_file) {
                self.set_opaque(fd)?;
            }
            if !direct {
                if kind == FileType::Directory {
                    sys::renameat2(dir, &bname, pfd, name, libc::RENAME_EXCHANGE)?;
                    sys::unlinkat(dir, &bname, 0)?;
                } else {
                    sys::renameat2(dir, &bname, pfd, name, 0)?;
                }
            }
            Ok((st, own))
        };
        let (st, own) = match finish() {
            Ok(r) => r,
            Err(e) => {
                let _ = Self::remove_tree(dir, &bname);
                return Err(e);
            }
        };
        if slot.wh_file {
            let _ = sys::unlinkat(pfd, &whiteout::wh_name(name), 0);
        }
        // What a lookup would find now: only the new upper object (the slot made sure no
        // lower shows the name, or a whiteout hid it, and then a directory was made opaque).
        let (obj, lower_path) = match (kind, own) {
            (FileType::Directory, Some(d)) => (Obj::Fd(Arc::new(d)), None),
            _ => {
                // A plain file's lower path is its parent's plus its name (what resolve gives;
                // the node does not store it); a new directory has no lowers.
                let lp = match kind {
                    FileType::Directory => None,
                    _ => self.node(parent)?.st.read().lower_path.clone(),
                };
                (Obj::at(slot.pfd.clone(), name), lp.map(|p| p.join(name)))
            }
        };
        let f = Found {
            upper: Some((obj, st)),
            lower_path,
            ..Default::default()
        };
        Ok((self.node_for(parent, name, f), made))
    }

    /// A scratch directory in the work dir carrying the default ACL of the directory `pfd`,
    /// for objects that are made in the work dir and then renamed under `pfd`; `None` when
    /// `pfd` has no default ACL (or ACLs are off). Removed with what is left in it on drop.
    fn acl_scratch(&self, pfd: RawFd) -> io::Result<Option<Scratch>> {
        if self.cfg.noacl {
            return Ok(None);
        }
        let Some(acl) = sys::getxattr_fd(pfd, xattr::ACL_DEFAULT)? else {
            return Ok(None);
        };
        let work = self.work_fd()?;
        let name = self.tmp_name();
        sys::mkdirat(work, &name, 0o700)?;
        let s = Scratch {
            fd: sys::open_dir(work, &name)?,
            work,
            name,
        };
        sys::setxattr_fd(s.fd.as_raw_fd(), xattr::ACL_DEFAULT, &acl, 0)?;
        Ok(Some(s))
    }

    /// Marks the directory behind `fd` opaque in the configured format.
    pub(crate) fn set_opaque(&self, fd: RawFd) -> io::Result<()> {
        if self.wh_files() {
            sys::openat(
                fd,
                OsStr::new(whiteout::WH_OPAQUE),
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )
            .map(drop)
        } else {
            sys::setxattr_fd(fd, &self.ovl_xattr("opaque"), b"y", 0)
        }
    }

    /// Writes a whiteout for `name` into upper dir `pfd` (where nothing real is).
    fn write_whiteout(&self, pfd: RawFd, name: &OsStr) -> io::Result<()> {
        if self.wh_files() {
            whiteout::create_wh_file(pfd, name)
        } else {
            match self.link_whiteout(pfd, name) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // A stale whiteout already there.
                    Ok(())
                }
                r => r,
            }
        }
    }

    /// Creates a kernel-format whiteout `pfd/name` as a hard link to one shared whiteout in
    /// the work dir (as kernel overlayfs does): a link costs a directory entry where a
    /// mknod allocates an inode, several times dearer on ext4. Falls back to mknod.
    fn link_whiteout(&self, pfd: RawFd, name: &OsStr) -> io::Result<()> {
        let shared = OsStr::new(SHARED_WHITEOUT);
        if let Ok(w) = self.work_fd() {
            for _ in 0..2 {
                match sys::linkat(w, shared, pfd, name) {
                    Ok(()) => return Ok(()),
                    Err(e) => match e.raw_os_error() {
                        Some(libc::ENOENT) | Some(libc::EMLINK) => {
                            if e.raw_os_error() == Some(libc::EMLINK) {
                                // Full: later whiteouts share a new one.
                                let _ = sys::unlinkat(w, shared, 0);
                            }
                            match whiteout::mknod_whiteout(w, shared) {
                                Ok(()) => {}
                                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                                Err(_) => break,
                            }
                        }
                        Some(libc::EEXIST) => return Err(e),
                        _ => break,
                    },
                }
            }
        }
        whiteout::mknod_whiteout(pfd, name)
    }

    /// Moves the real upper entry `pfd/name` into the work dir (leaving a whiteout in its
    /// place when `whiteout` is set, atomically when the fs allows) and returns its temp name.
    fn take_out(&self, pfd: RawFd, name: &OsStr, whiteout: bool) -> io::Result<std::ffi::OsString> {
        let w = self.work_fd()?;
        let tmp = self.tmp_name();
        if whiteout && !self.wh_files() {
            match sys::renameat2(pfd, name, w, &tmp, libc::RENAME_WHITEOUT) {
                Ok(()) => return Ok(tmp),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EOPNOTSUPP)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        sys::renameat2(pfd, name, w, &tmp, 0)?;
        if whiteout {
            self.write_whiteout(pfd, name)?;
        }
        Ok(tmp)
    }

    /// The name of `node` goes: an open file keeps being reached through an fd (fstat of an
    /// open unlinked file); others are only reachable by name, so they need none.
    /// Also pins a hard-linked file whose upper object is reached by exactly this name
    /// (`dir`/`name`): its other links keep it alive.
    fn pin_if_open(node: &Arc<Node>, dir: &Fd, name: &OsStr) {
        let mut st = node.st.write();
        let by_this_name = matches!(
            &st.upper,
            Some(Obj::At(d, n)) if Arc::ptr_eq(d, dir) && **n == *name
        );
        let other_links = || {
            st.upper
                .as_ref()
                .and_then(|u| u.stat().ok())
                .is_some_and(|s| s.st_nlink > 1)
        };
        if node.opens.load(Ordering::Acquire) > 0 || (by_this_name && other_links()) {
            if let Some(u) = st.upper.as_mut() {
                u.pin();
            }
        }
    }

    fn note_removed(&self, node: &Arc<Node>) {
        let mut st = node.st.write();
        let gone = if node.kind == FileType::Directory {
            true
        } else if let Some(u) = &st.upper {
            match u.fd() {
                Ok(f) => match self.adjust_nlink(f.as_raw_fd(), -1) {
                    Some(n) => n == 0,
                    None => sys::fstat(f.as_raw_fd())
                        .map(|s| s.st_nlink == 0)
                        .unwrap_or(true),
                },
                Err(_) => true,
            }
        } else {
            st.removed_links += 1;
            // Lowers never change: the link count seen when it was resolved still holds.
            let nlink = match st.lower_nlink {
                0 => st
                    .lowers
                    .first()
                    .and_then(|l| l.1.stat().ok())
                    .map(|s| u32::try_from(s.st_nlink).unwrap_or(u32::MAX)),
                n => Some(n),
            };
            nlink.is_none_or(|n| n <= st.removed_links)
        };
        drop(st);
        if gone {
            node.unlinked.store(true, Ordering::Release);
        }
    }

    /// Whether removing `name` from `parent` needs a whiteout: known from the node's
    /// resolution, else asked of the parent's lower layers.
    fn needs_whiteout(&self, pnode: &Node, node: &Node, name: &OsStr) -> bool {
        let known = node.st.read().in_lower;
        known.unwrap_or_else(|| self.lower_has(&pnode.st.read().clone(), name))
    }

    /// unlink(2).
    pub(crate) fn do_unlink(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let _changed = self.changing(parent, parent);
        Self::check_name(name)?;
        let pnode = self.node(parent)?;
        let node = self.known_or_lookup(parent, name)?;
        if node.kind == FileType::Directory {
            return Err(err(libc::EISDIR));
        }
        let pdir = self.upper_dir(parent)?;
        let pfd = pdir.as_raw_fd();
        // Wait for a copy-up of this file in flight, and keep a new one from renaming a copy
        // over the whiteout written here (it sees `unlinked` and stays anonymous).
        let _g = node.copy_lock.lock();
        Self::pin_if_open(&node, &pdir, name);
        let need_wh = self.needs_whiteout(&pnode, &node, name);
        // Without an upper object nothing real is at the name in the upper layer (every
        // upper change goes through the mount and gives the node its upper): a whiteout alone.
        let upper_entry = if node.st.read().upper.is_none() {
            None
        } else {
            sys::lstatat_opt(pfd, name)?
        };
        match upper_entry {
            Some(st) if !whiteout::is_whiteout(&st) => {
                if need_wh {
                    let tmp = self.take_out(pfd, name, true)?;
                    sys::unlinkat(self.work_fd()?, &tmp, 0)?;
                } else {
                    sys::unlinkat(pfd, name, 0)?;
                }
            }
            _ => self.write_whiteout(pfd, name)?,
        }
        self.nodes.unset_name(parent, name, node.ino);
        self.note_removed(&node);
        Ok(())
    }

    /// rmdir(2).
    pub(crate) fn do_rmdir(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let _changed = self.changing(parent, parent);
        Self::check_name(name)?;
        let pnode = self.node(parent)?;
        let node = self.known_or_lookup(parent, name)?;
        if node.kind != FileType::Directory {
            return Err(err(libc::ENOTDIR));
        }
        let nst = node.st.read().clone();
        if !self.dir_is_empty(&nst)? {
            return Err(err(libc::ENOTEMPTY));
        }
        let pfd = self.upper_dir(parent)?;
        let pfd = pfd.as_raw_fd();
        let need_wh = self.needs_whiteout(&pnode, &node, name);
        let upper_entry = if nst.upper.is_none() {
            None
        } else {
            sys::lstatat_opt(pfd, name)?
        };
        match upper_entry {
            Some(st) if is_dir(&st) => {
                let tmp = self.take_out(pfd, name, need_wh)?;
                Self::remove_tree(self.work_fd()?, &tmp)?;
            }
            Some(st) if !whiteout::is_whiteout(&st) => return Err(err(libc::ENOTDIR)),
            _ => {
                if need_wh {
                    self.write_whiteout(pfd, name)?;
                }
            }
        }
        self.nodes.unset_name(parent, name, node.ino);
        self.note_removed(&node);
        Ok(())
    }

    /// After a directory moved to a new name: give it a redirect to its lower origin (when it
    /// has lower content) or make it opaque (when it is upper-only and the new name has lower
    /// entries), so that the new name never merges foreign lower children.
    fn fix_moved_dir(&self, node: &Arc<Node>, dst_has_lower: bool) -> io::Result<()> {
        let st = node.st.read().clone();
        let Some(up) = st.upper_dir().cloned() else {
            return Ok(());
        };
        let raw = up.as_raw_fd();
        if !st.lowers.is_empty() {
            if !sys::xattr_is_y(raw, &self.rcl_xattr("redirect")) {
                let lp = st.lower_path.clone().ok_or_else(|| err(libc::EXDEV))?;
                use std::os::unix::ffi::OsStrExt;
                sys::setxattr_fd(
                    raw,
                    &self.ovl_xattr("redirect"),
                    lp.as_os_str().as_bytes(),
                    0,
                )?;
                sys::setxattr_fd(raw, &self.rcl_xattr("redirect"), b"y", 0)?;
            }
        } else if dst_has_lower && !whiteout::is_opaque_dir(raw) {
            if self.wh_files() {
                sys::openat(
                    raw,
                    OsStr::new(whiteout::WH_OPAQUE),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o600,
                )?;
            } else {
                sys::setxattr_fd(raw, &self.ovl_xattr("opaque"), b"y", 0)?;
            }
        }
        Ok(())
    }

    fn materialize(&self, parent: u64, name: &OsStr, node: &Arc<Node>) -> io::Result<()> {
        if node.kind == FileType::Directory {
            self.upper_dir(node.ino).map(drop)
        } else {
            self.upper_name(parent, name, node)
        }
    }

    /// True when upper dir `pfd` holds a whiteout (either format) for `name`.
    fn upper_hides(&self, pfd: RawFd, name: &OsStr) -> bool {
        matches!(sys::lstatat_opt(pfd, name), Ok(Some(s)) if whiteout::is_whiteout(&s))
            || whiteout::has_wh_file(pfd, name)
    }

    /// rename(2) / renameat2(2) with NOREPLACE and EXCHANGE.
    pub(crate) fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> io::Result<Reparented> {
        let _changed = self.changing(parent, newparent);
        Self::check_name(name)?;
        Self::check_name(newname)?;
        if flags & libc::RENAME_WHITEOUT != 0
            || flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
        {
            return Err(err(libc::EINVAL));
        }
        if whiteout::is_wh_name(newname) {
            return Err(err(libc::EPERM));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let src = self.known_or_lookup(parent, name)?;
        let pnode = self.node(parent)?;
        let npnode = self.node(newparent)?;
        let dst = {
            let nst = npnode.st.read().clone();
            self.resolve(&nst, newname)?
                .map(|f| self.node_for(newparent, newname, f))
        };
        if exchange && dst.is_none() {
            return Err(err(libc::ENOENT));
        }
        if noreplace && dst.is_some() {
            return Err(err(libc::EEXIST));
        }
        if let Some(d) = &dst {
            if Arc::ptr_eq(d, &src) {
                return Ok(Reparented::default());
            }
            if !exchange {
                let sdir = src.kind == FileType::Directory;
                let ddir = d.kind == FileType::Directory;
                if sdir && !ddir {
                    return Err(err(libc::ENOTDIR));
                }
                if !sdir && ddir {
                    return Err(err(libc::EISDIR));
                }
                if ddir && !self.dir_is_empty(&d.st.read().clone())? {
                    return Err(err(libc::ENOTEMPTY));
                }
            }
        }
        let pfd = self.upper_dir(parent)?;
        let npfd = self.upper_dir(newparent)?;
        let (praw, npraw) = (pfd.as_raw_fd(), npfd.as_raw_fd());
        self.materialize(parent, name, &src)?;
        let _g = src.copy_lock.lock();
        let pst = pnode.st.read().clone();
        let nst = npnode.st.read().clone();
        if exchange {
            let d = dst.expect("checked");
            self.materialize(newparent, newname, &d)?;
            let src_new_lower = self.lower_has(&nst, newname);
            let dst_new_lower = self.lower_has(&pst, name);
            sys::renameat2(praw, name, npraw, newname, libc::RENAME_EXCHANGE)?;
            if src.kind == FileType::Directory {
                self.fix_moved_dir(&src, src_new_lower)?;
            }
            if d.kind == FileType::Directory {
                self.fix_moved_dir(&d, dst_new_lower)?;
            }
            self.set_location(&src, newparent, newname, &npfd, src_new_lower);
            self.set_location(&d, parent, name, &pfd, dst_new_lower);
            let mut moved = Reparented::default();
            if parent != newparent {
                moved.add(&src);
                moved.add(&d);
            }
            return Ok(moved);
        }
        let known = src.st.read().in_lower;
        let need_wh = known.unwrap_or_else(|| self.lower_has(&pst, name));
        let src_new_lower = self.lower_has(&nst, newname);
        let dst_lower = src_new_lower || self.upper_hides(npraw, newname);
        if let Some(d) = &dst {
            Self::pin_if_open(d, &npfd, newname);
        }
        if src.kind == FileType::Directory {
            if let Some(d) = &dst {
                if let Some(u) = d.st.read().upper_dir().cloned() {
                    Self::clear_upper_dir(u.as_raw_fd())?;
                }
            }
            self.fix_moved_dir(&src, dst_lower)?;
        }
        let upper_dst = sys::lstatat_opt(npraw, newname)?;
        let dst_is_nondir_placeholder = upper_dst.as_ref().is_some_and(whiteout::is_whiteout);
        if src.kind == FileType::Directory && dst_is_nondir_placeholder {
            sys::renameat2(praw, name, npraw, newname, libc::RENAME_EXCHANGE)?;
            // The whiteout that was at the target is now at the source name.
            if !need_wh || self.wh_files() {
                sys::unlinkat(praw, name, 0)?;
                if need_wh {
                    whiteout::create_wh_file(praw, name)?;
                }
            }
        } else {
            let mut done = false;
            if need_wh && !self.wh_files() {
                match sys::renameat2(praw, name, npraw, newname, libc::RENAME_WHITEOUT) {
                    Ok(()) => done = true,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EOPNOTSUPP)
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
            if !done {
                sys::renameat2(praw, name, npraw, newname, 0)?;
                if need_wh {
                    self.write_whiteout(praw, name)?;
                }
            }
        }
        if self.wh_files() {
            let _ = sys::unlinkat(npraw, &whiteout::wh_name(newname), 0);
        }
        if let Some(d) = dst {
            self.note_removed(&d);
        }
        self.nodes.unset_name(parent, name, src.ino);
        self.set_location(&src, newparent, newname, &npfd, src_new_lower);
        let mut moved = Reparented::default();
        if parent != newparent {
            moved.add(&src);
        }
        Ok(moved)
    }

    /// Records that `node` is now `parent/name` (whose lowers show the name when `in_lower`).
    fn set_location(
        &self,
        node: &Arc<Node>,
        parent: u64,
        name: &OsStr,
        upper_parent: &Fd,
        in_lower: bool,
    ) {
        let mut st = node.st.write();
        if node.kind != FileType::Directory && st.lower_path.is_none() && !st.lowers.is_empty() {
            // Its lower data stays where it was: keep that path before the name changes.
            st.lower_path = self.lower_path_of(&st);
        }
        let nm: Name = Arc::from(name);
        st.parent = parent;
        st.name = nm.clone();
        st.in_lower = Some(in_lower);
        if node.kind != FileType::Directory {
            st.upper = Some(Obj::At(upper_parent.clone(), nm));
        }
        drop(st);
        self.nodes.set_name(parent, name, node.ino);
    }

    /// link(2): a new name for an existing non-directory.
    pub(crate) fn do_link(
        &self,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
    ) -> io::Result<Arc<Node>> {
        let _changed = self.changing(newparent, newparent);
        let node = self.node(ino)?;
        if node.kind == FileType::Directory {
            return Err(err(libc::EPERM));
        }
        let slot = self.slot(newparent, newname)?;
        self.copy_up(&node, crate::copyup::CopyMode::Full)?;
        let up = node.st.read().upper.clone().ok_or_else(|| err(libc::EIO))?;
        let up = up.fd()?;
        let npfd = slot.pfd.as_raw_fd();
        if slot.over_whiteout {
            let w = self.work_fd()?;
            let tmp = self.tmp_name();
            sys::link_fd(up.as_raw_fd(), w, &tmp)?;
            sys::renameat2(w, &tmp, npfd, newname, 0).inspect_err(|_| {
                let _ = sys::unlinkat(w, &tmp, 0);
            })?;
        } else {
            sys::link_fd(up.as_raw_fd(), npfd, newname)?;
        }
        if slot.wh_file {
            let _ = sys::unlinkat(npfd, &whiteout::wh_name(newname), 0);
        }
        self.adjust_nlink(up.as_raw_fd(), 1);
        node.unlinked.store(false, Ordering::Release);
        self.lookup_node(newparent, newname)
    }
}

/// A directory in the work dir that lives as long as one create (see `acl_scratch`).
pub(crate) struct Scratch {
    fd: OwnedFd,
    work: RawFd,
    name: std::ffi::OsString,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = UnionFs::remove_tree(self.work, &self.name);
    }
}

/// The directories a rename gave a new parent (at most two, with RENAME_EXCHANGE): their `..`
/// entry changed although their own entries did not. Empty for renames of non-directories and
/// renames within one directory.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Reparented {
    inos: [u64; 2],
    len: usize,
}

impl Reparented {
    fn add(&mut self, node: &Node) {
        if node.kind == FileType::Directory {
            self.inos[self.len] = node.ino;
            self.len += 1;
        }
    }

    /// The node numbers of the moved directories.
    pub(crate) fn inos(&self) -> &[u64] {
        &self.inos[..self.len]
    }
}
