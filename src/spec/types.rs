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
    /// File mode creation mask set before exec (default 0o022).
    pub umask: u32,
    /// Resource limits set with setrlimit before exec, in file order.
    pub rlimits: Vec<Rlimit>,
}

/// One process resource limit (`[process] rlimits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    /// Name in upper case with the prefix, e.g. `RLIMIT_NOFILE`.
    pub name: String,
    /// The `RLIMIT_*` resource number for setrlimit on this platform.
    pub resource: i32,
    /// Soft limit; `u64::MAX` = unlimited (RLIM_INFINITY).
    pub soft: u64,
    /// Hard limit; `u64::MAX` = unlimited (RLIM_INFINITY).
    pub hard: u64,
}

impl Default for Process {
    /// An empty command (invalid until set), `PATH` only, `/`, root, umask 022, no rlimits.
    fn default() -> Self {
        Process {
            args: Vec::new(),
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            workdir: PathBuf::from("/"),
            user: User::default(),
            umask: 0o022,
            rlimits: Vec::new(),
        }
    }
}

/// The `PATH` a process gets when its spec sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

impl Default for User {
    /// root: uid 0, gid 0.
    fn default() -> Self {
        User::Ids {
            uid: 0,
            gid: Some(0),
        }
    }
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

impl Default for Namespaces {
    /// Every namespace new.
    fn default() -> Self {
        Namespaces {
            network: NsMode::New,
            pid: NsMode::New,
            ipc: NsMode::New,
            uts: NsMode::New,
            cgroup: NsMode::New,
        }
    }
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

impl Default for Security {
    /// Docker's default capabilities unchanged, no_new_privs on, default seccomp filter.
    fn default() -> Self {
        Security {
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            no_new_privileges: true,
            seccomp: Seccomp::Default,
        }
    }
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

impl Default for Lifecycle {
    /// rcl's init on, SIGTERM, 10 seconds.
    fn default() -> Self {
        Lifecycle {
            init: true,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// A spec file read with [`load_project`](crate::spec::load_project): one or more containers
/// (`[containers.NAME]` tables, or a plain single-container spec), in start order (every
/// container after those it depends on; otherwise file order).
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The spec file this came from (absolute).
    pub source: PathBuf,
    /// The containers, in start order.
    pub containers: Vec<Container>,
}

/// One container of a [`Project`]: its [`Spec`] plus the settings that relate it to others.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// The container itself (its name is the `[containers.NAME]` key).
    pub spec: Spec,
    /// Containers to start (and wait for) first.
    pub depends_on: Vec<Dependency>,
    /// What to do when the process exits (`[lifecycle] restart`).
    pub restart: Restart,
    /// How to tell that the container works (`[healthcheck]`).
    pub healthcheck: Option<Healthcheck>,
}

/// One `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The container depended on.
    pub name: String,
    /// When it counts as ready.
    pub condition: Condition,
}

/// When a dependency counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// As soon as its process has started (the default).
    Started,
    /// Once its healthcheck has passed (it must have one).
    Healthy,
    /// Once it has exited with status 0 (a setup job).
    Completed,
}

/// Restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Never restart (the default).
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times when given.
    OnFailure {
        /// Give up after this many restarts.
        max_retries: Option<u32>,
    },
    /// Restart whenever it exits, unless rcl stopped it.
    Always,
    /// Like `Always`, but a container a user stopped stays stopped on the next `rcl up`.
    UnlessStopped,
}

/// A command run inside the container to check its health.
#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    /// The check (shell form already turned into `/bin/sh -c ...`); exit 0 = healthy.
    pub command: Vec<String>,
    /// Time between checks (default 30s).
    pub interval: Duration,
    /// A check running longer than this fails (default 30s).
    pub timeout: Duration,
    /// Consecutive failures before the container is unhealthy (default 3).
    pub retries: u32,
    /// Failures during this time after start do not count (default 0s).
    pub start_period: Duration,
}
