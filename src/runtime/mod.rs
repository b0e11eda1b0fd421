//! The container runtime: namespaces, the union root filesystem, isolation and PID 1.
//!
//! Process layout (works rootless and as root):
//!
//! ```text
//! rcl (this process: waits, relays signals, cleans up)
//!  └─ holder      new user (rootless, or --userns) + mount namespace; id maps written by rcl
//!      ├─ server  serves the union filesystem mounted on a private directory (fsimpl)
//!      └─ init    new pid/uts/ipc/net/cgroup/mount namespaces, pivots into the union mount;
//!          └─ command   (with `init = true`; otherwise init execs the command itself)
//! ```
//!
//! Use [`run`] for the foreground `rcl run`, or [`Container`] for finer control
//! (create, start, signal, wait).

mod chan;
mod holder;
mod idmap;
mod init;
mod mounts;
mod security_glue;
mod server;
mod sys;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::pty::{self, RawMode};
use crate::spec::{Layer, MountKind, Namespaces, NsMode, Process, Spec};
use chan::Chan;
pub use idmap::IdMap;
pub use init::FORWARDED;
use mounts::RootfsPlan;
pub use mounts::{MASKED_PATHS, READONLY_PATHS};
pub use security_glue::prepare as prepare_security;

/// Options of `rcl run` that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the spec's command (and entrypoint) when non-empty.
    pub command: Vec<String>,
    /// Pass stdin to the container even when it is not a terminal.
    pub interactive: bool,
    /// Fail when a resource limit cannot be applied instead of warning.
    pub require_limits: bool,
    /// Use a user namespace even when running as root (always used when rootless).
    pub userns: bool,
    /// Give the container a terminal of its own (a pseudo-terminal relayed to rcl's stdin and
    /// stdout, whose size follows rcl's terminal). `rcl run` sets it when stdin is a terminal.
    pub terminal: bool,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit status: the command's code, or 128+N when killed by signal N (127 when the command
    /// could not be executed).
    pub code: i32,
    /// Why the command could not be executed, when that happened.
    pub exec_error: Option<String>,
}

/// Everything the forked processes need, computed before the first fork.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The container's id (its state directory's and cgroup's name).
    id: String,
    /// Per-container state directory (removed at exit).
    state: PathBuf,
    /// Where the union filesystem is mounted (inside `state`).
    mountpoint: PathBuf,
    /// The union filesystem's configuration.
    overlay: fsimpl::OverlayConfig,
    /// The user namespace's id maps, when one is used.
    userns: Option<IdMap>,
    namespaces: Namespaces,
    hostname: String,
    rootfs: RootfsPlan,
    process: Process,
    init: bool,
    pass_stdin: bool,
    /// Give the command a terminal made in the container's /dev/pts.
    terminal: bool,
    security: security_glue::Prepared,
}

