//! The container lifecycle commands of the `rcl` binary: `up`, `ps`, `logs`, `exec`, `stop`,
//! `down`, `rm`, `stats`, `diff`, `commit` (and the hidden `__supervise` that `up` starts).
//!
//! `main.rs` flattens [`LifecycleCmd`] into its own subcommands and calls [`dispatch`].
//!
//! `rcl up SPEC` starts each container of the spec (in dependency order) under its own
//! supervisor process, detached from the terminal, and returns once all have started (or their
//! `depends_on` conditions hold), or stops the ones it started and names the container that
//! failed and why. Running it again is a no-op for unchanged containers; a container whose
//! settings changed is recreated (its upper layer discarded), the others are left alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;

use crate::logs::{self, Stream};
use crate::spec::{self, Condition, Layer, MountKind, Project};
use crate::state::{self, Health, ProcRef, Record, Status, Store};
use crate::supervisor::{self, container, Backoff, HealthConfig, RestartPolicy, Settings};

/// Lifecycle subcommands.
#[derive(Debug, Subcommand)]
pub enum LifecycleCmd {
    /// Start the containers of a spec in the background (a no-op for those already up).
    Up {
        /// The spec (TOML): one container, or several under [containers.NAME].
        spec: PathBuf,
    },
    /// List containers: name, state, health, pid, uptime, command.
    Ps {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a container's output.
    Logs {
        /// Keep printing new output until the container is gone.
        #[arg(short, long)]
        follow: bool,
        /// Only output since this time: a duration back (10m, 1h30m) or RFC 3339.
        #[arg(long)]
        since: Option<String>,
        /// Prefix every line with its RFC 3339 time.
        #[arg(short, long)]
        timestamps: bool,
        /// Container name.
        name: String,
    },
    /// Run a command inside a running container.
    Exec {
        /// Keep stdin attached (without it the command's stdin is /dev/null).
        #[arg(short, long)]
        interactive: bool,
        /// Give the command a pseudo-terminal.
        #[arg(short, long)]
        tty: bool,
        /// Run the command in the background (no output; exits 0 once it has started).
        #[arg(short, long, conflicts_with_all = ["interactive", "tty"])]
        detach: bool,
        /// Run as USER[:GROUP], names or numbers from the container's /etc/passwd, /etc/group.
        #[arg(short, long, value_name = "USER[:GROUP]")]
        user: Option<String>,
        /// Working directory inside the container (default: the spec's).
        #[arg(short, long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// Set a variable: KEY=VALUE, or KEY to pass on rcl's own value (repeatable).
        #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
        env: Vec<String>,
        /// Container name.
        name: String,
        /// Command and arguments (after `--`, or after the name).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stop containers (stop signal, then SIGKILL after the stop timeout).
    Stop {
        /// Container names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop and remove every container of a spec.
    Down {
        /// The spec (TOML).
        spec: PathBuf,
        /// Remove the named volumes the spec uses too.
        #[arg(long)]
        volumes: bool,
    },
    /// Remove stopped containers (their upper layer and logs).
    Rm {
        /// Stop them first if they run.
        #[arg(short, long)]
        force: bool,
        /// Container names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Resource usage of running containers (all when none is named).
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Container names.
        names: Vec<String>,
    },
    /// List files a container added (A), changed (C) or deleted (D).
    Diff {
        /// Container name.
        name: String,
    },
    /// Save a container's changes as a new layer (a directory, or a tarball with --tar).
    Commit {
        /// Write an OCI-style tarball instead of a layer directory.
        #[arg(long)]
        tar: bool,
        /// Container name.
        name: String,
        /// Output path (must not exist).
        out: PathBuf,
    },
    /// (internal) The supervisor process of one container.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// Container name.
        name: String,
    },
}

/// Runs a lifecycle command; returns the process exit status.
pub fn dispatch(cmd: LifecycleCmd) -> Result<i32> {
    match cmd {
        LifecycleCmd::Up { spec } => up(&spec),
        LifecycleCmd::Ps { json } => ps(json),
        LifecycleCmd::Logs {
            follow,
            since,
            timestamps,
            name,
        } => logs_cmd(&name, follow, since.as_deref(), timestamps),
        LifecycleCmd::Exec {
            interactive,
            tty,
            detach,
            user,
            workdir,
            env,
            name,
            command,
        } => {
            let opts = supervisor::exec::ExecOptions {
                interactive,
                tty,
                detach,
                user,
                workdir,
                env: supervisor::exec::parse_env(&env, |k| std::env::var(k).ok())?,
            };
            exec(&name, &command, &opts)
        }
        LifecycleCmd::Stop { names } => {
            let store = Store::open_default()?;
            for n in &names {
                stop(&store, n).with_context(|| format!("container {n}"))?;
                println!("{n}");
            }
            Ok(0)
        }
        LifecycleCmd::Down { spec, volumes } => down(&spec, volumes),
        LifecycleCmd::Rm { force, names } => rm(&names, force),
        LifecycleCmd::Stats { json, names } => stats(&names, json),
        LifecycleCmd::Diff { name } => diff(&name),
        LifecycleCmd::Commit { tar, name, out } => commit(&name, &out, tar),
        LifecycleCmd::Supervise { name } => supervise_main(&name),
    }
}

fn load_project(path: &Path) -> Result<Project> {
    spec::load_project(path).map_err(|e| anyhow!("{}", e.message.trim_end()))
}

/// The container `name` of the project, or an error naming both.
fn find<'a>(p: &'a Project, name: &str) -> Result<&'a spec::Container> {
    p.containers
        .iter()
        .find(|c| c.spec.name == name)
        .with_context(|| format!("the spec {} has no container {name}", p.source.display()))
}

