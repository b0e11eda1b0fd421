//! The [`fuser::Filesystem`] implementation: decodes requests, calls the layer logic, replies.

use crate::copyup::{kill_bits, CopyMode, NewAttrs};
use crate::core::{Handle, UnionFs};
use crate::dircache::DirHandle;
use crate::node::{Node, Obj};
use crate::ops::Creator;
use crate::{sys, xattr};
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// O_LARGEFILE as the kernel sets it in FUSE open flags (libc's is 0 on some targets).
#[cfg(target_arch = "x86_64")]
const O_LARGEFILE_KERNEL: i32 = 0o100000;
#[cfg(not(target_arch = "x86_64"))]
const O_LARGEFILE_KERNEL: i32 = libc::O_LARGEFILE;

/// Entry and attribute validity: the server is the only writer of its layers.
const TTL: Duration = Duration::from_secs(3600);

fn e(err: io::Error) -> Errno {
    Errno::from(err)
}

fn eno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let mut s = -(d.as_secs() as i64);
                    let mut n = d.subsec_nanos() as i64;
                    if n > 0 {
                        s -= 1;
                        n = 1_000_000_000 - n;
                    }
                    (s, n)
                }
            };
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            }
        }
    }
}

/// The changes a setattr asks for.
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
    /// The requesting thread (for the set-ID clearing decision).
    pid: u32,
}

