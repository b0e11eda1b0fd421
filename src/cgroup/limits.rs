//! Which controller each limit needs, how each is written on v1 and v2, and the reasons given
//! when one cannot be applied.

use super::fsops::{writable, write_value};
use crate::spec::Resources;
use std::path::Path;

/// CFS period used for CPU quotas, in microseconds.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// One limit a spec can ask for, with the controller it needs on v1 and on v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    /// The spec key, as reported in [`super::Unapplied::key`].
    pub key: &'static str,
    /// The v1 controller.
    pub v1: &'static str,
    /// The v2 controller.
    pub v2: &'static str,
}

const ALL: [Want; 5] = [
    Want {
        key: "memory",
        v1: "memory",
        v2: "memory",
    },
    Want {
        key: "cpus",
        v1: "cpu",
        v2: "cpu",
    },
    Want {
        key: "pids",
        v1: "pids",
        v2: "pids",
    },
    Want {
        key: "cpuset",
        v1: "cpuset",
        v2: "cpuset",
    },
    Want {
        key: "io_weight",
        v1: "blkio",
        v2: "io",
    },
];

/// Position of a spec key in the spec's own order (memory, cpus, pids, cpuset, io_weight).
pub(crate) fn rank(key: &str) -> usize {
    ALL.iter().position(|w| w.key == key).unwrap_or(ALL.len())
}

/// The limits `r` asks for.
pub(crate) fn requested(r: &Resources) -> Vec<Want> {
    ALL.iter()
        .copied()
        .filter(|w| match w.key {
            "memory" => r.memory.is_some(),
            "cpus" => r.cpus.is_some(),
            "pids" => r.pids.is_some(),
            "cpuset" => r.cpuset.is_some(),
            _ => r.io_weight.is_some(),
        })
        .collect()
}

/// CPU quota in microseconds per [`CPU_PERIOD_US`] for `cpus` CPUs (the kernel's minimum is
/// 1000 µs).
pub(crate) fn cpu_quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// Maps an io.weight (1..=10000) linearly onto `lo..=hi` (v1 blkio.weight is 10..=1000, BFQ's
/// weights 1..=1000).
pub(crate) fn scale_weight(w: u16, lo: u64, hi: u64) -> u64 {
    let w = u64::from(w.clamp(1, 10000));
    lo + (w - 1) * (hi - lo) / 9999
}

