//! cgroups: resource limits for one container, on cgroup v2, v1 and hybrid hosts.
//!
//! [`Cgroup::create`] finds how the host's cgroups are laid out ([`CgroupHost::detect`]), makes
//! one group (v2) or one group per controller hierarchy (v1) for the container, writes its
//! limits, and tells exactly which limits could not be applied and why ([`Unapplied`]).
//! Dropping a [`Cgroup`] does not remove it; call [`Cgroup::destroy`] when the container is
//! done. Another process (`rcl stop NAME`) finds the same groups with [`Cgroup::open`].
//!
//! Where the groups live:
//! - v1 (and the v1 part of a hybrid host): `<hierarchy>/rcl/<name>` in every hierarchy that
//!   has one of cpu, cpuacct, cpuset, memory, pids, blkio, freezer.
//! - v2 (and the cgroup2 tree of a hybrid host, used for tracking, killing and freezing):
//!   `<top>/rcl/<name>`, where `<top>` is the highest cgroup above this process that it may
//!   write: the hierarchy's root as root, the delegated subtree (systemd's
//!   `user@UID.service`) when rootless.
//!
//! A limit goes to the v1 hierarchy that has its controller, else to the v2 tree. Rootless with
//! no limits asked for never warns: groups that cannot be made are simply not made.
//!
//! Details worth knowing:
//! - v1 cpuset groups get their parent's cpus and mems first (tasks cannot join otherwise);
//!   memory also sets memory.memsw (v1) or memory.swap.max = 0 (v2) so the limit is real;
//!   cpus become a CFS quota over a 100 ms period; io_weight (1..=10000) is scaled onto
//!   blkio.weight (10..=1000) or BFQ's weight (1..=1000).
//! - v2 "no internal processes" rule: when rcl is alone in `<top>` and the kernel refuses to
//!   enable a controller there, rcl moves itself into the leaf `<top>/rcl-launcher` first.
//! - A group left by a crash (same name, no live process) is removed and made afresh; one with
//!   live processes makes [`Cgroup::create`] fail ("already running").

mod fsops;
mod host;
mod limits;

pub use host::{CgroupHost, Layout, Unified, V1Hierarchy};

use crate::spec::Resources;
use anyhow::{bail, Context};
use fsops::{is_permission, read_procs, read_trim, read_u64, rmdir_retry, wait_for, writable};
use limits::Want;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// v1 controllers that get a group of their own (others, such as name=systemd, are left alone).
const TRACKED_V1: [&str; 7] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
];

/// Name of the shared parent group under which every container's group is made.
pub const PARENT: &str = "rcl";

/// The v2 leaf rcl moves itself into when it is alone in the top of its delegated subtree,
/// so that the top may enable controllers for its children.
pub const LAUNCHER: &str = "rcl-launcher";

/// How long [`Cgroup::kill_all`] keeps killing before it gives up.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long freezing may take before [`Cgroup::freeze`] reports failure.
const FREEZE_WAIT: Duration = Duration::from_secs(2);

/// A limit that could not be applied, and why, with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapplied {
    /// The spec key ("memory", "cpus", "pids", "cpuset", "io_weight").
    pub key: &'static str,
    /// Why, and how to fix it, in one or two sentences.
    pub reason: String,
}

impl std::fmt::Display for Unapplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limit '{}' not applied: {}", self.key, self.reason)
    }
}

/// Resource usage of a container's cgroup; `None` where this host's cgroups do not count it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Memory in use now, in bytes (page cache included).
    pub memory_current: Option<u64>,
    /// Highest memory use seen, in bytes.
    pub memory_peak: Option<u64>,
    /// Tasks (threads) in the group now.
    pub pids_current: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
}

/// One v1 hierarchy's group for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Dir {
    controllers: Vec<String>,
    dir: PathBuf,
}

/// A container's cgroup(s).
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    unified: Option<PathBuf>,
    v1: Vec<V1Dir>,
}

impl Cgroup {
    /// Creates the cgroup(s) for container `name` with `limits`. Limits that cannot be applied
    /// (no delegation when rootless, controller missing) are returned in the second value rather
    /// than failing; other failures are errors naming the cgroup path, and leave no group behind.
    pub fn create(name: &str, limits: &Resources) -> anyhow::Result<(Cgroup, Vec<Unapplied>)> {
        CgroupHost::detect()?.create(name, limits)
    }

