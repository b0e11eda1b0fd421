//! The supervisor: the process that looks after one container started by `rcl up`.
//!
//! It starts the container (a [`Workload`]), copies its stdout and stderr from pipes into the
//! log ([`crate::logs`]), keeps its [`crate::state::Record`] current, runs the healthcheck
//! ([`HealthProbe`], scheduled by [`HealthMonitor`]), restarts it by the [`RestartPolicy`] with
//! exponential [`Backoff`], and stops it (stop signal, then SIGKILL after the stop timeout) when
//! asked. It is single-threaded on purpose: creating a container forks, and a fork in a
//! multithreaded process may only do async-signal-safe work. Everything waits in one `poll`.
//!
//! The pure logic (policy, back-off, health) lives in [`policy`] and [`health`] and is unit
//! tested; [`supervise`] is tested with plain host processes ([`HostCommand`], [`HostProbe`]).

pub mod container;
pub mod exec;
pub mod health;
pub mod policy;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

pub use health::{HealthConfig, HealthMonitor};
pub use policy::{Backoff, RestartPolicy};

use crate::logs::{LinePump, LogConfig, LogWriter, Stream};
use crate::state::{now_ms, Health, Status, Store};

/// A running container (or, in tests, a host process) as the supervisor sees it.
pub trait Running {
    /// Readable when the process may have exited (then call [`Running::try_wait`]).
    fn wait_fd(&self) -> BorrowedFd<'_>;
    /// Host pid of its first process.
    fn pid(&self) -> i32;
    /// Sends signal `sig`.
    fn signal(&mut self, sig: i32) -> Result<()>;
    /// Its exit status once it has exited (128+N when killed by signal N); called only after
    /// [`Running::wait_fd`] polled readable.
    fn try_wait(&mut self) -> Result<Option<i32>>;
    /// The runtime's id for this run (its cgroup's name), if it has one.
    fn id(&self) -> Option<String> {
        None
    }
    /// Why its command could not be executed, once it has exited for that reason.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Something the supervisor can start (again and again).
pub trait Workload {
    /// Starts one run with the given stdout and stderr.
    fn start(&mut self, stdout: BorrowedFd, stderr: BorrowedFd) -> Result<Box<dyn Running>>;
}

/// Runs a healthcheck command.
pub trait HealthProbe {
    /// Starts `command`; its exit status 0 means healthy. It is killed (with its process
    /// group) when it runs past the timeout.
    fn spawn(&mut self, command: &[String]) -> io::Result<Child>;
}

/// A pidfd: readable once the process has exited.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets `PR_SET_PDEATHSIG` to SIGKILL in a child before exec: the process dies with its
/// supervisor.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and only affects the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn status_code(st: std::process::ExitStatus) -> i32 {
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// A host command as a [`Workload`] (for tests, and for anything that needs no container).
#[derive(Debug, Clone)]
pub struct HostCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
}

struct HostRun {
    child: Child,
    pidfd: OwnedFd,
}

impl Running for HostRun {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn signal(&mut self, sig: i32) -> Result<()> {
        // SAFETY: kill takes plain integers; the pid is our unreaped child, so not reused.
        if unsafe { libc::kill(self.pid(), sig) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e).context("signalling the process");
            }
        }
        Ok(())
    }
    fn try_wait(&mut self) -> Result<Option<i32>> {
        Ok(self.child.try_wait()?.map(status_code))
    }
}

impl Workload for HostCommand {
    fn start(&mut self, stdout: BorrowedFd, stderr: BorrowedFd) -> Result<Box<dyn Running>> {
        let (prog, args) = self.argv.split_first().context("empty command")?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout.try_clone_to_owned()?))
            .stderr(Stdio::from(stderr.try_clone_to_owned()?));
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {prog}"))?;
        let pidfd = pidfd_open(child.id() as i32).context("pidfd_open")?;
        Ok(Box::new(HostRun { child, pidfd }))
    }
}

/// Runs healthchecks as host commands (until `exec` into a container is available, and in
/// tests).
#[derive(Debug, Clone, Default)]
pub struct HostProbe;

