//! Where rcl keeps its files: runtime state (per running container, removed at exit) and
//! persistent data (uppers, volumes, logs, built host layers).
//!
//! Rootless: state under `$XDG_RUNTIME_DIR/rcl` (fallback `/tmp/rcl-<uid>`), data under
//! `$XDG_DATA_HOME/rcl` (default `~/.local/share/rcl`). Root: `/run/rcl` and `/var/lib/rcl`.

use std::path::PathBuf;

/// True when the caller is root (euid 0), which selects the system-wide directories.
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Runtime state directory (one subdirectory per running container).
pub fn state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/rcl");
    }
    match env_dir("XDG_RUNTIME_DIR") {
        Some(d) => d.join("rcl"),
        None => PathBuf::from(format!("/tmp/rcl-{}", nix::unistd::geteuid())),
    }
}

/// Persistent data directory.
pub fn data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/rcl");
    }
    if let Some(d) = env_dir("XDG_DATA_HOME") {
        return d.join("rcl");
    }
    match env_dir("HOME") {
        Some(h) => h.join(".local/share/rcl"),
        None => PathBuf::from(format!("/tmp/rcl-data-{}", nix::unistd::geteuid())),
    }
}

/// Directory of the named volume `name`.
pub fn volume_dir(name: &str) -> PathBuf {
    data_dir().join("volumes").join(name)
}

/// Cache of layers built from host programs.
pub fn host_layer_cache() -> PathBuf {
    data_dir().join("hostlayers")
}
