//! Xattr names: which ones are private to the overlay (never visible or settable through the
//! mount) and which are filtered by options.

use std::ffi::CStr;

const PRIVATE: [&[u8]; 4] = [
    b"trusted.overlay.",
    b"user.overlay.",
    b"trusted.rclfs.",
    b"user.rclfs.",
];

/// True for overlay-private xattrs (`*.overlay.*`, `*.rclfs.*` in trusted. and user.).
pub fn is_private(name: &[u8]) -> bool {
    PRIVATE.iter().any(|p| name.starts_with(p))
}

/// The xattr holding a file's access POSIX ACL.
pub const ACL_ACCESS: &CStr = c"system.posix_acl_access";
/// The xattr holding a directory's default POSIX ACL (inherited by new entries).
pub const ACL_DEFAULT: &CStr = c"system.posix_acl_default";

/// True for POSIX ACL xattrs (hidden with `noacl`).
pub fn is_acl(name: &[u8]) -> bool {
    name == ACL_ACCESS.to_bytes() || name == ACL_DEFAULT.to_bytes()
}

/// True when `name` must not be visible through the mount.
pub fn hidden(name: &CStr, noacl: bool) -> bool {
    let b = name.to_bytes();
    is_private(b) || (noacl && is_acl(b))
}