impl UnionFs {
    /// Directory `ino` moved to another parent: its `..` now names that parent. rcl-fs's own
    /// listings keep no inode number for `..` (readdir takes it from the node's parent at
    /// answer time), but the kernel caches the listing as it was read (FOPEN_CACHE_DIR) and
    /// resets that cache only when the directory itself changes, which a move is not. Drop
    /// the kernel's cached pages of the directory (and its attributes), so that the next
    /// listing asks again.
    ///
    /// Called by the rename handler before it replies, so that no listing made after
    /// rename(2) returns can come from the old cache. This cannot deadlock: the kernel handles
    /// the notification in this thread's write to /dev/fuse and sends no request for it
    /// (fuse_notify_inval_inode: `killsb` read-locked, which is write-locked only when the
    /// superblock is shut down — not possible while the rename holds the mount; an inode
    /// lookup of a directory the rename pins; then invalidate_inode_pages2 on its mapping).
    /// The only pages there are the readdir cache, whose page locks are taken by readers
    /// under the directory's i_rwsem — held exclusively by the rename of a directory to
    /// another parent (Linux 6.5 and later; both directories for RENAME_EXCHANGE) — and never
    /// held across a request to this server.
    pub(crate) fn dotdot_changed(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            // ENOENT (the kernel holds no such inode: nothing cached) is ignored by fuser;
            // another error leaves the cache as it was, as before this existed.
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
        }
    }

    fn entry(&self, node: &Arc<Node>, reply: ReplyEntry) {
        match self.attr(node) {
            Ok(a) => {
                self.nodes.add_lookup(node);
                reply.entry(&TTL, &a, Generation(0));
            }
            Err(err) => reply.error(e(err)),
        }
    }

    fn ro(&self) -> Option<Errno> {
        self.upper.is_none().then_some(Errno::EROFS)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.handles.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens `node` for I/O with `flags`, copying up first when writing.
    fn open_node(&self, node: &Arc<Node>, flags: i32) -> io::Result<Handle> {
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        if acc != libc::O_RDONLY || trunc {
            if self.upper.is_none() {
                return Err(eno(libc::EROFS));
            }
            let mode = if trunc {
                CopyMode::Empty
            } else {
                CopyMode::Full
            };
            let c = self.copy_up_with(node, mode, None)?;
            // The copy-up's own read-write fd serves a plain open (no second open by name).
            let plain = libc::O_ACCMODE
                | O_LARGEFILE_KERNEL
                | libc::O_CLOEXEC
                | libc::O_NOCTTY
                | libc::O_TRUNC
                | libc::O_NOFOLLOW;
            if let Some(fd) = c.data.filter(|_| flags & !plain == 0) {
                return Ok(Handle::new(fd, node.clone(), false));
            }
        }
        let (data, lower) = {
            let st = node.st.read();
            let d = st.data().cloned().ok_or_else(|| eno(libc::ESTALE))?;
            (d, st.upper.is_none() || st.metacopy)
        };
        let flags = self.handle_flags(flags);
        let f = if lower {
            data.open_noatime(flags)?
        } else {
            data.open(flags)?
        };
        Ok(Handle::new(f, node.clone(), lower))
    }

    /// The flags to open a file for a handle with, from the flags of the open (O_NOFOLLOW is
    /// the opener's business).
    fn handle_flags(&self, flags: i32) -> i32 {
        // O_DIRECT stays the kernel's business: it bypasses its page cache for such opens, and
        // the daemon's reads into its own buffers would fail the alignment rules.
        let mut flags = flags & !(libc::O_NOFOLLOW | libc::O_DIRECT);
        if self.writeback.load(Ordering::Relaxed) {
            // The kernel's page cache may read around partial writes and tracks the append
            // offset itself.
            if flags & libc::O_ACCMODE == libc::O_WRONLY {
                flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            flags &= !libc::O_APPEND;
        }
        flags
    }

    /// The fd a daemon-served read of `h` reads: `h.fd`, or the upper copy once a handle
    /// opened on a lower copy outlives the node's copy-up (as on kernel overlayfs, it then
    /// reads what was written).
    fn read_fd<'a>(&self, h: &'a Handle) -> io::Result<&'a OwnedFd> {
        if !h.lower {
            return Ok(&h.fd);
        }
        if let Some(f) = h.upper.get() {
            return Ok(f);
        }
        let copied = {
            let st = h.node.st.read();
            st.upper.is_some() && !st.metacopy
        };
        if !copied {
            return Ok(&h.fd);
        }
        let up = self.open_node(&h.node, libc::O_RDONLY)?;
        let _ = h.upper.set(up.fd);
        Ok(h.upper.get().unwrap_or(&h.fd))
    }

    /// Registers an open handle; when passthrough is on, attaches the node's shared backing
    /// id (made now from this handle's file if none is in use). Returns (fh, flags, backing).
    fn finish_open(
        &self,
        mut h: Handle,
        writing: bool,
        open_backing: impl FnOnce(&OwnedFd) -> io::Result<fuser::BackingId>,
    ) -> io::Result<(u64, FopenFlags, Option<Arc<fuser::BackingId>>)> {
        let fh = self.new_fh();
        let mut flags = FopenFlags::empty();
        let mut backing = None;
        if self.passthrough.load(Ordering::Relaxed) && h.node.kind == FileType::RegularFile {
            let from_upper = !h.lower;
            let mut b = h.node.backing.lock();
            // Handles open without passthrough (the kernel's page cache serves them): while
            // any is open the inode cannot take a backing file.
            let cached = h.node.opens.load(Ordering::Acquire) > b.users;
            match &b.id {
                Some((id, up)) if *up == from_upper => backing = Some(id.clone()),
                // A read-only open may share a lower backing still in use (it reads what the
                // handles opened before the copy-up read), never a write.
                Some((id, false)) if !writing => backing = Some(id.clone()),
                Some(_) => {
                    // The kernel allows one backing file per inode: a handle on the lower
                    // copy is still open while this one needs the upper copy.
                    return Err(eno(libc::ETXTBSY));
                }
                // Small lower files are read through the page cache: a later open for
                // writing (a copy-up) can then be served beside them, which a backing file on
                // the lower copy would forbid; big ones keep passthrough's read speed.
                None if cached || (h.lower && !writing && small(&h.fd)) => {}
                None => match open_backing(&h.fd) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        b.id = Some((id.clone(), from_upper));
                        backing = Some(id);
                    }
                    Err(err) => {
                        if err.raw_os_error() == Some(libc::EPERM) {
                            log::info!("passthrough not permitted; serving I/O in the daemon");
                            self.passthrough.store(false, Ordering::Relaxed);
                        }
                    }
                },
            }
            if backing.is_some() {
                b.users += 1;
                h.passthrough = true;
            }
        }
        if backing.is_none() && !writing {
            flags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        h.node.opens.fetch_add(1, Ordering::AcqRel);
        self.handles.write().insert(fh, Arc::new(h));
        Ok((fh, flags, backing))
    }

    fn do_setattr(&self, node: &Arc<Node>, a: SetAttr) -> io::Result<FileAttr> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
            pid,
        } = a;
        if self.upper.is_none() {
            return Err(eno(libc::EROFS));
        }
        let cmode = if let Some(s) = size {
            if s == 0 {
                CopyMode::Empty
            } else {
                CopyMode::Full
            }
        } else if self.cfg.metacopy && node.kind == FileType::RegularFile {
            CopyMode::Meta
        } else {
            CopyMode::Full
        };
        let nothing = mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        let host_uid = uid.map(|u| self.host_uid(u)).transpose()?;
        let host_gid = gid.map(|g| self.host_gid(g)).transpose()?;
        if size.is_none() && !nothing {
            // A change that copies the node up is made on the copy, before it goes into place.
            let set = NewAttrs {
                mode: mode.filter(|_| node.kind != FileType::Symlink),
                uid: host_uid,
                gid: host_gid,
                times: (atime.is_some() || mtime.is_some())
                    .then(|| [timespec(atime), timespec(mtime)]),
            };
            if self.copy_up_with(node, cmode, Some(&set))?.applied {
                return self.attr(node);
            }
        } else {
            self.copy_up(node, cmode)?;
        }
        let (up, parent, name) = {
            let st = node.st.read();
            (
                st.upper.clone().ok_or_else(|| eno(libc::EIO))?,
                st.parent,
                st.name.clone(),
            )
        };
        // An upper object reached by name is changed by name, without opening it.
        let mut mode = mode;
        if node.kind != FileType::Directory && mode.is_none() && (size.is_some() || nothing) {
            // FUSE_HANDLE_KILLPRIV_V2: a truncate by a caller without CAP_FSETID clears the
            // set-ID bits. So does the attribute change without attributes that the kernel
            // sends for a write it does not send us (passthrough) or for chown(-1, -1).
            let st = up.stat()?;
            let k = kill_bits(st.st_mode);
            if k != 0 && !caller_has_fsetid(pid) {
                mode = Some(st.st_mode & 0o7777 & !k);
            }
        }
        if uid.is_some() || gid.is_some() {
            let (u, g) = (host_uid.unwrap_or(u32::MAX), host_gid.unwrap_or(u32::MAX));
            match &up {
                Obj::At(d, n) => sys::fchownat_nofollow(d.as_raw_fd(), n, u, g)?,
                Obj::Fd(f) => sys::fchown_fd(f.as_raw_fd(), u, g)?,
            }
        }
        if let Some(m) = mode {
            if node.kind != FileType::Symlink {
                let by_name = match &up {
                    Obj::At(d, n) => sys::fchmodat_nofollow(d.as_raw_fd(), n, m),
                    Obj::Fd(_) => Err(eno(libc::ENOSYS)),
                };
                match by_name {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                        sys::fchmod_fd(up.fd()?.as_raw_fd(), m)?
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if let Some(s) = size {
            let handle = fh.and_then(|f| self.handles.read().get(&f.0).cloned());
            let done = match handle {
                Some(h) if Arc::ptr_eq(&h.node, node) => {
                    sys::ftruncate(h.fd.as_raw_fd(), s).is_ok()
                }
                _ => false,
            };
            if !done {
                let f = up.open(libc::O_WRONLY)?;
                sys::ftruncate(f.as_raw_fd(), s)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            let ts = [timespec(atime), timespec(mtime)];
            match &up {
                Obj::At(d, n) => sys::utimensat(d.as_raw_fd(), n, &ts)?,
                Obj::Fd(_) if node.kind == FileType::Symlink => {
                    let pfd = self.upper_dir(parent)?;
                    sys::utimensat(pfd.as_raw_fd(), &name, &ts)?;
                }
                Obj::Fd(f) => sys::utimens_fd(f.as_raw_fd(), &ts)?,
            }
        }
        self.attr(node)
    }

    /// getxattr with heap buffers (any value size; kernels without getxattrat).
    fn getxattr_alloc(&self, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = (|| -> io::Result<Vec<u8>> {
            let c = sys::cstr(name)?;
            if xattr::hidden(&c, self.cfg.noacl) {
                return Err(eno(libc::ENODATA));
            }
            let n = self.node(ino.0)?;
            let meta = n.meta_obj()?;
            meta.getxattr(&c)?.ok_or_else(|| eno(libc::ENODATA))
        })();
        match r {
            Ok(v) => Self::xattr_reply(&v, size, reply),
            Err(err) => reply.error(e(err)),
        }
    }

    fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(value.len() as u32);
        } else if value.len() > size as usize {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(value);
        }
    }

    fn fill_dir(
        &self,
        ino: u64,
        fh: FileHandle,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileType, &OsStr, Option<(&Arc<Node>, FileAttr)>) -> bool,
        plus: bool,
    ) -> io::Result<()> {
        let dh = self
            .dirs
            .read()
            .get(&fh.0)
            .cloned()
            .ok_or_else(|| eno(libc::EBADF))?;
        let node = dh.node.clone();
        // From offset 0 (opendir, rewinddir) the current listing; later on the one this
        // handle started with (offsets mean the same in both).
        let kept = if offset == 0 {
            None
        } else {
            dh.listing.lock().clone()
        };
        let listing = match kept {
            Some(l) => l,
            None => {
                let l = self.listing(&node)?;
                *dh.listing.lock() = Some(l.clone());
                l
            }
        };
        let st = node.st.read().clone();
        let start = listing.start(offset);
        for (i, ent) in listing.entries.iter().enumerate().skip(start) {
            let (off, name, kind) = (ent.off, ent.name.as_os_str(), ent.kind);
            if i < 2 {
                let eino = if i == 0 { ino } else { st.parent };
                // The kernel ignores `.` and `..` of readdirplus for lookups; when the parent
                // node is not in the table, the directory's own attributes do.
                let n = self.nodes.get(eino).unwrap_or_else(|| node.clone());
                let a = if plus { self.attr(&n).ok() } else { None };
                if add(eino, off, FileType::Directory, name, a.map(|a| (&n, a))) {
                    break;
                }
                continue;
            }
            if plus {
                // One resolution gives the node and its attributes.
                let Ok(Some((n, a))) = self.resolve_entry(&node, &st, name) else {
                    continue;
                };
                if add(n.ino, off, n.kind, name, Some((&n, a))) {
                    break;
                }
                continue;
            }
            let Ok(Some(f)) = self.resolve(&st, name) else {
                continue;
            };
            let mut eino = self.ino_for(&f);
            if eino == 0 {
                eino = self.node_for(ino, name, f).ino;
            }
            if add(eino, off, kind, name, None) {
                break;
            }
        }
        Ok(())
    }
}