/// Writes the limit `w` into the v1 cgroup `dir`. `Ok(Some(reason))` when this host's
/// controller cannot express it.
pub(crate) fn apply_v1(w: Want, dir: &Path, r: &Resources) -> anyhow::Result<Option<String>> {
    match w.key {
        "memory" => {
            let bytes = r.memory.unwrap_or(u64::MAX).to_string();
            write_value(&dir.join("memory.limit_in_bytes"), &bytes)?;
            // memory+swap: without it the limit only moves the excess to swap.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_value(&memsw, &bytes)?;
            }
        }
        "cpus" => {
            let quota = cpu_quota_us(r.cpus.unwrap_or(1.0));
            write_value(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_value(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        "pids" => write_value(&dir.join("pids.max"), &r.pids.unwrap_or(0).to_string())?,
        "cpuset" => write_value(&dir.join("cpuset.cpus"), r.cpuset.as_deref().unwrap_or(""))?,
        _ => {
            let weight = r.io_weight.unwrap_or(100);
            let legacy = dir.join("blkio.weight");
            let bfq = dir.join("blkio.bfq.weight");
            if legacy.exists() {
                write_value(&legacy, &scale_weight(weight, 10, 1000).to_string())?;
            } else if bfq.exists() {
                write_value(&bfq, &scale_weight(weight, 1, 1000).to_string())?;
            } else {
                return Ok(Some(format!(
                    "the blkio controller at {} has neither blkio.weight nor blkio.bfq.weight: \
                     I/O weights need the BFQ I/O scheduler with cgroup support \
                     (CONFIG_BFQ_GROUP_IOSCHED); load it or leave io_weight out",
                    dir.display()
                )));
            }
        }
    }
    Ok(None)
}

/// Writes the limit `w` into the v2 cgroup `dir`. `Ok(Some(reason))` when this host's
/// controller cannot express it.
pub(crate) fn apply_v2(w: Want, dir: &Path, r: &Resources) -> anyhow::Result<Option<String>> {
    match w.key {
        "memory" => {
            write_value(&dir.join("memory.max"), &r.memory.unwrap_or(0).to_string())?;
            // No swap either, so the limit is real (the file is absent without swap support).
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_value(&swap, "0")?;
            }
        }
        "cpus" => {
            let quota = cpu_quota_us(r.cpus.unwrap_or(1.0));
            write_value(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        "pids" => write_value(&dir.join("pids.max"), &r.pids.unwrap_or(0).to_string())?,
        "cpuset" => write_value(&dir.join("cpuset.cpus"), r.cpuset.as_deref().unwrap_or(""))?,
        _ => {
            let weight = r.io_weight.unwrap_or(100);
            let iocost = dir.join("io.weight");
            let bfq = dir.join("io.bfq.weight");
            if iocost.exists() {
                write_value(&iocost, &format!("default {weight}"))?;
            } else if bfq.exists() {
                write_value(&bfq, &scale_weight(weight, 1, 1000).to_string())?;
            } else {
                return Ok(Some(format!(
                    "the io controller at {} has neither io.weight nor io.bfq.weight: I/O \
                     weights need blk-iocost or the BFQ I/O scheduler; leave io_weight out",
                    dir.display()
                )));
            }
        }
    }
    Ok(None)
}

/// Reason for a limit whose v1 hierarchy this user cannot write.
pub(crate) fn v1_not_writable(w: Want, mount: &Path, uid: u32) -> String {
    if uid == 0 {
        return format!(
            "the cgroup v1 '{}' hierarchy at {} is not writable even by root (a read-only \
             mount, as inside a container): remount it read-write or give the container a \
             writable cgroup mount",
            w.v1,
            mount.display()
        );
    }
    format!(
        "the cgroup v1 '{}' hierarchy at {} is not writable by user {uid}, and cgroup v1 cannot \
         be delegated to unprivileged users: run rcl as root, or use a cgroup v2 host with the \
         '{}' controller delegated (`systemctl edit user@{uid}.service`: \
         Delegate=cpu cpuset io memory pids)",
        w.v1,
        mount.display(),
        w.v2
    )
}

/// Reason for a limit whose controller no hierarchy on this host has.
pub(crate) fn nowhere(w: Want, mounted: &[String]) -> String {
    format!(
        "no cgroup hierarchy on this host has the '{}' controller (v1 controllers mounted: {}; \
         no cgroup2 hierarchy): mount it, e.g. `mount -t cgroup -o {} cgroup /sys/fs/cgroup/{}`",
        w.v1,
        if mounted.is_empty() {
            "none".to_string()
        } else {
            mounted.join(", ")
        },
        w.v1,
        w.v1
    )
}

/// Reason for a v2 limit when this process's own cgroup is not writable (not delegated).
pub(crate) fn v2_not_delegated(w: Want, current: &Path, uid: u32) -> String {
    format!(
        "cgroup v2 controller '{}' is not delegated to user {uid}: this process's cgroup {} is \
         not writable by it; start rcl in a delegated scope (`systemd-run --user --scope \
         -p Delegate=yes rcl ...`) or run as root",
        w.v2,
        current.display()
    )
}

/// Reason for a v2 limit whose controller is not in `top`'s cgroup.controllers.
pub(crate) fn v2_unavailable(w: Want, top: &Path, available: &[String], uid: u32) -> String {
    let list = if available.is_empty() {
        "none".to_string()
    } else {
        available.join(" ")
    };
    if uid == 0 {
        format!(
            "cgroup v2 controller '{}' is not available at {} (cgroup.controllers lists: {list}); \
             it is disabled or bound to a cgroup v1 hierarchy: boot with \
             systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1={}) to use it",
            w.v2,
            top.display(),
            w.v2
        )
    } else {
        format!(
            "cgroup v2 controller '{}' is not delegated to user {uid} ({}/cgroup.controllers \
             lists: {list}): enable it with `systemctl edit user@{uid}.service` \
             (Delegate=cpu cpuset io memory pids) or run as root",
            w.v2,
            top.display()
        )
    }
}

/// Why a controller could not be enabled for a group's children.
#[derive(Debug)]
pub(crate) enum EnableError {
    /// The group has processes of its own ("no internal processes" rule); the reason says so.
    Busy(String),
    /// Any other refusal, with the reason.
    Other(String),
}

impl EnableError {
    /// The reason, whatever the kind.
    pub(crate) fn reason(self) -> String {
        match self {
            EnableError::Busy(s) | EnableError::Other(s) => s,
        }
    }
}

/// Enables controller `c` in `dir`'s cgroup.subtree_control.
pub(crate) fn enable_v2(dir: &Path, c: &str, uid: u32) -> Result<(), EnableError> {
    let file = dir.join("cgroup.subtree_control");
    let now = std::fs::read_to_string(&file).unwrap_or_default();
    if now.split_whitespace().any(|x| x == c) {
        return Ok(());
    }
    match super::fsops::write_raw(&file, &format!("+{c}")) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(EnableError::Busy(format!(
            "cannot enable cgroup v2 controller '{c}' for the children of {}: it has processes \
             of its own, and the kernel's \"no internal processes\" rule forbids that; start rcl \
             in its own scope (`systemd-run --user --scope rcl ...`) so that {} has none",
            dir.display(),
            dir.display()
        ))),
        Err(e) if super::fsops::is_permission(&e) || !writable(&file) => {
            Err(EnableError::Other(format!(
                "cgroup v2 controller '{c}' is not delegated to user {uid}: {} is not writable \
             ({e}); enable it with `systemctl edit user@{uid}.service` \
             (Delegate=cpu cpuset io memory pids) or run as root",
                file.display()
            )))
        }
        Err(e) => Err(EnableError::Other(format!(
            "cannot enable cgroup v2 controller '{c}': writing '+{c}' to {} failed: {e}",
            file.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_follows_resources() {
        assert!(requested(&Resources::default()).is_empty());
        let r = Resources {
            memory: Some(1),
            io_weight: Some(5),
            ..Default::default()
        };
        let keys: Vec<_> = requested(&r).iter().map(|w| w.key).collect();
        assert_eq!(keys, ["memory", "io_weight"]);
    }

    #[test]
    fn quota_and_weights() {
        assert_eq!(cpu_quota_us(0.2), 20_000);
        assert_eq!(cpu_quota_us(1.5), 150_000);
        assert_eq!(cpu_quota_us(0.001), 1000);
        assert_eq!(scale_weight(1, 10, 1000), 10);
        assert_eq!(scale_weight(10000, 10, 1000), 1000);
        assert_eq!(scale_weight(5000, 10, 1000), 504);
        assert_eq!(scale_weight(10000, 1, 1000), 1000);
        assert_eq!(scale_weight(0, 1, 1000), 1);
    }

    #[test]
    fn v2_file_formats() {
        // Only the values and file names: a plain directory stands in for a cgroup, since real v2
        // controllers are missing on hybrid hosts. The real writes are tested in tests/.
        let d = tempfile::tempdir().unwrap();
        for f in [
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "pids.max",
            "io.weight",
        ] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        std::fs::write(d.path().join("cpuset.cpus"), "").unwrap();
        let r = Resources {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(20),
            cpuset: Some("0".into()),
            io_weight: Some(300),
        };
        for w in requested(&r) {
            assert_eq!(apply_v2(w, d.path(), &r).unwrap(), None);
        }
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("pids.max"), "20");
        assert_eq!(read("cpuset.cpus"), "0");
        assert_eq!(read("io.weight"), "default 300");
        std::fs::remove_file(d.path().join("io.weight")).unwrap();
        let io = requested(&r)
            .into_iter()
            .find(|w| w.key == "io_weight")
            .unwrap();
        let why = apply_v2(io, d.path(), &r).unwrap().unwrap();
        assert!(why.contains("io.weight"), "{why}");
    }
}