/// A container: created (init held before exec), then started, then waited for.
#[derive(Debug)]
pub struct Container {
    id: String,
    plan: Plan,
    /// The cgroup lock warm-up child, until reaped.
    warmer: Option<Pid>,
    holder: Option<Pid>,
    chan: Chan,
    pty_master: Option<OwnedFd>,
    init_pid: Pid,
    cgroup: Option<Cgroup>,
    exit: Option<Exit>,
    error: Option<String>,
    exec_error: Option<String>,
    stop_signal: i32,
    stop_timeout: Duration,
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn mkdir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

fn resolve_layers(spec: &Spec) -> Result<Vec<PathBuf>> {
    spec.rootfs
        .layers
        .iter()
        .map(|l| match l {
            Layer::Dir(p) => {
                if !p.is_dir() {
                    bail!("layer {} is not a directory", p.display());
                }
                Ok(p.clone())
            }
            Layer::Host(progs) => host_layer(progs),
        })
        .collect()
}

/// Builds (or finds cached) a layer with host programs and their shared libraries.
fn host_layer(progs: &[PathBuf]) -> Result<PathBuf> {
    crate::hostlayer::build(progs, &crate::paths::host_layer_cache())
        .context("building the host program layer")
}

fn build_plan(spec: &Spec, opts: &RunOptions, id: &str) -> Result<Plan> {
    let root = nix::unistd::geteuid().is_root();
    let userns = (!root || opts.userns).then(IdMap::detect);
    let state = crate::paths::state_dir().join(id);
    let lowers = resolve_layers(spec)?;
    let mut overlay = fsimpl::OverlayConfig::new(lowers);
    overlay.allow_other = true;
    overlay.fsname = format!("rcl:{id}");
    if !spec.rootfs.readonly {
        let (upper, work) = match &spec.rootfs.upper {
            Some(u) => {
                let name = u
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "upper".into());
                (u.clone(), u.with_file_name(format!(".{name}.work")))
            }
            None => (state.join("upper"), state.join("work")),
        };
        overlay = overlay.with_upper(upper, work);
    }
    let mut process = spec.process.clone();
    if !opts.command.is_empty() {
        process.args = opts.command.clone();
    }
    let etc = state.join("etc");
    let mut etc_files = vec![
        (etc.join("hostname"), "/etc/hostname"),
        (etc.join("hosts"), "/etc/hosts"),
    ];
    if Path::new("/etc/resolv.conf").exists() {
        etc_files.push((etc.join("resolv.conf"), "/etc/resolv.conf"));
    }
    let mounts = spec
        .mounts
        .iter()
        .map(|m| {
            let dir = match &m.kind {
                MountKind::Volume { name } => Some(crate::paths::volume_dir(name)),
                _ => None,
            };
            (m.clone(), dir)
        })
        .collect();
    let mountpoint = state.join("rootfs");
    Ok(Plan {
        id: id.to_string(),
        rootfs: RootfsPlan {
            root: mountpoint.clone(),
            fresh_proc: spec.namespaces.pid == NsMode::New,
            fresh_sys: spec.namespaces.network == NsMode::New,
            own_ipc: spec.namespaces.ipc == NsMode::New,
            own_cgroupns: spec.namespaces.cgroup == NsMode::New,
            mounts,
            etc_files,
        },
        state,
        mountpoint,
        overlay,
        userns,
        namespaces: spec.namespaces,
        hostname: spec.hostname.clone(),
        process,
        init: spec.lifecycle.init,
        pass_stdin: opts.interactive || sys::isatty(0),
        terminal: opts.terminal,
        security: security_glue::prepare(&spec.security, &spec.process.rlimits)?,
    })
}

/// Creates what the plan needs on disk before forking (all inside `plan.state`, except
/// persistent uppers and volumes, which are kept).
fn prepare_dirs(plan: &Plan) -> Result<()> {
    let parent = plan.state.parent().context("state dir has no parent")?;
    mkdir_all(parent)?;
    // A shared fallback location (/tmp) must really be ours.
    let meta =
        fs::symlink_metadata(parent).with_context(|| format!("inspecting {}", parent.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&meta) != me || !meta.is_dir() {
        bail!(
            "the state directory {} is not a directory owned by uid {me}",
            parent.display()
        );
    }
    fs::create_dir(&plan.state).with_context(|| {
        format!(
            "creating the state directory {} (is a container with this id running?)",
            plan.state.display()
        )
    })?;
    mkdir_all(&plan.mountpoint)?;
    mounts::chmod_755(&plan.state)?;
    mounts::chmod_755(&plan.mountpoint)?;
    if let (Some(u), Some(w)) = (&plan.overlay.upperdir, &plan.overlay.workdir) {
        mkdir_all(u)?;
        mkdir_all(w)?;
    }
    let etc = plan.state.join("etc");
    mkdir_all(&etc)?;
    write_file(&etc.join("hostname"), &format!("{}\n", plan.hostname))?;
    let hosts = if plan.namespaces.network == NsMode::Host {
        fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
            plan.hostname
        )
    };
    write_file(&etc.join("hosts"), &hosts)?;
    if let Ok(r) = fs::read_to_string("/etc/resolv.conf") {
        write_file(&etc.join("resolv.conf"), &r)?;
    }
    for (m, dir) in &plan.rootfs.mounts {
        if let Some(d) = dir {
            mkdir_all(d)?;
        }
        if let MountKind::Bind { source } = &m.kind {
            if !source.exists() {
                bail!("bind mount source {} does not exist", source.display());
            }
        }
    }
    Ok(())
}

