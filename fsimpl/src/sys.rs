//! Small safe wrappers over the raw `*at()` system calls the union filesystem is built on.
//!
//! Every call works relative to a directory file descriptor and never follows a symlink on the
//! host side (AT_SYMLINK_NOFOLLOW / O_NOFOLLOW), so a container that swaps a directory for a
//! symlink in the upper layer cannot steer the server outside its layers.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Converts a name or path into a C string (EINVAL on an interior NUL).
pub fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_ssize(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `/proc/self/fd/N`: a path that reaches the file behind `fd` (also an `O_PATH` fd).
pub fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub fn openat(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned by us.
    let fd = cvt(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a C path (used for `/proc/self/fd/N` reopen).
pub fn open_c(path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: path is a valid C string; the fd returned is owned by us.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reopens the file behind `fd` (e.g. an `O_PATH` fd) with new flags, via `/proc/self/fd/N`.
pub fn reopen(fd: RawFd, flags: i32) -> io::Result<OwnedFd> {
    open_c(
        &proc_path(fd),
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY),
        0,
    )
}

/// `O_PATH | O_NOFOLLOW` handle on `dir/name`.
pub fn open_path(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// `openat` with O_NOATIME (reading layers must not touch their atimes), retried without it
/// where it is not permitted (not the owner and no CAP_FOWNER).
pub fn openat_noatime(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    match openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => openat(dir, name, flags, 0),
        r => r,
    }
}

/// [`reopen`] with O_NOATIME when permitted.
pub fn reopen_noatime(fd: RawFd, flags: i32) -> io::Result<OwnedFd> {
    match reopen(fd, flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => reopen(fd, flags),
        r => r,
    }
}

/// Opens a directory for reading its entries and xattrs, without following symlinks.
pub fn open_dir(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    match openat_noatime(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => openat(
            dir,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ),
        r => r,
    }
}

/// An all-zero `struct stat`.
pub fn zero_stat() -> libc::stat {
    // SAFETY: struct stat is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstatat(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    let mut st = zero_stat();
    // SAFETY: c valid, st is a valid out pointer.
    cvt(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// `lstatat` that maps ENOENT to `None`.
pub fn lstatat_opt(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    match lstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `fstat` of any fd, `O_PATH` included.
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = zero_stat();
    // SAFETY: empty path with AT_EMPTY_PATH stats fd itself; st is a valid out pointer.
    cvt(unsafe { libc::fstatat(fd, c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH) })?;
    Ok(st)
}

/// `mkdirat`.
pub fn mkdirat(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(drop)
}

/// `mknodat`.
pub fn mknodat(dir: RawFd, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::mknodat(dir, c.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(drop)
}

/// Reads the target of the symlink behind an `O_PATH | O_NOFOLLOW` fd.
pub fn readlink_fd(fd: RawFd) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: empty path reads the link fd itself (Linux >= 2.6.39); buf is writable.
    let n = cvt_ssize(unsafe {
        libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// `unlinkat(dir, name, flags)` (flags: 0 or AT_REMOVEDIR).
pub fn unlinkat(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(drop)
}

/// linkat(2) of `odir/oname` to `ndir/nname` (no symlink following).
pub fn linkat(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr) -> io::Result<()> {
    let (o, n) = (cstr(oname)?, cstr(nname)?);
    // SAFETY: both names are NUL-terminated CStrings that outlive the call; the fds are only
    // read by the kernel.
    cvt(unsafe { libc::linkat(odir, o.as_ptr(), ndir, n.as_ptr(), 0) }).map(drop)
}

/// `renameat2` with RENAME_* flags.
pub fn renameat2(
    olddir: RawFd,
    oldname: &OsStr,
    newdir: RawFd,
    newname: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let o = cstr(oldname)?;
    let n = cstr(newname)?;
    // SAFETY: valid C strings.
    cvt(unsafe { libc::renameat2(olddir, o.as_ptr(), newdir, n.as_ptr(), flags) }).map(drop)
}

/// Hard-links the file behind `fd` (any fd, `O_PATH` included) as `dir/name`.
pub fn link_fd(fd: RawFd, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let p = proc_path(fd);
    let n = cstr(name)?;
    // SAFETY: valid C strings; AT_SYMLINK_FOLLOW resolves the /proc magic link to the file.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            dir,
            n.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`: chown the object behind the fd itself
/// (symlinks included). `u32::MAX` leaves an id unchanged.
pub fn fchown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: empty path with AT_EMPTY_PATH acts on fd itself.
    cvt(unsafe { libc::fchownat(fd, c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) }).map(drop)
}

/// chmod of the file behind `fd` (not for symlinks).
pub fn fchmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let p = proc_path(fd);
    // SAFETY: valid C string.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) }).map(drop)
}

/// fchmod(2) of an fd opened for reading or writing (not `O_PATH`).
pub fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a caller-owned fd.
    cvt(unsafe { libc::fchmod(fd, mode & 0o7777) }).map(drop)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`: chown by name, without opening.
pub fn fchownat_nofollow(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

/// chmod of `dir/name` without following a symlink and without opening it (`fchmodat2`,
/// Linux 6.6+); `Err(ENOSYS)` on older kernels, `Err(EOPNOTSUPP)` for a symlink.
pub fn fchmodat_nofollow(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    const SYS_FCHMODAT2: libc::c_long = 452;
    let c = cstr(name)?;
    // SAFETY: valid C string; fchmodat2 takes (dirfd, path, mode, flags).
    let r = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            dir,
            c.as_ptr(),
            (mode & 0o7777) as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets atime/mtime of `dir/name` without following a symlink.
pub fn utimensat(dir: RawFd, name: &OsStr, times: &[libc::timespec; 2]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string and a 2-element timespec array.
    cvt(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// Sets atime/mtime of the (non-symlink) file behind `fd`.
pub fn utimens_fd(fd: RawFd, times: &[libc::timespec; 2]) -> io::Result<()> {
    let p = proc_path(fd);
    // SAFETY: valid C string and a 2-element timespec array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// Runs `f` with this thread's umask set to `mask`, then puts the old one back. On first use
/// the thread stops sharing its umask (with cwd and root, which the server never uses) with
/// the rest of the process, so concurrent requests each create under their own umask.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> io::Result<T> {
    use nix::sys::stat::{umask, Mode};
    thread_local! {
        static OWN_FS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !OWN_FS.get() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        OWN_FS.set(true);
    }
    let old = umask(Mode::from_bits_truncate(mask as libc::mode_t & 0o777));
    let r = f();
    umask(old);
    Ok(r)
}

/// Reads xattr `name` of the object behind `fd` (an `O_PATH` fd works); `Ok(None)` if absent
/// or the filesystem/object does not support it.
pub fn getxattr_fd(fd: RawFd, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    getxattr_path(&proc_path(fd), name, false)
}

/// `getxattr` (`lgetxattr` with `nofollow`) of path `p` into a buffer that grows as needed.
fn getxattr_path(p: &CStr, name: &CStr, nofollow: bool) -> io::Result<Option<Vec<u8>>> {
    type GetFn = unsafe extern "C" fn(
        *const libc::c_char,
        *const libc::c_char,
        *mut libc::c_void,
        libc::size_t,
    ) -> libc::ssize_t;
    let get: GetFn = if nofollow {
        libc::lgetxattr
    } else {
        libc::getxattr
    };
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings; buf is writable for buf.len() bytes.
        let r = unsafe {
            get(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => return Ok(None),
            Some(libc::ERANGE) => {
                // SAFETY: a size query with a NULL buffer.
                let need = unsafe { get(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            _ => return Err(e),
        }
    }
}

/// True when xattr `name` is present and equals `y`.
pub fn xattr_is_y(fd: RawFd, name: &CStr) -> bool {
    matches!(getxattr_fd(fd, name), Ok(Some(v)) if v == b"y")
}

/// Lists the xattr names of the object behind `fd`.
pub fn listxattr_fd(fd: RawFd) -> io::Result<Vec<CString>> {
    listxattr_path(&proc_path(fd), false)
}

/// `listxattr` (`llistxattr` with `nofollow`) of path `p`, as separate names.
fn listxattr_path(p: &CStr, nofollow: bool) -> io::Result<Vec<CString>> {
    type ListFn =
        unsafe extern "C" fn(*const libc::c_char, *mut libc::c_char, libc::size_t) -> libc::ssize_t;
    let list: ListFn = if nofollow {
        libc::llistxattr
    } else {
        libc::listxattr
    };
    let mut buf = vec![0u8; 1024];
    let n = loop {
        // SAFETY: valid C string; buf writable for its length.
        let r = unsafe { list(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Some(libc::ERANGE) => {
                // SAFETY: size query.
                let need = unsafe { list(p.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 1, 0);
            }
            _ => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| CString::new(s).expect("split on NUL"))
        .collect())
}

/// `/proc/self/fd/DIR/NAME`: reaches `name` inside the directory `dir` (the `l*` xattr calls
/// do not follow it when it is a symlink).
fn at_path(dir: RawFd, name: &OsStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Lists the xattr names of `dir/name` without opening it or following a symlink.
pub fn listxattr_at(dir: RawFd, name: &OsStr) -> io::Result<Vec<CString>> {
    listxattr_path(&at_path(dir, name)?, true)
}

/// Reads xattr `attr` of `dir/name` without opening it or following a symlink; `Ok(None)` if
/// absent or unsupported.
pub fn getxattr_at(dir: RawFd, name: &OsStr, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    getxattr_path(&at_path(dir, name)?, attr, true)
}

/// Sets xattr `name` on the object behind `fd`.
pub fn setxattr_fd(fd: RawFd, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let p = proc_path(fd);
    // SAFETY: valid C strings; value readable for its length.
    cvt(unsafe {
        libc::setxattr(
            p.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// Removes xattr `name` from the object behind `fd`.
pub fn removexattr_fd(fd: RawFd, name: &CStr) -> io::Result<()> {
    let p = proc_path(fd);
    // SAFETY: valid C strings.
    cvt(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }).map(drop)
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEnt {
    /// Entry name (never `.` or `..`).
    pub name: OsString,
    /// `d_type` (DT_*).
    pub dtype: u8,
}

/// Reads every entry of the directory behind `fd` (except `.` and `..`).
pub fn read_dir(fd: RawFd) -> io::Result<Vec<DirEnt>> {
    let own = openat_noatime(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY)
        .or_else(|_| reopen_noatime(fd, libc::O_RDONLY | libc::O_DIRECTORY))?;
    let raw = own.as_raw_fd();
    // SAFETY: fdopendir takes ownership of raw on success; we forget `own` then.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(own);
    let mut out = Vec::new();
    loop {
        // SAFETY: errno reset then readdir on a valid DIR*.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dirp is a valid DIR* until closedir.
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: closing the DIR* we opened.
            unsafe { libc::closedir(dirp) };
            if e.raw_os_error().unwrap_or(0) != 0 {
                return Err(e);
            }
            return Ok(out);
        }
        // SAFETY: ent points to a valid dirent64 with a NUL-terminated d_name.
        let (name, dtype) = unsafe {
            (
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes().to_vec(),
                (*ent).d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push(DirEnt {
            name: OsString::from_vec(name),
            dtype,
        });
    }
}

/// Raises RLIMIT_NOFILE as far as allowed: to `fs.nr_open` when privileged (every node keeps
/// O_PATH fds), else the soft limit to the hard limit.
pub fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: r is a valid out pointer; setrlimit reads a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        if nr_open > r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: nr_open,
                rlim_max: nr_open,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return;
            }
        }
        if r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// `pread` into `buf`, retrying on EINTR; returns the bytes read.
pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> io::Result<usize> {
    loop {
        // SAFETY: buf writable for its length.
        let r = unsafe { libc::pread64(fd, buf.as_mut_ptr().cast(), buf.len(), off as i64) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return cvt_ssize(r);
    }
}

/// `pwrite` of all of `buf`; returns the bytes written.
pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: buf readable for its length.
        let r = unsafe {
            libc::pwrite64(
                fd,
                buf[done..].as_ptr().cast(),
                buf.len() - done,
                (off + done as u64) as i64,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if done > 0 {
                return Ok(done);
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        done += r as usize;
    }
    Ok(done)
}

/// `ftruncate`.
pub fn ftruncate(fd: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an fd.
    cvt(unsafe { libc::ftruncate(fd, size as i64) }).map(drop)
}

/// `fsync` or `fdatasync`.
pub fn fsync(fd: RawFd, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on an fd.
    cvt(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
    .map(drop)
}

/// `lseek`.
pub fn lseek(fd: RawFd, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on an fd.
    let r = unsafe { libc::lseek64(fd, off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `fallocate`.
pub fn fallocate(fd: RawFd, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an fd.
    cvt(unsafe { libc::fallocate64(fd, mode, off as i64, len as i64) }).map(drop)
}

/// `fstatvfs`.
pub fn fstatvfs(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: statvfs is POD; zeroed is valid; fstatvfs fills it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let f = reopen(fd, libc::O_RDONLY | libc::O_DIRECTORY).or_else(|_| reopen(fd, libc::O_PATH))?;
    // SAFETY: valid fd and out pointer.
    cvt(unsafe { libc::fstatvfs(f.as_raw_fd(), &mut s) })?;
    Ok(s)
}

/// `ioctl(dst, FICLONE, src)`: share all blocks of `src` with `dst` (reflink).
pub fn ficlone(dst: RawFd, src: RawFd) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its argument.
    cvt(unsafe { libc::ioctl(dst, FICLONE as _, src) }).map(drop)
}

/// `copy_file_range` of up to `len` bytes at matching offsets; returns bytes copied.
pub fn copy_file_range(src: RawFd, dst: RawFd, off: u64, len: usize) -> io::Result<usize> {
    copy_range(src, off, dst, off, len)
}

static NO_XATTRAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Reads xattr `attr` of `dir/name` without following a symlink and without opening it
/// (`getxattrat`, Linux 6.13+); `Err(ENOSYS)` on older kernels.
pub fn getxattrat(dir: RawFd, name: &OsStr, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        match getxattrat_into(dir, &c, attr, &mut buf) {
            Ok(Some(n)) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Ok(None) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < (1 << 16) => {
                buf.resize(1 << 16, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `copy_file_range` between two fds at the given offsets; returns the bytes copied.
pub fn copy_range(
    src: RawFd,
    src_off: u64,
    dst: RawFd,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut a = src_off as i64;
    let mut b = dst_off as i64;
    // SAFETY: offsets are valid in/out pointers.
    cvt_ssize(unsafe { libc::copy_file_range(src, &mut a, dst, &mut b, len, 0) } as isize)
}

/// Copies `s` into `buf` with a terminating NUL, without allocating; `None` when it does not
/// fit or contains a NUL.
pub fn cstr_in<'a>(s: &[u8], buf: &'a mut [u8]) -> Option<&'a CStr> {
    if s.len() >= buf.len() || s.contains(&0) {
        return None;
    }
    buf[..s.len()].copy_from_slice(s);
    buf[s.len()] = 0;
    CStr::from_bytes_with_nul(&buf[..=s.len()]).ok()
}

/// Maps the result of a getxattr-family call: the length, `None` for "no such attribute"
/// (ENODATA, EOPNOTSUPP), or the error (ERANGE when the buffer is too small).
fn xattr_len(r: isize) -> io::Result<Option<usize>> {
    if r >= 0 {
        return Ok(Some(r as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
        _ => Err(e),
    }
}

/// [`getxattrat`] into the caller's buffer, without allocating: the value's length, `None`
/// when absent, `Err(ERANGE)` when `buf` is too small, `Err(ENOSYS)` before Linux 6.13.
pub fn getxattrat_into(
    dir: RawFd,
    name: &CStr,
    attr: &CStr,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    const SYS_GETXATTRAT: libc::c_long = 464;
    if NO_XATTRAT.load(std::sync::atomic::Ordering::Relaxed) || !cfg!(target_arch = "x86_64") {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len().min(u32::MAX as usize) as u32,
        flags: 0,
    };
    // SAFETY: valid C strings; args points at a writable buffer of args.size bytes and its
    // own size is passed.
    let r = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir,
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    let r = xattr_len(r as isize);
    if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ENOSYS)) {
        NO_XATTRAT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    r
}

/// [`getxattr_fd`] into the caller's buffer, without allocating (the `/proc/self/fd/N` path
/// is built on the stack): the value's length, `None` when absent, `Err(ERANGE)` when `buf`
/// is too small.
pub fn getxattr_fd_into(fd: RawFd, attr: &CStr, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut pbuf = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    pbuf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    pbuf[prefix.len()..prefix.len() + d.len()].copy_from_slice(d);
    let end = prefix.len() + d.len();
    let path = CStr::from_bytes_with_nul(&pbuf[..=end]).expect("one NUL at the end");
    // SAFETY: valid C strings; buf is writable for buf.len() bytes.
    let r = unsafe {
        libc::getxattr(
            path.as_ptr(),
            attr.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    xattr_len(r)
}

/// `FS_IOC_GETFLAGS` (`lsattr`).
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
/// `FS_IOC_SETFLAGS` (`chattr`).
pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
/// `FS_IOC_FSGETXATTR` (`struct fsxattr`, 28 bytes).
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
/// `FS_IOC_FSSETXATTR`.
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// One of the file-attribute ioctls above on `fd`, with `arg` as the buffer it reads or
/// writes; ENOTTY for any other command.
pub fn fileattr_ioctl(fd: RawFd, cmd: u32, arg: &mut [u8; 32]) -> io::Result<()> {
    if ![
        FS_IOC_GETFLAGS,
        FS_IOC_SETFLAGS,
        FS_IOC_FSGETXATTR,
        FS_IOC_FSSETXATTR,
    ]
    .contains(&cmd)
    {
        return Err(io::Error::from_raw_os_error(libc::ENOTTY));
    }
    // SAFETY: each allowed command reads or writes at most 28 bytes (struct fsxattr; the flags
    // are an int) at the pointer, and `arg` is 32 bytes that live across the call.
    cvt(unsafe { libc::ioctl(fd, cmd as _, arg.as_mut_ptr()) }).map(drop)
}