    /// Finds the cgroup(s) that [`Cgroup::create`] made for container `name`, from any process
    /// of the same user. Fails when there are none.
    pub fn open(name: &str) -> anyhow::Result<Cgroup> {
        CgroupHost::detect()?.open(name)
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when no group could be made (rootless on a host without delegation, no limits
    /// asked): then [`Cgroup::add_pid`] does nothing and [`Cgroup::stats`] knows nothing.
    pub fn is_empty(&self) -> bool {
        self.unified.is_none() && self.v1.is_empty()
    }

    /// The container's group in the cgroup2 tree, if it has one.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The container's group in the v1 hierarchy that has `controller`, if it has one.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.dir.as_path())
    }

    /// Every directory of the container's groups.
    pub fn dirs(&self) -> Vec<&Path> {
        self.unified
            .iter()
            .map(PathBuf::as_path)
            .chain(self.v1.iter().map(|d| d.dir.as_path()))
            .collect()
    }

    /// The `cgroup.procs` files a process joins by writing its pid (or `0` for itself) into
    /// each, e.g. from a child between fork and exec with pre-opened files.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` into the cgroup(s) (`0` moves the calling process).
    pub fn add_pid(&self, pid: i32) -> anyhow::Result<()> {
        for file in self.procs_files() {
            fsops::write_raw(&file, &pid.to_string()).with_context(|| {
                format!(
                    "moving process {pid} into cgroup {}",
                    file.parent().unwrap_or(&file).display()
                )
            })?;
        }
        Ok(())
    }

    /// The live processes in the cgroup(s) (zombies excluded), sorted.
    pub fn pids(&self) -> anyhow::Result<Vec<i32>> {
        let mut all = Vec::new();
        for file in self.procs_files() {
            all.extend(read_procs(&file)?);
        }
        all.sort_unstable();
        all.dedup();
        all.retain(|&p| !fsops::is_dead(p));
        Ok(all)
    }

    /// Current usage: CPU time, memory now and at peak, tasks, block I/O.
    pub fn stats(&self) -> anyhow::Result<Stats> {
        let u = self.unified.as_deref();
        let mut s = Stats {
            cpu_usage_ns: match self.v1_dir("cpuacct") {
                Some(d) => read_u64(&d.join("cpuacct.usage")),
                None => u
                    .and_then(|d| keyed(&d.join("cpu.stat"), "usage_usec"))
                    .map(|us| us * 1000),
            },
            ..Stats::default()
        };
        if let Some(d) = self.v1_dir("memory") {
            s.memory_current = read_u64(&d.join("memory.usage_in_bytes"));
            s.memory_peak = read_u64(&d.join("memory.max_usage_in_bytes"));
        } else if let Some(d) = u {
            s.memory_current = read_u64(&d.join("memory.current"));
            s.memory_peak = read_u64(&d.join("memory.peak"));
        }
        s.pids_current = self
            .v1_dir("pids")
            .or(u)
            .and_then(|d| read_u64(&d.join("pids.current")));
        if s.pids_current.is_none() && !self.is_empty() {
            s.pids_current = Some(self.pids()?.len() as u64);
        }
        let io = match self.v1_dir("blkio") {
            Some(d) => [
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.io_service_bytes_recursive",
                "blkio.bfq.io_service_bytes_recursive",
            ]
            .iter()
            .find_map(|f| blkio_bytes(&d.join(f))),
            None => u.and_then(|d| io_stat_bytes(&d.join("io.stat"))),
        };
        if let Some((r, w)) = io {
            s.io_read_bytes = Some(r);
            s.io_write_bytes = Some(w);
        }
        Ok(s)
    }

    /// Stops every process in the group until [`Cgroup::thaw`] (v2 cgroup.freeze, else the v1
    /// freezer), and waits until they are all stopped.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.set_frozen(true)
    }