/// Resolved lower layers of a spec, top first.
fn lowers_of(s: &spec::Spec) -> Result<Vec<PathBuf>> {
    s.rootfs
        .layers
        .iter()
        .map(|l| match l {
            Layer::Dir(p) => Ok(p.clone()),
            Layer::Host(progs) => crate::hostlayer::build(progs, &crate::paths::host_layer_cache()),
        })
        .collect()
}

/// The spec as the supervisor runs it: with a persistent upper layer under the container's
/// data directory unless the spec names one (or is read-only).
fn effective_spec(store: &Store, c: &spec::Container) -> spec::Spec {
    let mut s = c.spec.clone();
    if !s.rootfs.readonly && s.rootfs.upper.is_none() {
        s.rootfs.upper = Some(store.data_dir(&s.name).join("upper"));
    }
    s
}

fn policy_of(c: &spec::Container) -> RestartPolicy {
    RestartPolicy::from(c.restart)
}

// ---- up ----

fn up(path: &Path) -> Result<i32> {
    let project = load_project(path)?;
    let store = Store::open_default()?;
    let source = project.source.clone();
    // One `up` or `down` at a time: the names lock is held throughout, so two concurrent
    // `up`s of one spec never start a container twice.
    let _names = store.lock_names()?;
    // Claim every name first: refuse before starting anything.
    for c in &project.containers {
        state::check_name(&c.spec.name)?;
        store.claim(&c.spec.name, &source)?;
    }
    let mut started: Vec<String> = Vec::new();
    for c in &project.containers {
        let name = c.spec.name.clone();
        match up_one(&store, &project, c) {
            Ok(true) => {
                println!("{name}: started");
                started.push(name);
            }
            Ok(false) => println!("{name}: up to date"),
            Err(e) => {
                // Leave nothing half-started: stop the failed one (its supervisor may be
                // backing off to retry) and what this `up` started.
                if store.load(&name)?.is_some() {
                    let _ = stop(&store, &name);
                }
                for n in started.iter().rev() {
                    let _ = stop(&store, n);
                }
                return Err(e.context(format!("container {name}")));
            }
        }
    }
    Ok(0)
}

/// Brings one container up; true when it started a supervisor.
fn up_one(store: &Store, project: &Project, c: &spec::Container) -> Result<bool> {
    let name = &c.spec.name;
    let hash = state::settings_hash(c);
    let existing = store.load(name)?;
    if let Some(rec) = &existing {
        let rec = rec.clone().observed();
        if rec.spec_hash == hash {
            if rec.supervisor_alive() {
                wait_ready(store, project, c)?;
                return Ok(false);
            }
            if rec.stopped_by_user && !policy_of(c).up_restarts_stopped() {
                return Ok(false);
            }
            if rec.status == Status::Exited
                && !rec.stopped_by_user
                && c.restart == spec::Restart::No
                && rec.exit_code == Some(0)
                && rec.error.is_none()
            {
                // A finished one-shot job: done, like compose leaves it.
                return Ok(false);
            }
        } else {
            // Changed settings: recreate from scratch.
            stop(store, name)?;
            let _l = store.lock(name)?;
            store.remove(name, true)?;
        }
    }
    let spec = effective_spec(store, c);
    let mut rec = Record::new(name, &project.source, &hash);
    rec.command = spec.process.args.clone();
    rec.upper = spec.rootfs.upper.clone();
    rec.lowers = lowers_of(&spec).context("resolving the layers")?;
    if let Some(old) = &existing {
        if old.spec_hash == hash {
            rec.restart_count = 0;
        }
    }
    {
        let _l = store.lock(name)?;
        store.save(&rec)?;
    }
    std::fs::create_dir_all(store.data_dir(name))?;
    let mut child = spawn_supervisor(store, name)?;
    wait_started(store, name, &mut child)?;
    wait_ready(store, project, c)?;
    Ok(true)
}

