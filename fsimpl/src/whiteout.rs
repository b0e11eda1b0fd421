//! Whiteouts and opaque directories in every format: char device 0/0, OCI `.wh.NAME` files,
//! `overlay.opaque` xattrs (trusted. or user.) and `.wh..wh..opq` marker files.

use crate::sys;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

/// Prefix of OCI whiteout names.
pub const WH_PREFIX: &[u8] = b".wh.";
/// OCI opaque marker file name.
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// True when `st` is a kernel-format whiteout (character device 0/0).
pub fn is_whiteout(st: &libc::stat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == 0
}

/// True when `name` starts with `.wh.` (never visible through the mount).
pub fn is_wh_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// `.wh.NAME`.
pub fn wh_name(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    std::os::unix::ffi::OsStringExt::from_vec(v)
}

/// True when `dir` holds an OCI whiteout file for `name`.
pub fn has_wh_file(dir: RawFd, name: &OsStr) -> bool {
    if name.len() + WH_PREFIX.len() > 255 {
        return false;
    }
    matches!(sys::lstatat_opt(dir, &wh_name(name)), Ok(Some(_)))
}

/// True when directory `fd` is opaque in any format.
pub fn is_opaque_dir(fd: RawFd) -> bool {
    sys::xattr_is_y(fd, c"trusted.overlay.opaque")
        || sys::xattr_is_y(fd, c"user.overlay.opaque")
        || matches!(sys::lstatat_opt(fd, OsStr::new(WH_OPAQUE)), Ok(Some(_)))
}

/// Creates a kernel-format whiteout `dir/name` (char device 0/0).
pub fn mknod_whiteout(dir: RawFd, name: &OsStr) -> io::Result<()> {
    sys::mknodat(dir, name, libc::S_IFCHR, 0)
}

/// Creates an OCI whiteout file `dir/.wh.NAME`.
pub fn create_wh_file(dir: RawFd, name: &OsStr) -> io::Result<()> {
    match sys::openat(
        dir,
        &wh_name(name),
        libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
        0o600,
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}