    /// Lets the processes stopped by [`Cgroup::freeze`] run again.
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> anyhow::Result<()> {
        if let Some(d) = self
            .unified
            .as_deref()
            .filter(|d| d.join("cgroup.freeze").exists())
        {
            fsops::write_value(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
            let events = d.join("cgroup.events");
            let want = if frozen { "1" } else { "0" };
            if !wait_for(FREEZE_WAIT, || {
                keyed_str(&events, "frozen").as_deref() == Some(want)
            }) {
                bail!(
                    "cgroup {} did not become {} within {FREEZE_WAIT:?}",
                    d.display(),
                    if frozen { "frozen" } else { "thawed" }
                );
            }
            return Ok(());
        }
        let Some(d) = self.v1_dir("freezer") else {
            bail!(
                "cannot {} container '{}': it has no cgroup2 group with cgroup.freeze and no v1 \
                 freezer group",
                if frozen { "freeze" } else { "thaw" },
                self.name
            );
        };
        let state = d.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        fsops::write_value(&state, want)?;
        if !wait_for(FREEZE_WAIT, || read_trim(&state).is_ok_and(|s| s == want)) {
            bail!(
                "{} did not become {want} within {FREEZE_WAIT:?}",
                state.display()
            );
        }
        Ok(())
    }

    /// Kills every process in the cgroup(s) with SIGKILL (atomically with cgroup.kill on v2,
    /// else by freezing, killing each listed pid and thawing, repeated) and waits, at most a
    /// few seconds, until none is left alive.
    pub fn kill_all(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + KILL_WAIT;
        let kill_file = self
            .unified
            .as_deref()
            .map(|d| d.join("cgroup.kill"))
            .filter(|f| f.exists());
        let freezer = self
            .v1_dir("freezer")
            .map(|d| d.join("freezer.state"))
            .filter(|f| f.exists());
        loop {
            let left = self.pids()?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "processes {left:?} are still alive in cgroup {} after {KILL_WAIT:?} of \
                     SIGKILL",
                    self.dirs().first().map_or(Path::new("?"), |d| d).display()
                );
            }
            if let Some(k) = &kill_file {
                // A group that vanished meanwhile is not an error.
                if let Err(e) = fsops::write_raw(k, "1") {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(e).with_context(|| format!("writing '1' to {}", k.display()));
                    }
                }
            }
            // Frozen tasks cannot fork while we kill them one by one; they die once thawed.
            let frozen = freezer
                .as_ref()
                .is_some_and(|f| fsops::write_raw(f, "FROZEN").is_ok());
            if frozen {
                let f = freezer.as_ref().expect("freezer");
                wait_for(Duration::from_millis(200), || {
                    read_trim(f).is_ok_and(|s| s == "FROZEN")
                });
            }
            for pid in self.pids()? {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let (true, Some(f)) = (frozen, &freezer) {
                let _ = fsops::write_raw(f, "THAWED");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills every process left in the cgroup(s) and removes them. A group already gone is
    /// fine; the shared `rcl` parent groups are kept.
    pub fn destroy(self) -> anyhow::Result<()> {
        let killed = self.kill_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut first_err = killed.err();
        for d in self.dirs() {
            if let Err(e) = rmdir_retry(d, deadline) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e.context(format!(
                "destroying the cgroup of container '{}'",
                self.name
            ))),
        }
    }
}

/// Reads `key value` lines (cpu.stat, cgroup.events) and returns `key`'s value.
fn keyed_str(path: &Path, key: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().to_string())
    })
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    keyed_str(path, key)?.parse().ok()
}

/// Sums the "Read" and "Write" lines of a v1 blkio io_service_bytes file.
fn blkio_bytes(path: &Path) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let (mut r, mut w) = (0, 0);
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, op, n] = f[..] {
            let n: u64 = n.parse().unwrap_or(0);
            match op {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    Some((r, w))
}

/// Sums rbytes= and wbytes= over the devices of a v2 io.stat file.
fn io_stat_bytes(path: &Path) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let (mut r, mut w) = (0, 0);
    for kv in s.split_whitespace() {
        if let Some(n) = kv.strip_prefix("rbytes=") {
            r += n.parse().unwrap_or(0);
        } else if let Some(n) = kv.strip_prefix("wbytes=") {
            w += n.parse().unwrap_or(0);
        }
    }
    Some((r, w))
}