impl HealthProbe for HostProbe {
    fn spawn(&mut self, command: &[String]) -> io::Result<Child> {
        let (prog, args) = command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty healthcheck"))?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        die_with_parent(&mut cmd);
        cmd.spawn()
    }
}

/// What the supervisor does for one container.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The container's name (its record in the store).
    pub name: String,
    /// Restart policy.
    pub policy: RestartPolicy,
    /// Back-off between restarts.
    pub backoff: Backoff,
    /// Healthcheck, if any.
    pub health: Option<HealthConfig>,
    /// Signal that asks the container to stop.
    pub stop_signal: i32,
    /// Time between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
    /// Log rotation.
    pub log: LogConfig,
}

/// A pipe whose read end the supervisor drains into the log.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    pump: LinePump,
}

impl Pipe {
    fn new(stream: Stream) -> Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("fcntl")?;
        Ok(Pipe {
            read,
            write,
            pump: LinePump::new(stream),
        })
    }

    /// Copies everything readable now into the log.
    fn drain(&mut self, log: &mut LogWriter) -> Result<()> {
        let mut buf = [0u8; 16384];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self
                    .pump
                    .feed(&buf[..n], log, SystemTime::now())
                    .context("writing the log")?,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("reading the container's output"),
            }
        }
    }
}

fn readable(fd: &PollFd) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}

fn ms_until(t: Instant, now: Instant) -> u128 {
    t.saturating_duration_since(now).as_millis()
}

/// A running healthcheck.
struct ProbeRun {
    child: Child,
    deadline: Instant,
}