/// Clears the set-ID bits of the open file `fd` where a write or truncate takes them away;
/// with `pid`, only when that requester has no CAP_FSETID.
fn kill_privs_fd(fd: std::os::fd::RawFd, pid: Option<u32>) -> io::Result<()> {
    let st = sys::fstat(fd)?;
    let k = kill_bits(st.st_mode);
    if k != 0 && !pid.is_some_and(caller_has_fsetid) {
        sys::fchmod(fd, st.st_mode & 0o7777 & !k)?;
    }
    Ok(())
}

/// True when thread `pid` (of a request) holds CAP_FSETID in the initial user namespace,
/// which is what the kernel's `capable(CAP_FSETID)` asks. Read from /proc; anything unclear
/// counts as not privileged (the bits are then cleared, the safe side). Only asked about
/// files that have set-ID bits.
fn caller_has_fsetid(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    // The inode number of the initial user namespace (PROC_USER_INIT_INO).
    const INIT_USER_NS: u64 = 0xEFFF_FFFD;
    const CAP_FSETID: u32 = 4;
    if pid == 0 {
        return false;
    }
    let initial =
        std::fs::metadata(format!("/proc/{pid}/ns/user")).is_ok_and(|m| m.ino() == INIT_USER_NS);
    initial
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|c| c & (1 << CAP_FSETID) != 0)
}