fn make_cgroup(spec: &Spec, opts: &RunOptions, id: &str) -> Result<Option<Cgroup>> {
    let (cg, unapplied) = Cgroup::create(id, &spec.resources)?;
    if !unapplied.is_empty() {
        if opts.require_limits {
            let why: Vec<String> = unapplied.iter().map(|u| u.to_string()).collect();
            let _ = cg.destroy();
            bail!("--require-limits: {}", why.join("; "));
        }
        for u in &unapplied {
            eprintln!("rcl: warning: {u}");
        }
    }
    Ok(Some(cg))
}

/// The `cgroup.procs` file of this process's own cgroup (a v1 `pids` hierarchy, else cgroup2),
/// when it exists and may be written.
fn own_cgroup_procs() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        if ctrls.split(',').any(|c| c == "pids") {
            candidates.insert(0, Path::new("/sys/fs/cgroup/pids").join(rel));
        } else if ctrls.is_empty() {
            candidates.push(Path::new("/sys/fs/cgroup/unified").join(rel));
            candidates.push(Path::new("/sys/fs/cgroup").join(rel));
        }
    }
    candidates
        .into_iter()
        .map(|d| d.join("cgroup.procs"))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok())
}

/// Starts a short-lived child that "moves" itself into the cgroup it is already in. Every write
/// to a `cgroup.procs` file takes the kernel's global cgroup thread-group lock, whose first
/// writer after a quiet period waits for an RCU grace period (about 10 ms here); writers that
/// follow within a grace period do not wait. Started first, this wait overlaps with the
/// holder's setup instead of delaying the container's own move into its cgroup. Returns the
/// child to reap ([`reap_warmer`]); `None` when there is no cgroup to write.
fn start_cgroup_warmer() -> Option<Pid> {
    let procs = own_cgroup_procs()?;
    match sys::fork() {
        Ok(None) => {
            // "0" means the writing process itself: a move to where it already is.
            let _ = fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"0"));
            sys::exit_now(0)
        }
        Ok(Some(pid)) => Some(pid),
        Err(_) => None,
    }
}

/// Reaps the child of [`start_cgroup_warmer`] (it ends on its own, within a grace period).
fn reap_warmer(warmer: &mut Option<Pid>) {
    if let Some(pid) = warmer.take() {
        let _ = waitpid(pid, None);
    }
}

impl Container {
    /// Sets up the container up to the moment its command would start: namespaces, the union
    /// root, the cgroup. The init waits for [`Container::start`].
    ///
    /// Must be called from a single-threaded process (it forks and the children run ordinary
    /// code): the `rcl` binary is.
    pub fn create(spec: &Spec, opts: &RunOptions) -> Result<Container> {
        let id = format!("{}-{}", spec.name, std::process::id());
        // First, so that its grace period also overlaps with planning (host layers).
        let mut warmer = start_cgroup_warmer();
        let plan = match build_plan(spec, opts, &id) {
            Ok(p) => p,
            Err(e) => {
                reap_warmer(&mut warmer);
                return Err(e);
            }
        };
        // The holder exists before anything is created on disk or in the cgroup tree: from then
        // on, whichever of rcl and the holder survives the other removes it all.
        let (chan, mut holder_end) = Chan::pair()?;
        let holder = match sys::fork().context("forking the holder")? {
            None => {
                sys::close_raw(chan.as_fd().as_raw_fd());
                holder::holder_main(&plan, &mut holder_end)
            }
            Some(pid) => pid,
        };
        drop(holder_end);
        let mut c = Container {
            id,
            plan,
            warmer,
            holder: Some(holder),
            chan,
            pty_master: None,
            init_pid: Pid::from_raw(0),
            cgroup: None,
            exit: None,
            error: None,
            exec_error: None,
            stop_signal: spec.lifecycle.stop_signal,
            stop_timeout: spec.lifecycle.stop_timeout,
        };
        if let Err(e) = c.handshake(spec, opts) {
            c.finish();
            let e = match c.error.take() {
                Some(msg) => anyhow!(msg),
                None => e,
            };
            return Err(e);
        }
        Ok(c)
    }