/// Checks a container name can be a cgroup directory name.
fn validate_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 200
        || name.contains(['/', '\0', '\n'])
    {
        bail!(
            "invalid container name {name:?} for a cgroup (<hierarchy>/{PARENT}/{name}): it must \
             be 1 to 200 bytes, not '.' or '..', without '/' or newlines"
        );
    }
    Ok(())
}

/// Creates `dir` if missing; `Ok(true)` when this call made it.
fn mkdir_shared(dir: &Path) -> std::io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes the container's own group `dir`. An existing group without live processes (left by a
/// crash) is made afresh, so none of its old limits remain; one with live processes is an
/// error. `Ok(true)` when this call made it.
fn mkdir_leaf(dir: &Path, name: &str) -> std::io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if !dir.is_dir() {
                return Err(std::io::Error::other(format!(
                    "{} is a cgroup interface file, not a group: choose another container name",
                    dir.display()
                )));
            }
            let live: Vec<i32> = read_procs(&dir.join("cgroup.procs"))
                .map_err(std::io::Error::other)?
                .into_iter()
                .filter(|&p| !fsops::is_dead(p))
                .collect();
            if !live.is_empty() {
                return Err(std::io::Error::other(format!(
                    "cgroup {} already exists with processes {live:?} in it: is container \
                     '{name}' already running?",
                    dir.display()
                )));
            }
            // Fresh limits: remove the stale group and make it again; if the kernel still
            // holds it (exiting tasks), reuse it.
            if std::fs::remove_dir(dir).is_ok() {
                std::fs::create_dir(dir)?;
                return Ok(true);
            }
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Gives a v1 cpuset group its parent's cpus and mems when it has none (tasks cannot join a
/// cpuset group with empty ones).
fn cpuset_inherit(dir: &Path) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read_trim(&dir.join(f))?.is_empty() {
            let v = read_trim(&parent.join(f))?;
            fsops::write_value(&dir.join(f), &v)?;
        }
    }
    Ok(())
}

/// State while creating: what was made (for rollback) and what could not be applied.
struct Build {
    cg: Cgroup,
    made: Vec<PathBuf>,
    unapplied: Vec<Unapplied>,
    uid: u32,
}

impl Build {
    fn skip(&mut self, key: &'static str, reason: String) {
        self.unapplied.push(Unapplied { key, reason });
    }

    fn rollback(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        for d in self.made.iter().rev() {
            let _ = rmdir_retry(d, deadline);
        }
    }
}

impl CgroupHost {
    /// Creates container `name`'s groups on this host: see [`Cgroup::create`].
    pub fn create(
        &self,
        name: &str,
        limits: &Resources,
    ) -> anyhow::Result<(Cgroup, Vec<Unapplied>)> {
        validate_name(name)?;
        let mut b = Build {
            cg: Cgroup {
                name: name.to_string(),
                unified: None,
                v1: Vec::new(),
            },
            made: Vec::new(),
            unapplied: Vec::new(),
            uid: nix::unistd::geteuid().as_raw(),
        };
        let wants = limits::requested(limits);
        match self.build(name, limits, &wants, &mut b) {
            Ok(()) => {
                b.unapplied.sort_by_key(|u| limits::rank(u.key));
                Ok((b.cg, b.unapplied))
            }
            Err(e) => {
                b.rollback();
                Err(e)
            }
        }
    }