impl ProbeRun {
    fn kill(&mut self) {
        // SAFETY: kill takes plain integers; the group is our unreaped child's.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Looks after the container `settings.name` until it is stopped (its `stop` fd becomes
/// readable) or its restart policy says it stays down; returns the last exit status. The
/// record must exist in `store`. A failure to start counts as exit status 127; it and a
/// command that could not be executed are written to the record's `error` (which is cleared
/// when a run starts).
pub fn supervise(
    store: &Store,
    settings: &Settings,
    workload: &mut dyn Workload,
    probe: &mut dyn HealthProbe,
    stop: BorrowedFd,
) -> Result<i32> {
    let name = settings.name.as_str();
    let mut log = LogWriter::open(&store.log_dir(name), settings.log)
        .with_context(|| format!("opening the log of {name}"))?;
    let mut out = Pipe::new(Stream::Stdout)?;
    let mut err = Pipe::new(Stream::Stderr)?;
    let mut backoff = settings.backoff;
    let mut stop_requested = false;
    let mut restarts = store.get(name)?.restart_count;
    loop {
        let started = Instant::now();
        let (code, start_error) = match workload.start(out.write.as_fd(), err.write.as_fd()) {
            Ok(mut run) => {
                store.update(name, |r| {
                    r.status = Status::Running;
                    r.init_pid = Some(run.pid());
                    r.container_id = run.id();
                    r.started_ms = Some(now_ms());
                    r.finished_ms = None;
                    r.exit_code = None;
                    r.error = None;
                    r.health = if settings.health.is_some() {
                        Health::Starting
                    } else {
                        Health::None
                    };
                })?;
                let code = watch(
                    store,
                    settings,
                    run.as_mut(),
                    probe,
                    stop,
                    &mut stop_requested,
                    &mut out,
                    &mut err,
                    &mut log,
                )?;
                (code, run.failure())
            }
            Err(e) => (127, Some(format!("{e:#}"))),
        };
        out.drain(&mut log)?;
        err.drain(&mut log)?;
        out.pump.finish(&mut log, SystemTime::now())?;
        err.pump.finish(&mut log, SystemTime::now())?;
        let stopped_by_user = stop_requested || store.get(name)?.stopped_by_user;
        let again = settings
            .policy
            .should_restart(code, restarts, stopped_by_user);
        let delay = backoff.delay(started.elapsed());
        store.update(name, |r| {
            r.status = if again {
                Status::Restarting
            } else {
                Status::Exited
            };
            r.exit_code = Some(code);
            r.finished_ms = Some(now_ms());
            r.init_pid = None;
            r.container_id = None;
            if start_error.is_some() {
                r.error = start_error.clone();
            }
            if stop_requested {
                r.stopped_by_user = true;
            }
        })?;
        if !again {
            return Ok(code);
        }
        // Wait out the back-off, still answering a stop request and draining output.
        let until = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let mut fds = [PollFd::new(stop, PollFlags::POLLIN)];
            let ms = ms_until(until, now).min(i32::MAX as u128) as i32;
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            if readable(&fds[0]) {
                store.update(name, |r| {
                    r.status = Status::Exited;
                    r.stopped_by_user = true;
                })?;
                return Ok(code);
            }
        }
        restarts += 1;
        store.update(name, |r| r.restart_count = restarts)?;
    }
}

/// Watches one run until it exits; returns its exit status.
#[allow(clippy::too_many_arguments)]
fn watch(
    store: &Store,
    settings: &Settings,
    run: &mut dyn Running,
    probe: &mut dyn HealthProbe,
    stop: BorrowedFd,
    stop_requested: &mut bool,
    out: &mut Pipe,
    err: &mut Pipe,
    log: &mut LogWriter,
) -> Result<i32> {
    let name = settings.name.as_str();
    let mut monitor = settings
        .health
        .clone()
        .map(|h| HealthMonitor::new(h, Instant::now()));
    let mut probe_run: Option<ProbeRun> = None;
    let mut kill_at: Option<Instant> = None;
    if *stop_requested {
        run.signal(settings.stop_signal)?;
        kill_at = Some(Instant::now() + settings.stop_timeout);
    }
    // Only ask for the exit when the wait fd says so: a container's try_wait reads a channel.
    let mut may_have_exited = false;
    let result = loop {
        if may_have_exited {
            if let Some(code) = run.try_wait()? {
                break Ok(code);
            }
        }
        let now = Instant::now();
        // Wake for the next deadline: SIGKILL, a probe's timeout or poll, the next probe.
        let mut wake: Option<Instant> = kill_at;
        let mut consider = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        match (&probe_run, &monitor) {
            (Some(p), _) => consider(p.deadline.min(now + Duration::from_millis(20))),
            (None, Some(m)) => consider(m.next_due()),
            (None, None) => {}
        }
        let timeout = match wake {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(ms_until(t, now).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX),
        };
        let stop_ready = {
            let mut fds = vec![
                PollFd::new(run.wait_fd(), PollFlags::POLLIN),
                PollFd::new(out.read.as_fd(), PollFlags::POLLIN),
                PollFd::new(err.read.as_fd(), PollFlags::POLLIN),
            ];
            if !*stop_requested {
                fds.push(PollFd::new(stop, PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => break Err(anyhow::Error::from(e).context("poll")),
            }
            may_have_exited = readable(&fds[0]);
            fds.get(3).is_some_and(readable)
        };
        out.drain(log)?;
        err.drain(log)?;
        let now = Instant::now();
        if stop_ready {
            *stop_requested = true;
            store.update(name, |r| r.stopped_by_user = true)?;
            run.signal(settings.stop_signal)?;
            kill_at = Some(now + settings.stop_timeout);
        }
        if kill_at.is_some_and(|t| now >= t) {
            run.signal(libc::SIGKILL)?;
            kill_at = None;
        }
        if let Some(m) = &mut monitor {
            let mut finished: Option<bool> = None;
            if let Some(p) = &mut probe_run {
                match p.child.try_wait()? {
                    Some(st) => finished = Some(st.success()),
                    None if now >= p.deadline => {
                        p.kill();
                        finished = Some(false);
                    }
                    None => {}
                }
            }
            if let Some(passed) = finished {
                probe_run = None;
                let before = m.health();
                let after = m.record(now, passed);
                if after != before {
                    store.update(name, |r| r.health = after)?;
                }
            } else if probe_run.is_none() && m.due(now) && !*stop_requested {
                match probe.spawn(&m.config().command) {
                    Ok(child) => {
                        probe_run = Some(ProbeRun {
                            child,
                            deadline: now + m.config().timeout,
                        })
                    }
                    Err(_) => {
                        let before = m.health();
                        let after = m.record(now, false);
                        if after != before {
                            store.update(name, |r| r.health = after)?;
                        }
                    }
                }
            }
        }
    };
    if let Some(mut p) = probe_run {
        p.kill();
    }
    result
}