    fn handshake(&mut self, spec: &Spec, opts: &RunOptions) -> Result<()> {
        // Longer than the holder's own limit on the filesystem server (60 s), so that the
        // holder's clearer error arrives first.
        let limit = Duration::from_secs(90);
        loop {
            let m = self
                .chan
                .recv_timeout(limit)
                .context("waiting for the container to be set up")?;
            let Some(m) = m else {
                bail!("the container's holder process exited during setup");
            };
            match m.word.as_str() {
                "unshared" => {
                    prepare_dirs(&self.plan)?;
                    self.cgroup = make_cgroup(spec, opts, &self.id)?;
                    if let Some(map) = &self.plan.userns {
                        let holder = self.holder.context("no holder")?;
                        map.write(holder)
                            .context("writing the user namespace id maps")?;
                    }
                    self.chan.send("mapped", "")?;
                }
                "join" => {
                    // The init exists while the filesystem server is still mounting: joining
                    // the cgroup now overlaps its cost (an RCU grace period on cgroup v1)
                    // with the mount.
                    self.init_pid = Pid::from_raw(m.num()?);
                    if let Some(cg) = &self.cgroup {
                        cg.add_pid(self.init_pid.as_raw())
                            .context("moving the container into its cgroup")?;
                    }
                    reap_warmer(&mut self.warmer);
                }
                "pid" => {
                    // The union root is mounted: the init waits for `go`.
                    self.init_pid = Pid::from_raw(m.num()?);
                    return Ok(());
                }
                "err" => {
                    self.error = Some(m.arg.clone());
                    bail!("{}", m.arg);
                }
                other => bail!("unexpected message {other:?} from the holder"),
            }
        }
    }

    /// The container's id (also the name of its state directory and cgroup).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's state directory (removed when it is gone).
    pub fn state_dir(&self) -> &Path {
        &self.plan.state
    }

    /// The host pid of the container's first process.
    pub fn pid(&self) -> i32 {
        self.init_pid.as_raw()
    }

    /// Lets the container's init proceed to the command.
    pub fn start(&mut self) -> Result<()> {
        match self.chan.send("go", "") {
            // The holder is already gone (the container failed while being set up): waiting
            // reports why.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(())
            }
            r => r.context("starting the container"),
        }
    }

    /// Sends signal `sig` to the container's first process.
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        self.chan
            .send("sig", &sig.to_string())
            .context("signalling the container")
    }

    /// Kills the container (SIGKILL to its first process; the rest of its pid namespace dies
    /// with it).
    pub fn kill(&mut self) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        self.chan.send("kill", "").context("killing the container")
    }

    /// Takes the terminal's master side once the container has made it
    /// ([`RunOptions::terminal`]; it arrives shortly after [`Container::start`], through
    /// [`Container::try_wait`]): what the container writes can be read there, and what is
    /// written there is its input.
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }

    /// The configured stop signal and timeout (`[lifecycle]`).
    pub fn stop_policy(&self) -> (i32, Duration) {
        (self.stop_signal, self.stop_timeout)
    }

    /// Reads what the holder sent (call when [`AsFd`] polls readable). Returns the exit once the
    /// container is gone and everything is cleaned up.
    pub fn try_wait(&mut self) -> Result<Option<Exit>> {
        if self.holder.is_none() {
            if let Some(e) = &self.exit {
                return Ok(Some(e.clone()));
            }
        }
        let (msgs, closed) = self.chan.read_ready()?;
        for m in msgs {
            match m.word.as_str() {
                "exit" => {
                    let code = m.num()?;
                    let exec_error = self.exec_error.take();
                    self.exit = Some(Exit {
                        code: if exec_error.is_some() { 127 } else { code },
                        exec_error,
                    });
                }
                "exec" => self.exec_error = Some(m.arg),
                "pty" => self.pty_master = self.chan.take_fd(),
                "err" => self.error = Some(m.arg),
                _ => {}
            }
        }
        if self.exit.is_none() && !closed {
            return Ok(None);
        }
        self.finish();
        if let Some(msg) = self.error.take() {
            bail!("{msg}");
        }
        match &self.exit {
            Some(e) => Ok(Some(e.clone())),
            None => Err(anyhow!("the container's holder process died unexpectedly")),
        }
    }

    /// Blocks until the container has exited and is cleaned up.
    pub fn wait(&mut self) -> Result<Exit> {
        loop {
            if let Some(e) = self.try_wait()? {
                return Ok(e);
            }
            let mut fds = [PollFd::new(self.chan.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
        }
    }

    /// Reaps the holder and removes what it could not (it normally removes everything).
    fn finish(&mut self) {
        reap_warmer(&mut self.warmer);
        // A holder still waiting for rcl sees the end of the channel and cleans up.
        self.chan.shutdown();
        if let Some(h) = self.holder.take() {
            let _ = waitpid(h, None);
        }
        if self.plan.state.exists() {
            let _ = fs::remove_dir_all(&self.plan.state);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                eprintln!("rcl: warning: removing the cgroup: {e:#}");
            }
        }
    }
}