impl UnionFs {
    /// mknod/mkdir/symlink: makes `parent/name` of `kind` with `build(dir, name, perm)` for
    /// the requester (refused on a read-only mount) and replies with its entry.
    #[allow(clippy::too_many_arguments)]
    fn make_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: FileType,
        (perm, umask): (u32, u32),
        reply: ReplyEntry,
        build: impl FnOnce(std::os::fd::RawFd, &OsStr, u32) -> io::Result<()>,
    ) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        let who = Creator::of(req);
        let r = self.create_obj(parent.0, name, kind, (perm, umask), who, |d, n, m| {
            build(d, n, m).map(|()| None)
        });
        match r {
            Ok((n, _)) => self.entry(&n, reply),
            Err(err) => reply.error(e(err)),
        }
    }
}

/// Lower files up to this size are read through the kernel's page cache, not passthrough.
const CACHED_READ_MAX: i64 = 1 << 20;

/// True for a file of at most [`CACHED_READ_MAX`] bytes (false when it cannot be stat'ed).
fn small(fd: &OwnedFd) -> bool {
    sys::fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_size <= CACHED_READ_MAX)
}

/// True when this process runs in the initial user namespace (identity uid map).
fn in_initial_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_MAX_PAGES
            // Set-ID bits are cleared here on write, truncate and chown (see `kill_bits`):
            // the kernel then stops asking for security.capability before every write and
            // for fresh attributes before every chown.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        // POSIX ACLs: the kernel then checks them in its permission checks (as kernel overlayfs
        // does; without it only the mode bits count) and caches them per inode, so `ls -l`'s
        // getxattr(system.posix_acl_access) on each entry no longer goes to the server.
        let want = if self.cfg.noacl {
            want
        } else {
            // With ACLs the umask is ours to apply (see `create_obj`): a default ACL on the
            // parent replaces it.
            want | InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK
        };
        let have = config.capabilities();
        let _ = config.add_capabilities(want & have);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        let mut pt = false;
        // open_backing needs CAP_SYS_ADMIN in the initial user namespace: do not ask for
        // passthrough where it cannot work, so that the writeback cache can be had instead.
        let may_pt = nix::unistd::geteuid().is_root() && in_initial_userns();
        if self.cfg.passthrough != crate::Passthrough::Off
            && may_pt
            && have.contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            pt = true;
        }
        self.passthrough.store(pt, Ordering::Relaxed);
        if self.cfg.passthrough == crate::Passthrough::On && !pt {
            return Err(io::Error::other("FUSE passthrough is not available"));
        }
        if !pt
            && self.upper.is_some()
            && have.contains(InitFlags::FUSE_WRITEBACK_CACHE)
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok()
        {
            self.writeback.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_entry(parent.0, name) {
            Ok((n, a)) => {
                self.nodes.add_lookup(&n);
                reply.entry(&TTL, &a, Generation(0));
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                let neg = FileAttr {
                    ino: INodeNo(0),
                    size: 0,
                    blocks: 0,
                    atime: UNIX_EPOCH,
                    mtime: UNIX_EPOCH,
                    ctime: UNIX_EPOCH,
                    crtime: UNIX_EPOCH,
                    kind: FileType::RegularFile,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 0,
                    flags: 0,
                };
                reply.entry(&TTL, &neg, Generation(0));
            }
            Err(err) => reply.error(e(err)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == 1 {
            return;
        }
        if let Some(n) = self.nodes.get(ino.0) {
            let prev = n
                .lookups
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    Some(v.saturating_sub(nlookup))
                })
                .unwrap_or(0);
            if prev <= nlookup {
                self.nodes.remove_if_unused(ino.0);
                self.dircache.forget(ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0).and_then(|n| self.attr(&n)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(err) => reply.error(e(err)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.node(ino.0).and_then(|n| {
            let a = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                fh,
                pid: req.pid(),
            };
            self.do_setattr(&n, a)
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(err) => reply.error(e(err)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.node(ino.0).and_then(|n| {
            let meta = n.meta_obj()?;
            sys::readlink_fd(meta.fd()?.as_raw_fd())
        });
        match r {
            Ok(t) => reply.data(t.as_bytes()),
            Err(err) => reply.error(e(err)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = crate::core::kind_of(mode);
        let perm = (mode & 0o7777, umask);
        self.make_entry(req, parent, name, kind, perm, reply, |d, n, m| {
            sys::mknodat(d, n, (mode & libc::S_IFMT) | m, rdev as u64)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make_entry(
            req,
            parent,
            name,
            FileType::Directory,
            (mode & 0o7777, umask),
            reply,
            sys::mkdirat,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        match self.do_unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        match self.do_rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.make_entry(
            req,
            parent,
            link_name,
            FileType::Symlink,
            (0o777, 0),
            reply,
            |d, n, _| sys::symlinkat(target.as_os_str(), d, n),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        match self.do_rename(parent.0, name, newparent.0, newname, flags.bits()) {
            Ok(moved) => {
                for &ino in moved.inos() {
                    self.dotdot_changed(ino);
                }
                reply.ok()
            }
            Err(err) => reply.error(e(err)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        match self.do_link(ino.0, newparent.0, newname) {
            Ok(n) => self.entry(&n, reply),
            Err(err) => reply.error(e(err)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let r = self.node(ino.0).and_then(|n| {
            let h = self.open_node(&n, flags.0)?;
            if flags.0 & libc::O_TRUNC != 0 && n.kind == FileType::RegularFile {
                // FUSE_HANDLE_KILLPRIV_V2: open(O_TRUNC) is a truncate.
                kill_privs_fd(h.fd.as_raw_fd(), Some(req.pid()))?;
            }
            Ok(h)
        });
        match r {
            Ok(h) => match self.finish_open(h, writing, |fd| reply.open_backing(fd)) {
                Ok((fh, fl, Some(id))) => reply.opened_passthrough(FileHandle(fh), fl, &id),
                Ok((fh, fl, None)) => reply.opened(FileHandle(fh), fl),
                Err(err) => reply.error(e(err)),
            },
            Err(err) => reply.error(e(err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(x) => return reply.error(x),
        };
        let fd = match self.read_fd(&h) {
            Ok(fd) => fd.as_raw_fd(),
            Err(err) => return reply.error(e(err)),
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match sys::pread(fd, &mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) => {
                    if got == 0 {
                        return reply.error(e(err));
                    }
                    break;
                }
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(x) => return reply.error(x),
        };
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            // The writer has no CAP_FSETID (the kernel removed security.capability itself).
            if let Err(err) = kill_privs_fd(h.fd.as_raw_fd(), None) {
                return reply.error(e(err));
            }
        }
        match sys::pwrite(h.fd.as_raw_fd(), data, offset) {
            Ok(n) => reply.written(n as u32),
            Err(err) => reply.error(e(err)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do on close (locks are the kernel's; writes are synchronous or written
        // back by the kernel before it sends FLUSH). ENOSYS makes the kernel stop sending
        // FLUSH at all, which saves one round trip per close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.handles.write().remove(&fh.0);
        if let Some(h) = h {
            h.node.opens.fetch_sub(1, Ordering::AcqRel);
            if h.passthrough {
                let mut b = h.node.backing.lock();
                b.users = b.users.saturating_sub(1);
                if b.users == 0 {
                    b.id = None;
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.handle(fh) {
            Ok(h) => match sys::fsync(h.fd.as_raw_fd(), datasync) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            },
            Err(x) => reply.error(x),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.node(ino.0).and_then(|n| {
            if n.kind != FileType::Directory {
                return Err(eno(libc::ENOTDIR));
            }
            Ok(n)
        });
        match r {
            Ok(node) => {
                let fh = self.new_fh();
                let dh = DirHandle {
                    node,
                    listing: parking_lot::Mutex::new(None),
                };
                self.dirs.write().insert(fh, Arc::new(dh));
                // The kernel keeps what it read in its own cache and serves later listings of
                // the unchanged directory without asking; every change through the mount
                // (create, unlink, rename...) makes it ask again.
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
                );
            }
            Err(err) => reply.error(e(err)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.fill_dir(
            ino.0,
            fh,
            offset,
            |eino, off, kind, name, _| reply.add(INodeNo(eino), off, kind, name),
            false,
        );
        match r {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.fill_dir(
            ino.0,
            fh,
            offset,
            |eino, off, _kind, name, node| {
                let Some((n, a)) = node else {
                    // No attributes to be had (a node gone meanwhile): leave the entry out.
                    return false;
                };
                let dot = name == "." || name == "..";
                let full = reply.add(INodeNo(eino), off, name, &TTL, &a, Generation(0));
                if !dot {
                    if full {
                        // Not sent: drop the node again unless the kernel holds it already.
                        self.nodes.remove_if_unused(n.ino);
                    } else {
                        self.nodes.add_lookup(n);
                    }
                }
                full
            },
            true,
        );
        match r {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.write().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.node(ino.0).and_then(|n| {
            if let Some(u) = n.st.read().upper_dir().cloned() {
                sys::fsync(u.as_raw_fd(), datasync)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fd = self
            .upper
            .as_ref()
            .map(|u| u.raw())
            .unwrap_or_else(|| self.lowers[0].raw());
        match sys::fstatvfs(fd) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(err) => reply.error(e(err)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        let r = (|| -> io::Result<()> {
            let c = sys::cstr(name)?;
            if xattr::is_private(c.to_bytes()) {
                return Err(eno(libc::EPERM));
            }
            if self.cfg.noacl && xattr::is_acl(c.to_bytes()) {
                return Err(eno(libc::EOPNOTSUPP));
            }
            let n = self.node(ino.0)?;
            let mode = if self.cfg.metacopy && n.kind == FileType::RegularFile {
                CopyMode::Meta
            } else {
                CopyMode::Full
            };
            self.copy_up(&n, mode)?;
            let up = n.st.read().upper.clone().ok_or_else(|| eno(libc::EIO))?;
            sys::setxattr_fd(up.fd()?.as_raw_fd(), &c, value, flags)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // The common case (`ls -l` asks every file for security.capability) without a heap
        // allocation: names and the value on the stack, the node's lock held for the call.
        let mut nbuf = [0u8; 256];
        let mut fbuf = [0u8; 256];
        let mut vbuf = [0u8; 1024];
        let Some(c) = sys::cstr_in(name.as_bytes(), &mut nbuf) else {
            return self.getxattr_alloc(ino, name, size, reply);
        };
        if xattr::hidden(c, self.cfg.noacl) {
            return reply.error(Errno::ENODATA);
        }
        let n = match self.node(ino.0) {
            Ok(n) => n,
            Err(err) => return reply.error(e(err)),
        };
        let r = {
            let st = n.st.read();
            match st.meta() {
                None => Some(Err(eno(libc::ESTALE))),
                Some(Obj::Fd(f)) => Some(sys::getxattr_fd_into(f.as_raw_fd(), c, &mut vbuf)),
                Some(Obj::At(d, fname)) => sys::cstr_in(fname.as_bytes(), &mut fbuf)
                    .map(|fc| sys::getxattrat_into(d.as_raw_fd(), fc, c, &mut vbuf))
                    .filter(|r| !matches!(r, Err(x) if x.raw_os_error() == Some(libc::ENOSYS))),
            }
        };
        match r {
            Some(Ok(Some(len))) => Self::xattr_reply(&vbuf[..len], size, reply),
            Some(Ok(None)) => reply.error(Errno::ENODATA),
            Some(Err(err)) if err.raw_os_error() != Some(libc::ERANGE) => reply.error(e(err)),
            // A value over 1 KiB, or no getxattrat: the general path.
            _ => self.getxattr_alloc(ino, name, size, reply),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = (|| -> io::Result<Vec<u8>> {
            let n = self.node(ino.0)?;
            let meta = n.meta_obj()?;
            let fd = meta.fd()?;
            let fd = fd.as_raw_fd();
            let mut out = Vec::new();
            for name in sys::listxattr_fd(fd)? {
                if xattr::hidden(&name, self.cfg.noacl) {
                    continue;
                }
                out.extend_from_slice(name.as_bytes_with_nul());
            }
            Ok(out)
        })();
        match r {
            Ok(v) => Self::xattr_reply(&v, size, reply),
            Err(err) => reply.error(e(err)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        let r = (|| -> io::Result<()> {
            let c: CString = sys::cstr(name)?;
            if xattr::hidden(&c, self.cfg.noacl) {
                return Err(eno(libc::ENODATA));
            }
            let n = self.node(ino.0)?;
            {
                let meta = n.meta_obj()?;
                let fd = meta.fd()?;
                let fd = fd.as_raw_fd();
                if sys::getxattr_fd(fd, &c)?.is_none() {
                    return Err(eno(libc::ENODATA));
                }
            }
            let mode = if self.cfg.metacopy && n.kind == FileType::RegularFile {
                CopyMode::Meta
            } else {
                CopyMode::Full
            };
            self.copy_up(&n, mode)?;
            let up = n.st.read().upper.clone().ok_or_else(|| eno(libc::EIO))?;
            sys::removexattr_fd(up.fd()?.as_raw_fd(), &c)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(e(err)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if let Some(x) = self.ro() {
            return reply.error(x);
        }
        let who = Creator::of(req);
        let perm = (mode & 0o7777, umask);
        // The file is created open for the handle: no second open by name.
        let hflags = self.handle_flags(flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC));
        let r = self
            .create_obj(
                parent.0,
                name,
                FileType::RegularFile,
                perm,
                who,
                |d, n, m| {
                    let f = libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                    sys::openat(d, n, hflags | f, m).map(Some)
                },
            )
            .and_then(|(n, fd)| {
                let fd = fd.ok_or_else(|| eno(libc::EIO))?;
                let h = Handle::new(fd, n.clone(), false);
                Ok((n, h))
            });
        match r {
            Ok((n, h)) => match self.attr(&n) {
                Ok(a) => match self.finish_open(h, true, |fd| reply.open_backing(fd)) {
                    Ok((fh, fl, id)) => {
                        self.nodes.add_lookup(&n);
                        let fh = FileHandle(fh);
                        match id {
                            Some(id) => {
                                reply.created_passthrough(&TTL, &a, Generation(0), fh, fl, &id)
                            }
                            None => reply.created(&TTL, &a, Generation(0), fh, fl),
                        }
                    }
                    Err(err) => reply.error(e(err)),
                },
                Err(err) => reply.error(e(err)),
            },
            Err(err) => reply.error(e(err)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.handle(fh) {
            Ok(h) => match sys::fallocate(h.fd.as_raw_fd(), mode, offset, length) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            },
            Err(x) => reply.error(x),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let (hi, ho) = match (self.handle(fh_in), self.handle(fh_out)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(x), _) | (_, Err(x)) => return reply.error(x),
        };
        let len = len.min(u32::MAX as u64 & !0xfff) as usize;
        match sys::copy_range(
            hi.fd.as_raw_fd(),
            offset_in,
            ho.fd.as_raw_fd(),
            offset_out,
            len,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(err) => reply.error(e(err)),
        }
    }

    /// `lsattr`/`chattr` (and the `fsxattr` pair): read from the object holding the metadata,
    /// set on the upper copy (copied up first). The kernel has checked ownership and
    /// CAP_LINUX_IMMUTABLE; every other ioctl is not supported (ENOTTY).
    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let set = match cmd {
            sys::FS_IOC_GETFLAGS | sys::FS_IOC_FSGETXATTR => false,
            sys::FS_IOC_SETFLAGS | sys::FS_IOC_FSSETXATTR => true,
            _ => return reply.error(Errno::ENOTTY),
        };
        if let Some(x) = self.ro().filter(|_| set) {
            return reply.error(x);
        }
        let r = self.node(ino.0).and_then(|node| {
            if !matches!(node.kind, FileType::RegularFile | FileType::Directory) {
                return Err(eno(libc::ENOTTY));
            }
            if set {
                // With the data: a file made append-only could not take its data later.
                self.copy_up(&node, CopyMode::Full)?;
            }
            let (obj, lower) = {
                let st = node.st.read();
                let o = st.meta().cloned().ok_or_else(|| eno(libc::ESTALE))?;
                (o, st.upper.is_none())
            };
            let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC;
            let fd = if lower {
                obj.open_noatime(flags)?
            } else {
                obj.open(flags)?
            };
            let mut arg = [0u8; 32];
            let n = in_data.len().min(arg.len());
            arg[..n].copy_from_slice(&in_data[..n]);
            sys::fileattr_ioctl(fd.as_raw_fd(), cmd, &mut arg)?;
            let out = if set {
                0
            } else {
                (out_size as usize).min(arg.len())
            };
            Ok(arg[..out].to_vec())
        });
        match r {
            Ok(out) => reply.ioctl(0, &out),
            Err(err) => reply.error(e(err)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.handle(fh) {
            Ok(h) => match sys::lseek(h.fd.as_raw_fd(), offset, whence) {
                Ok(o) => reply.offset(o),
                Err(err) => reply.error(e(err)),
            },
            Err(x) => reply.error(x),
        }
    }
}
