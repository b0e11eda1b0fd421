//! cgroups: resource limits for one container, on cgroup v2, v1 and hybrid hosts.
//!
//! [`Cgroup::create`] finds how the host's cgroups are laid out, makes one group (v2) or one
//! group per controller (v1) for the container, writes its limits, and tells exactly which
//! limits could not be applied and why. Dropping a [`Cgroup`] does not remove it; call
//! [`Cgroup::destroy`] once every process in it has exited.

use crate::spec::Resources;

/// A limit that could not be applied, and why, with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unapplied {
    /// The spec key ("memory", "cpus", "pids", "cpuset", "io_weight").
    pub key: &'static str,
    /// Why, and how to fix it, in one or two sentences.
    pub reason: String,
}

/// A container's cgroup(s).
#[derive(Debug)]
pub struct Cgroup {
    _private: (),
}

impl Cgroup {
    /// Creates the cgroup(s) for container `name` with `limits`. Limits that cannot be applied
    /// (no delegation when rootless, controller missing) are returned in the second value rather
    /// than failing; other failures are errors naming the cgroup path.
    pub fn create(name: &str, limits: &Resources) -> anyhow::Result<(Cgroup, Vec<Unapplied>)> {
        let _ = (name, limits);
        todo!("cgroups")
    }

    /// Moves process `pid` into the cgroup(s).
    pub fn add_pid(&self, pid: i32) -> anyhow::Result<()> {
        let _ = pid;
        todo!()
    }

    /// Kills every process left in the cgroup(s) and removes them.
    pub fn destroy(self) -> anyhow::Result<()> {
        todo!()
    }
}