fn spawn_supervisor(store: &Store, name: &str) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the rcl binary")?;
    let log_path = store.data_dir(name).join("supervisor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    // Paths in specs are already absolute; the supervisor keeps no directory busy.
    cmd.arg("__supervise")
        .arg(name)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe and only affects the child: it leaves the terminal's
    // session, so a Ctrl-C or hang-up of the caller does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // Waited for only while `up` watches it start: `rcl up` exits soon and the supervisor is
    // then adopted by init.
    cmd.spawn().context("starting the supervisor")
}

/// How long after its start a command that cannot be executed is still reported by `up`
/// (the runtime learns of an exec failure just after starting the container).
const EXEC_GRACE: Duration = Duration::from_millis(300);

/// Waits until the supervisor reports the container running (or failed: it could not be
/// created, or its command could not be executed).
fn wait_started(store: &Store, name: &str, child: &mut std::process::Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut running_since: Option<Instant> = None;
    loop {
        let rec = store.get(name)?;
        if rec.status != Status::Running {
            if let Some(e) = rec.error {
                bail!("{e}");
            }
        }
        match rec.status {
            Status::Running | Status::Restarting => {
                let since = *running_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= EXEC_GRACE {
                    return Ok(());
                }
            }
            Status::Exited if rec.finished_ms.is_some() => return Ok(()),
            _ => {}
        }
        let exited = child.try_wait().ok().flatten().is_some();
        if (rec.supervisor.is_some() && !rec.supervisor_alive()) || exited {
            // It may have finished its work in the meantime (a quick job): look again.
            let rec = store.get(name)?;
            if let Some(e) = rec.error {
                bail!("{e}");
            }
            if rec.status == Status::Exited && rec.finished_ms.is_some() {
                return Ok(());
            }
            let log = store.data_dir(name).join("supervisor.log");
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("").to_string();
            bail!("its supervisor died during start: {last}");
        }
        if Instant::now() > deadline {
            bail!("it did not start within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the conditions other containers put on `c` (`depends_on`).
fn wait_ready(store: &Store, project: &Project, c: &spec::Container) -> Result<()> {
    let name = &c.spec.name;
    let mut need = Condition::Started;
    for other in &project.containers {
        for d in &other.depends_on {
            if &d.name == name && d.condition != Condition::Started {
                need = d.condition;
            }
        }
    }
    let limit = match (&c.healthcheck, need) {
        (Some(h), Condition::Healthy) => {
            h.start_period + (h.interval + h.timeout) * (h.retries + 1) + Duration::from_secs(10)
        }
        _ => Duration::from_secs(600),
    };
    let deadline = Instant::now() + limit;
    loop {
        let rec = store.get(name)?.observed();
        match need {
            Condition::Started => return Ok(()),
            Condition::Healthy => match rec.health {
                Health::Healthy => return Ok(()),
                Health::Unhealthy => bail!("it is unhealthy (others depend on it being healthy)"),
                _ if rec.status == Status::Exited => bail!(
                    "it exited with status {} before becoming healthy",
                    rec.exit_code.unwrap_or(-1)
                ),
                _ => {}
            },
            Condition::Completed => {
                if rec.status == Status::Exited {
                    return match rec.exit_code {
                        Some(0) => Ok(()),
                        Some(c) => bail!("it exited with status {c} (others need it to complete)"),
                        None => bail!("{}", rec.error.unwrap_or_else(|| "it did not run".into())),
                    };
                }
            }
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for it to be {need:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- the supervisor process ----

fn supervise_main(name: &str) -> Result<i32> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;

    let store = Store::open_default()?;
    let rec = store.get(name)?;
    let project = load_project(&rec.spec_path)?;
    let c = find(&project, name)?;
    let spec = effective_spec(&store, c);

    // Stop requests arrive as SIGTERM, SIGINT, SIGHUP or SIGQUIT. The signals the runtime
    // forwards are blocked before any container is forked (the holder keeps them blocked, the
    // container's init unblocks); the others of them stay pending, harmless.
    let mut block = SigSet::empty();
    for s in crate::runtime::FORWARDED {
        block.add(*s);
    }
    let mut stop_set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        block.add(s);
        stop_set.add(s);
    }
    block.thread_block().context("blocking signals")?;
    let sfd = SignalFd::with_flags(&stop_set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;

    store.update(name, |r| {
        r.supervisor = Some(ProcRef::current());
        r.error = None;
    })?;
    let settings = Settings {
        name: name.to_string(),
        policy: policy_of(c),
        backoff: Backoff::default(),
        health: c.healthcheck.as_ref().map(HealthConfig::from),
        stop_signal: spec.lifecycle.stop_signal,
        stop_timeout: spec.lifecycle.stop_timeout,
        log: logs::LogConfig::default(),
    };
    let mut workload = container::ContainerWorkload {
        spec,
        opts: crate::runtime::RunOptions::default(),
    };
    let mut probe = container::ExecProbe {
        rcl: std::env::current_exe()?,
        name: name.to_string(),
    };
    let result = supervisor::supervise(&store, &settings, &mut workload, &mut probe, sfd.as_fd());
    let _ = store.update(name, |r| {
        r.supervisor = None;
        if r.status != Status::Exited {
            r.status = Status::Exited;
        }
        if let Err(e) = &result {
            r.error = Some(format!("supervisor: {e:#}"));
        }
    });
    result.map(|_| 0)
}

// ---- stop / down / rm ----

/// Stops container `name` (a no-op when it is not running); waits for its supervisor to exit.
fn stop(store: &Store, name: &str) -> Result<()> {
    let rec = store.get(name)?;
    store.update(name, |r| r.stopped_by_user = true)?;
    let Some(sup) = rec.supervisor.filter(|s| s.alive()) else {
        // Nobody looks after it: make the record say so.
        store.update(name, |r| {
            let fixed = r.clone().observed();
            *r = fixed;
            r.supervisor = None;
        })?;
        return Ok(());
    };
    // SAFETY: kill takes plain integers; `alive()` just checked pid and start time.
    unsafe { libc::kill(sup.pid, libc::SIGTERM) };
    let timeout = load_project(&rec.spec_path)
        .ok()
        .and_then(|p| find(&p, name).ok().map(|c| c.spec.lifecycle.stop_timeout))
        .unwrap_or(Duration::from_secs(10));
    let deadline = Instant::now() + timeout + Duration::from_secs(15);
    while sup.alive() {
        if Instant::now() > deadline {
            // SAFETY: as above; the supervisor's death takes the container with it.
            unsafe { libc::kill(sup.pid, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn down(path: &Path, volumes: bool) -> Result<i32> {
    let store = Store::open_default()?;
    let _names = store.lock_names()?;
    let project = load_project(path);
    let source = match &project {
        Ok(p) => p.source.clone(),
        // The spec may be gone (or broken): its records still name it by absolute path.
        Err(_) => std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_path_buf()),
    };
    let mut recs: Vec<Record> = store
        .list()?
        .into_iter()
        .filter(|r| r.spec_path == source)
        .collect();
    // Reverse start order where the spec still tells it.
    if let Ok(p) = &project {
        let order = |n: &str| p.containers.iter().position(|c| c.spec.name == n);
        recs.sort_by_key(|r| std::cmp::Reverse(order(&r.name)));
    }
    for r in &recs {
        stop(&store, &r.name).with_context(|| format!("container {}", r.name))?;
        let _l = store.lock(&r.name)?;
        store.remove(&r.name, true)?;
        println!("{}: removed", r.name);
    }
    if volumes {
        let p = project?;
        let mut seen = Vec::new();
        for c in &p.containers {
            for m in &c.spec.mounts {
                if let MountKind::Volume { name } = &m.kind {
                    if !seen.contains(name) {
                        seen.push(name.clone());
                        let d = crate::paths::volume_dir(name);
                        if d.exists() {
                            std::fs::remove_dir_all(&d)
                                .with_context(|| format!("removing volume {name}"))?;
                            println!("volume {name}: removed");
                        }
                    }
                }
            }
        }
    }
    Ok(0)
}

fn rm(names: &[String], force: bool) -> Result<i32> {
    let store = Store::open_default()?;
    for n in names {
        let rec = store
            .get(n)
            .with_context(|| format!("container {n}"))?
            .observed();
        if rec.status != Status::Exited {
            if !force {
                bail!(
                    "container {n} is {}: stop it first or use rm -f",
                    rec.status.as_str()
                );
            }
            stop(&store, n).with_context(|| format!("container {n}"))?;
        }
        let _names = store.lock_names()?;
        let _l = store.lock(n)?;
        store.remove(n, true)?;
        println!("{n}");
    }
    Ok(0)
}

// ---- ps / logs / stats ----

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn ps(json: bool) -> Result<i32> {
    let store = Store::open_default()?;
    let recs = store.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<14} {:<10} {:>8} {:>9}  COMMAND",
        "NAME", "STATE", "HEALTH", "PID", "UPTIME"
    );
    let now = state::now_ms();
    for r in &recs {
        let st = match (r.status, r.exit_code) {
            (Status::Exited, Some(c)) => format!("exited ({c})"),
            (s, _) => s.as_str().to_string(),
        };
        let uptime = match (r.status, r.started_ms) {
            (Status::Running, Some(t)) => {
                human_duration(Duration::from_millis(now.saturating_sub(t)))
            }
            _ => "-".into(),
        };
        let pid = r
            .init_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        // Health describes a running container only.
        let health = match r.status {
            Status::Running | Status::Restarting => r.health.as_str(),
            _ => "",
        };
        println!(
            "{:<20} {:<14} {:<10} {:>8} {:>9}  {}",
            r.name,
            st,
            health,
            pid,
            uptime,
            r.command.join(" ")
        );
    }
    Ok(0)
}

fn logs_cmd(name: &str, follow: bool, since: Option<&str>, timestamps: bool) -> Result<i32> {
    use std::io::Write;
    let store = Store::open_default()?;
    store.get(name)?;
    let since = since
        .map(|s| logs::parse_since(s, SystemTime::now()).map_err(|e| anyhow!(e)))
        .transpose()?;
    let dir = store.log_dir(name);
    let mut print = |l: &logs::LogLine| -> std::io::Result<()> {
        let text = l.display(timestamps);
        match l.stream {
            Stream::Stdout => std::io::stdout().write_all(text.as_bytes()),
            Stream::Stderr => std::io::stderr().write_all(text.as_bytes()),
        }
    };
    let res = if follow {
        let running = || {
            store
                .load(name)
                .ok()
                .flatten()
                .is_some_and(|r| r.observed().status != Status::Exited)
        };
        logs::follow(&dir, since, Duration::from_millis(100), running, &mut print)
    } else {
        logs::read(&dir, since).and_then(|ls| ls.iter().try_for_each(&mut print))
    };
    match res {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading the log of {name}")),
    }
}

fn stats(names: &[String], json: bool) -> Result<i32> {
    let store = Store::open_default()?;
    let recs: Vec<Record> = if names.is_empty() {
        store
            .list()?
            .into_iter()
            .filter(|r| r.status == Status::Running)
            .collect()
    } else {
        names
            .iter()
            .map(|n| store.get(n).map(Record::observed))
            .collect::<Result<_, _>>()?
    };
    let mut rows = Vec::new();
    for r in &recs {
        let id = match (&r.status, &r.container_id) {
            (Status::Running, Some(id)) => id,
            _ => bail!("container {} is not running", r.name),
        };
        let s = crate::cgroup::Cgroup::open(id)
            .and_then(|cg| cg.stats())
            .with_context(|| format!("container {}: reading its cgroup", r.name))?;
        rows.push((r.name.clone(), s));
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, s)| {
                serde_json::json!({
                    "name": n,
                    "cpu_usage_ns": s.cpu_usage_ns,
                    "memory_current": s.memory_current,
                    "memory_peak": s.memory_peak,
                    "pids_current": s.pids_current,
                    "io_read_bytes": s.io_read_bytes,
                    "io_write_bytes": s.io_write_bytes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let opt = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    let mib = |b: u64| format!("{:.1}MiB", b as f64 / 1048576.0);
    println!(
        "{:<20} {:>10} {:>12} {:>12} {:>6} {:>12} {:>12}",
        "NAME", "CPU", "MEM", "MEM PEAK", "PIDS", "IO READ", "IO WRITE"
    );
    for (n, s) in &rows {
        println!(
            "{:<20} {:>10} {:>12} {:>12} {:>6} {:>12} {:>12}",
            n,
            opt(s.cpu_usage_ns, &|ns| format!("{:.2}s", ns as f64 / 1e9)),
            opt(s.memory_current, &mib),
            opt(s.memory_peak, &mib),
            opt(s.pids_current, &|p| p.to_string()),
            opt(s.io_read_bytes, &mib),
            opt(s.io_write_bytes, &mib),
        );
    }
    Ok(0)
}

// ---- exec / diff / commit ----

/// `rcl exec`: the command's exit status; when it could not be started, one line naming the
/// container and why, and 126 (127 when the command was not found).
fn exec(name: &str, command: &[String], opts: &supervisor::exec::ExecOptions) -> Result<i32> {
    let store = Store::open_default()?;
    let rec = store.get(name)?.observed();
    let (Status::Running, Some(pid)) = (rec.status, rec.init_pid) else {
        bail!(
            "container {name} is not running ({})",
            match (rec.status, rec.exit_code) {
                (Status::Exited, Some(c)) => format!("exited with status {c}"),
                (s, _) => s.as_str().to_string(),
            }
        );
    };
    let project = load_project(&rec.spec_path)?;
    let c = find(&project, name)?;
    let out = supervisor::exec::exec(pid, rec.container_id.as_deref(), &c.spec, command, opts)
        .with_context(|| format!("container {name}"))?;
    if let Some(e) = &out.error {
        eprintln!("rcl: error: container {name}: {e}");
    }
    Ok(out.code)
}

fn upper_of(rec: &Record) -> Result<PathBuf> {
    let upper = rec.upper.clone().with_context(|| {
        format!(
            "container {} has a read-only root: nothing changes",
            rec.name
        )
    })?;
    if !upper.is_dir() {
        bail!(
            "container {}: its upper layer {} does not exist (not started yet?)",
            rec.name,
            upper.display()
        );
    }
    Ok(upper)
}

/// The mountpoints the runtime made in the container's upper layer (not the user's changes);
/// the fixed ones alone when the spec cannot be read any more.
fn stubs_of(rec: &Record) -> Vec<PathBuf> {
    let from_spec = load_project(&rec.spec_path).ok().and_then(|p| {
        find(&p, &rec.name)
            .ok()
            .map(|c| crate::runtime::mountpoints(&c.spec))
    });
    from_spec.unwrap_or_else(|| {
        crate::runtime::FIXED_MOUNTPOINTS
            .iter()
            .map(PathBuf::from)
            .collect()
    })
}

fn diff(name: &str) -> Result<i32> {
    let store = Store::open_default()?;
    let rec = store.get(name)?;
    let upper = upper_of(&rec)?;
    let changes =
        crate::layerdiff::diff(&upper, &rec.lowers).with_context(|| format!("container {name}"))?;
    let changes = crate::layerdiff::without_stubs(changes, &stubs_of(&rec));
    for c in changes {
        println!("{} /{}", c.kind.letter(), c.path.display());
    }
    Ok(0)
}

fn commit(name: &str, out: &Path, tar: bool) -> Result<i32> {
    let store = Store::open_default()?;
    let rec = store.get(name)?.observed();
    let upper = upper_of(&rec)?;
    // Freeze a running container so the layer is one consistent moment.
    let frozen = match (&rec.status, &rec.container_id) {
        (Status::Running, Some(id)) => crate::cgroup::Cgroup::open(id)
            .ok()
            .filter(|cg| cg.freeze().is_ok()),
        _ => None,
    };
    let stubs = stubs_of(&rec);
    let res = if tar {
        crate::layerdiff::commit_tar_without(&upper, &rec.lowers, &stubs, out)
    } else {
        crate::layerdiff::commit_dir_without(&upper, &rec.lowers, &stubs, out)
    };
    if let Some(cg) = frozen {
        let _ = cg.thaw();
    }
    let stats = res.with_context(|| format!("container {name}"))?;
    println!(
        "{}: {} files, {} directories, {} whiteouts",
        out.display(),
        stats.files + stats.hardlinks,
        stats.dirs,
        stats.whiteouts
    );
    Ok(0)
}