    fn build(
        &self,
        name: &str,
        r: &Resources,
        wants: &[Want],
        b: &mut Build,
    ) -> anyhow::Result<()> {
        for h in &self.v1 {
            if !h
                .controllers
                .iter()
                .any(|c| TRACKED_V1.contains(&c.as_str()))
            {
                continue;
            }
            let here: Vec<Want> = wants.iter().copied().filter(|w| h.has(w.v1)).collect();
            let parent = h.mount.join(PARENT);
            let dir = parent.join(name);
            let probe = if parent.is_dir() { &parent } else { &h.mount };
            if !writable(probe) {
                for w in here {
                    b.skip(w.key, limits::v1_not_writable(w, &h.mount, b.uid));
                }
                continue;
            }
            let cpuset = h.has("cpuset");
            let made = mkdir_shared(&parent)
                .with_context(|| format!("creating cgroup {}", parent.display()));
            match made {
                Err(e) if e.downcast_ref().is_some_and(is_permission) => {
                    for w in here {
                        b.skip(w.key, limits::v1_not_writable(w, &h.mount, b.uid));
                    }
                    continue;
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            if cpuset {
                cpuset_inherit(&parent)?;
            }
            if mkdir_leaf(&dir, name)
                .with_context(|| format!("creating cgroup {}", dir.display()))?
            {
                b.made.push(dir.clone());
            }
            if cpuset {
                cpuset_inherit(&dir)?;
            }
            b.cg.v1.push(V1Dir {
                controllers: h.controllers.clone(),
                dir: dir.clone(),
            });
            for w in here {
                if let Some(why) = limits::apply_v1(w, &dir, r)? {
                    b.skip(w.key, why);
                }
            }
        }
        let rest: Vec<Want> = wants
            .iter()
            .copied()
            .filter(|w| self.v1_with(w.v1).is_none())
            .collect();
        match &self.unified {
            Some(u) => self.build_v2(u, name, r, &rest, b),
            None => {
                let mounted: Vec<String> = self
                    .v1
                    .iter()
                    .flat_map(|h| h.controllers.iter().cloned())
                    .filter(|c| !c.starts_with("name="))
                    .collect();
                for w in rest {
                    b.skip(w.key, limits::nowhere(w, &mounted));
                }
                Ok(())
            }
        }
    }

    fn build_v2(
        &self,
        u: &Unified,
        name: &str,
        r: &Resources,
        wants: &[Want],
        b: &mut Build,
    ) -> anyhow::Result<()> {
        let top = match delegation_top(u) {
            Some(t) => t,
            None => {
                for &w in wants {
                    b.skip(w.key, limits::v2_not_delegated(w, &u.current, b.uid));
                }
                return Ok(());
            }
        };
        let parent = top.join(PARENT);
        match mkdir_shared(&parent) {
            Ok(_) => {}
            Err(e) if is_permission(&e) => {
                for &w in wants {
                    b.skip(w.key, limits::v2_not_delegated(w, &u.current, b.uid));
                }
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating cgroup {}", parent.display()))
            }
        }
        let available: Vec<String> = std::fs::read_to_string(top.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut usable = Vec::new();
        for &w in wants {
            if !available.iter().any(|c| c == w.v2) {
                b.skip(w.key, limits::v2_unavailable(w, &top, &available, b.uid));
                continue;
            }
            let mut at_top = limits::enable_v2(&top, w.v2, b.uid);
            if matches!(at_top, Err(limits::EnableError::Busy(_))) && self.leave_top(&top)? {
                at_top = limits::enable_v2(&top, w.v2, b.uid);
            }
            match at_top.and_then(|()| limits::enable_v2(&parent, w.v2, b.uid)) {
                Ok(()) => usable.push(w),
                Err(e) => b.skip(w.key, e.reason()),
            }
        }
        let dir = parent.join(name);
        if mkdir_leaf(&dir, name).with_context(|| format!("creating cgroup {}", dir.display()))? {
            b.made.push(dir.clone());
        }
        b.cg.unified = Some(dir.clone());
        for w in usable {
            if let Some(why) = limits::apply_v2(w, &dir, r)? {
                b.skip(w.key, why);
            }
        }
        Ok(())
    }

    /// The "no internal processes" rule: a v2 group with processes of its own cannot enable
    /// controllers for its children. When the only process in `top` is this one (rcl started
    /// straight in a delegated scope), it moves itself into the leaf `<top>/rcl-launcher` and
    /// returns true; with other processes there it leaves them alone and returns false.
    fn leave_top(&self, top: &Path) -> anyhow::Result<bool> {
        let me = std::process::id() as i32;
        let mut there = read_procs(&top.join("cgroup.procs"))?;
        there.retain(|&p| !fsops::is_dead(p));
        if there != [me] {
            return Ok(false);
        }
        let leaf = top.join(LAUNCHER);
        mkdir_shared(&leaf).with_context(|| format!("creating cgroup {}", leaf.display()))?;
        fsops::write_value(&leaf.join("cgroup.procs"), "0")
            .with_context(|| format!("moving rcl itself out of {}", top.display()))?;
        Ok(true)
    }

    /// Finds container `name`'s existing groups on this host: see [`Cgroup::open`].
    pub fn open(&self, name: &str) -> anyhow::Result<Cgroup> {
        validate_name(name)?;
        let mut cg = Cgroup {
            name: name.to_string(),
            unified: None,
            v1: Vec::new(),
        };
        let mut looked = Vec::new();
        for h in &self.v1 {
            if !h
                .controllers
                .iter()
                .any(|c| TRACKED_V1.contains(&c.as_str()))
            {
                continue;
            }
            let dir = h.mount.join(PARENT).join(name);
            if dir.is_dir() {
                cg.v1.push(V1Dir {
                    controllers: h.controllers.clone(),
                    dir,
                });
            } else {
                looked.push(dir);
            }
        }
        if let Some(top) = self.unified.as_ref().and_then(delegation_top) {
            let dir = top.join(PARENT).join(name);
            if dir.is_dir() {
                cg.unified = Some(dir);
            } else {
                looked.push(dir);
            }
        }
        if cg.is_empty() {
            let looked: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "no cgroup for container '{name}' (looked for {})",
                if looked.is_empty() {
                    "nothing: no cgroup hierarchy is usable here".to_string()
                } else {
                    looked.join(", ")
                }
            );
        }
        Ok(cg)
    }
}

/// The highest cgroup at or above this process's own that this process may manage (its
/// directory and cgroup.procs writable): the hierarchy root as root, the delegated subtree
/// when rootless. `None` when even its own cgroup is not writable (nothing is delegated).
fn delegation_top(u: &Unified) -> Option<PathBuf> {
    let ok = |d: &Path| writable(d) && writable(&d.join("cgroup.procs"));
    if !ok(&u.current) {
        return None;
    }
    let mut top = u.current.clone();
    while top != u.mount {
        match top.parent() {
            Some(p) if p.starts_with(&u.mount) && ok(p) => top = p.to_path_buf(),
            _ => break,
        }
    }
    Some(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for bad in ["", ".", "..", "a/b", "x\ny", &"n".repeat(201)] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid container name"), "{e}");
        }
        validate_name("web-1.test_x").unwrap();
    }

    #[test]
    fn stat_files() {
        let d = tempfile::tempdir().unwrap();
        let blk = d.path().join("blk");
        std::fs::write(
            &blk,
            "8:0 Read 4096\n8:0 Write 100\n8:0 Sync 1\n8:16 Read 4\nTotal 4201\n",
        )
        .unwrap();
        assert_eq!(blkio_bytes(&blk), Some((4100, 100)));
        let io = d.path().join("io.stat");
        std::fs::write(
            &io,
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2 rios=1\n",
        )
        .unwrap();
        assert_eq!(io_stat_bytes(&io), Some((11, 22)));
        let cpu = d.path().join("cpu.stat");
        std::fs::write(&cpu, "usage_usec 1234\nuser_usec 1000\n").unwrap();
        assert_eq!(keyed(&cpu, "usage_usec"), Some(1234));
        assert_eq!(keyed(&cpu, "nope"), None);
    }

    #[test]
    fn delegation_walk_stops_at_first_unwritable_parent() {
        // Path logic only: a root-owned tree where one level is made read-only for its owner
        // stands in for a delegation boundary. Needs a non-root user to mean anything.
        if nix::unistd::geteuid().is_root() {
            // access(2) ignores mode bits for root, so this check only runs as a normal user.
            let d = tempfile::tempdir().unwrap();
            let u = Unified {
                mount: d.path().to_path_buf(),
                current: d.path().join("a/b"),
            };
            std::fs::create_dir_all(&u.current).unwrap();
            for p in [d.path(), &d.path().join("a"), &u.current] {
                std::fs::write(p.join("cgroup.procs"), "").unwrap();
            }
            assert_eq!(delegation_top(&u).as_deref(), Some(d.path()));
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let u = Unified {
            mount: d.path().to_path_buf(),
            current: d.path().join("a/b/c"),
        };
        std::fs::create_dir_all(&u.current).unwrap();
        for p in [
            d.path(),
            &d.path().join("a"),
            &d.path().join("a/b"),
            &u.current,
        ] {
            std::fs::write(p.join("cgroup.procs"), "").unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        let ro = std::fs::Permissions::from_mode(0o555);
        std::fs::set_permissions(d.path().join("a"), ro).unwrap();
        assert_eq!(delegation_top(&u).as_deref(), Some(&*d.path().join("a/b")));
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }

    /// This process's view with only the cgroup2 tree kept.
    fn v2_only() -> Option<CgroupHost> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let keep = |t: &str, f: &dyn Fn(&str) -> bool| -> String {
            t.lines()
                .filter(|l| f(l))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let h = CgroupHost::from_proc_text(
            &keep(&mi, &|l| l.contains(" - cgroup2 ")),
            &keep(&cg, &|l| l.starts_with("0::")),
        );
        (h.layout() == Layout::V2).then_some(h)
    }

    /// Run in a child process by `busy_top_moves_rcl_into_a_launcher_leaf`: this process is
    /// alone in the group RCL_CG_TOP; enabling RCL_CG_CTRL for its children must first be
    /// refused as busy, then work once `leave_top` moved this process into the leaf.
    #[test]
    #[ignore = "helper run in a child process by busy_top_moves_rcl_into_a_launcher_leaf"]
    fn leave_top_child() {
        let top = PathBuf::from(std::env::var("RCL_CG_TOP").unwrap());
        let c = std::env::var("RCL_CG_CTRL").unwrap();
        let host = v2_only().unwrap();
        let first = limits::enable_v2(&top, &c, 0);
        println!(
            "\nFIRST {}",
            matches!(first, Err(limits::EnableError::Busy(_)))
        );
        println!("MOVED {}", host.leave_top(&top).unwrap());
        println!("SECOND {}", limits::enable_v2(&top, &c, 0).is_ok());
    }

    /// The "no internal processes" rule on the real cgroup2 tree, with a controller this
    /// module does not otherwise use (hybrid hosts offer hugetlb, misc or rdma there).
    #[test]
    fn busy_top_moves_rcl_into_a_launcher_leaf() {
        if !nix::unistd::geteuid().is_root() {
            testkit::skip!("needs root to create groups in the cgroup2 root");
        }
        let Some(host) = v2_only() else {
            testkit::skip!("no cgroup2 tree");
        };
        let root = host.unified().unwrap().mount.clone();
        let offered = read_trim(&root.join("cgroup.controllers")).unwrap();
        let Some(c) = ["hugetlb", "misc", "rdma"]
            .into_iter()
            .find(|c| offered.split_whitespace().any(|o| o == *c))
        else {
            testkit::skip!("the cgroup2 root offers no spare controller to test with");
        };
        let before = read_trim(&root.join("cgroup.subtree_control")).unwrap();
        let was_on = before.split_whitespace().any(|o| o == c);
        let top = root.join(format!("rcl-unit-busy-{}", std::process::id()));
        std::fs::create_dir(&top).unwrap();
        struct Cleanup(PathBuf, PathBuf, &'static str, bool);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = fsops::write_raw(&self.0.join("cgroup.kill"), "1");
                std::thread::sleep(Duration::from_millis(50));
                let _ = std::fs::remove_dir(self.0.join(LAUNCHER));
                let _ = std::fs::remove_dir(&self.0);
                if !self.3 {
                    let _ = fsops::write_raw(
                        &self.1.join("cgroup.subtree_control"),
                        &format!("-{}", self.2),
                    );
                }
            }
        }
        let _cleanup = Cleanup(top.clone(), root.clone(), c, was_on);
        limits::enable_v2(&root, c, 0).unwrap();
        let exe = std::env::current_exe().unwrap();
        let top_procs = top.join("cgroup.procs");
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$1\" && exec \"$0\" --ignored --exact cgroup::tests::leave_top_child --nocapture")
            .arg(&exe)
            .arg(&top_procs)
            .env("RCL_CG_TOP", &top)
            .env("RCL_CG_CTRL", c);
        let out = testkit::run_timeout(&mut cmd, Duration::from_secs(30));
        out.assert_ok();
        for line in ["FIRST true", "MOVED true", "SECOND true"] {
            assert!(
                out.stdout.lines().any(|l| l == line),
                "{line}: {}",
                out.stdout
            );
        }
        let on = read_trim(&top.join("cgroup.subtree_control")).unwrap();
        assert!(on.split_whitespace().any(|o| o == c), "{on}");
    }
}
