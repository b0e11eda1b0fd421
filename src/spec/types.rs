//! The validated form of a spec. Every path here is absolute and every value in its unit.

use std::path::PathBuf;
use std::time::Duration;

/// One container, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The spec file this came from (absolute).
    pub source: PathBuf,
    /// Container name (default: the spec file's stem).
    pub name: String,
    /// Hostname inside the container (default: the name).
    pub hostname: String,
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// The process to run.
    pub process: Process,
    /// Which namespaces are new and which are shared with the host.
    pub namespaces: Namespaces,
    /// Resource limits.
    pub resources: Resources,
    /// Capabilities, no_new_privs, seccomp.
    pub security: Security,
    /// Extra mounts, in order.
    pub mounts: Vec<Mount>,
    /// Init, stop signal and timeout.
    pub lifecycle: Lifecycle,
}

/// The container's root filesystem: a union of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Rootfs {
    /// Layers, top first.
    pub layers: Vec<Layer>,
    /// Persistent writable layer; `None` = a throwaway upper removed on exit.
    pub upper: Option<PathBuf>,
    /// No upper at all: writes fail with EROFS.
    pub readonly: bool,
}

/// One read-only layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// An existing directory (absolute path).
    Dir(PathBuf),
    /// A layer built from host programs and the shared libraries they load (absolute paths).
    Host(Vec<PathBuf>),
}

/// The container's process.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// entrypoint + command, shell form already turned into `/bin/sh -c ...`. Never empty.
    pub args: Vec<String>,
    /// Environment in order; PATH always present (a default is added when absent).
    pub env: Vec<(String, String)>,
    /// Working directory inside the container (absolute).
    pub workdir: PathBuf,
    /// Who runs it.
    pub user: User,
}

/// The user a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// Numeric ids; gid defaults to the uid's primary group from /etc/passwd, else the uid.
    Ids {
        /// User id.
        uid: u32,
        /// Group id, when given.
        gid: Option<u32>,
    },
    /// A name (and optional group name) to resolve in the container's /etc/passwd and /etc/group.
    Name {
        /// User name.
        user: String,
        /// Group name or number, when given.
        group: Option<String>,
    },
}

/// New or shared namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsMode {
    /// A new namespace (the default).
    New,
    /// The host's namespace.
    Host,
}

/// Namespace choices. The mount namespace is always new; the user namespace is chosen by the
/// runtime (always when rootless).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    /// Network: `New` = own namespace with loopback up ("none"), `Host` = the host's.
    pub network: NsMode,
    /// PID namespace.
    pub pid: NsMode,
    /// IPC namespace.
    pub ipc: NsMode,
    /// UTS namespace (hostname).
    pub uts: NsMode,
    /// cgroup namespace.
    pub cgroup: NsMode,
}

/// Resource limits; `None` = unlimited.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU quota in CPUs (0.3 = 30% of one CPU).
    pub cpus: Option<f64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
    /// CPUs allowed, in cpuset list syntax ("0-1,3").
    pub cpuset: Option<String>,
    /// Relative I/O weight, 1..=10000 (cgroup v2 io.weight; scaled for v1 blkio.weight).
    pub io_weight: Option<u16>,
}

/// Security settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Capabilities to add to Docker's default set, normalized to `CAP_X` upper case, or "ALL".
    pub cap_add: Vec<String>,
    /// Capabilities to drop, same form.
    pub cap_drop: Vec<String>,
    /// Set no_new_privs before exec.
    pub no_new_privileges: bool,
    /// Seccomp filter.
    pub seccomp: Seccomp,
}

/// Seccomp choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seccomp {
    /// A filter blocking what Docker's default profile blocks.
    Default,
    /// No filter.
    Unconfined,
}

/// One extra mount.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// What is mounted.
    pub kind: MountKind,
    /// Absolute path inside the container.
    pub target: PathBuf,
    /// Mounted read-only.
    pub readonly: bool,
}

/// The kinds of extra mount.
#[derive(Debug, Clone, PartialEq)]
pub enum MountKind {
    /// A host path (absolute), bind-mounted.
    Bind {
        /// Host path.
        source: PathBuf,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// A named volume kept after the container is gone.
    Volume {
        /// Volume name.
        name: String,
    },
}

/// Lifecycle settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    /// Run rcl's own PID 1 (reaps zombies, forwards signals).
    pub init: bool,
    /// Signal sent to stop the container (a signal number).
    pub stop_signal: i32,
    /// Time between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
}