impl AsFd for Container {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.chan.as_fd()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.holder.is_some() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

/// The mountpoints every container gets (relative to its root); see [`mountpoints`].
pub const FIXED_MOUNTPOINTS: [&str; 6] = [
    "proc",
    "sys",
    "dev",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
];

/// The mountpoints the runtime creates in a container's root when its layers lack them
/// (relative to the root): `/proc`, `/sys`, `/dev`, the `/etc` files it binds, and the targets
/// of the spec's mounts. They land in the upper layer; `rcl diff` and `rcl commit` leave them out.
pub fn mountpoints(spec: &Spec) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = FIXED_MOUNTPOINTS.iter().map(PathBuf::from).collect();
    for m in &spec.mounts {
        let rel: PathBuf = m
            .target
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        if !rel.as_os_str().is_empty() {
            out.push(rel);
        }
    }
    out
}

/// Runs the container described by `spec` in the foreground and returns its exit status
/// (128+N when killed by signal N). Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
/// SIGUSR2 and SIGWINCH; a Ctrl-C (SIGINT) stops the container with its stop signal, then
/// SIGKILL after the stop timeout. With [`RunOptions::terminal`], relays the container's
/// terminal to rcl's stdin and stdout (in raw mode). Leaves nothing behind.
pub fn run(spec: &Spec, opts: &RunOptions) -> Result<Exit> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    // Blocked before the first fork: the holder inherits the mask and so survives a terminal's
    // Ctrl-C to clean up; the container init unblocks.
    mask.thread_block().context("blocking signals")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    let mut c = Container::create(spec, opts)?;
    let _raw = opts.terminal.then(RawMode::enter);
    c.start()?;
    let (stop_signal, stop_timeout) = c.stop_policy();
    let mut peer = RunRelay {
        c: &mut c,
        stop_signal,
        stop_timeout,
        kill_at: None,
    };
    pty::relay(&sfd, &mut peer, true)
}

/// [`run`]'s side of the terminal relay: the container's channel tells of its end, a Ctrl-C
/// stops it (its stop signal, then SIGKILL after the stop timeout or a second Ctrl-C), other
/// signals are passed on.
struct RunRelay<'a> {
    c: &'a mut Container,
    stop_signal: i32,
    stop_timeout: Duration,
    /// When the container gets SIGKILL after a Ctrl-C.
    kill_at: Option<Instant>,
}

impl pty::Relayed for RunRelay<'_> {
    type Exit = Exit;

    fn events(&self) -> BorrowedFd<'_> {
        self.c.as_fd()
    }

    fn try_exit(&mut self) -> Result<Option<Exit>> {
        self.c.try_wait()
    }

    fn signal(&mut self, sig: i32) -> Result<()> {
        if sig != Signal::SIGINT as i32 {
            return self.c.signal(sig);
        }
        if self.kill_at.is_none() {
            self.kill_at = Some(Instant::now() + self.stop_timeout);
            self.c.signal(self.stop_signal)
        } else {
            // A second Ctrl-C does not wait for the timeout.
            self.c.kill()
        }
    }

    fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.c.take_terminal()
    }

    fn deadline(&self) -> Option<Instant> {
        self.kill_at
    }

    fn deadline_passed(&mut self) -> Result<()> {
        self.kill_at = None;
        self.c.kill()
    }
}
