//! Where the host's cgroup hierarchies are mounted and where this process sits in them, read
//! from /proc/self/mountinfo and /proc/self/cgroup. Pure parsing and path logic: nothing here
//! writes to a cgroup.

use std::path::{Path, PathBuf};

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Only the cgroup v2 (unified) hierarchy, usually at /sys/fs/cgroup.
    V2,
    /// Only cgroup v1 hierarchies.
    V1,
    /// v1 controller hierarchies plus a cgroup2 tree (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// No cgroup filesystem is mounted.
    None,
}

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Controllers bound to it ("cpu", "cpuacct", ...); named hierarchies appear as "name=X".
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// This process's cgroup in it, as a directory under `mount`.
    pub current: PathBuf,
}

impl V1Hierarchy {
    /// True when `controller` is bound to this hierarchy.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The mounted cgroup v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unified {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// This process's cgroup in it, as a directory under `mount`.
    pub current: PathBuf,
}

/// The host's cgroup layout as seen by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupHost {
    pub(crate) layout: Layout,
    pub(crate) unified: Option<Unified>,
    pub(crate) v1: Vec<V1Hierarchy>,
}

/// One cgroup or cgroup2 line of /proc/self/mountinfo.
#[derive(Debug)]
struct CgMount {
    root: String,
    mount: PathBuf,
    v2: bool,
    super_opts: Vec<String>,
}

impl CgroupHost {
    /// Reads this process's view of the host's cgroups from /proc/self/mountinfo and
    /// /proc/self/cgroup.
    pub fn detect() -> anyhow::Result<CgroupHost> {
        use anyhow::Context;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("reading /proc/self/mountinfo")?;
        let cgroup =
            std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        Ok(CgroupHost::from_proc_text(&mountinfo, &cgroup))
    }

    /// Builds the layout from the text of a mountinfo file and a /proc/PID/cgroup file. Lines
    /// that are not cgroup mounts are ignored, so a caller may pass a filtered copy (for
    /// instance only the cgroup2 lines, to treat a hybrid host as pure v2).
    pub fn from_proc_text(mountinfo: &str, proc_cgroup: &str) -> CgroupHost {
        let mounts: Vec<CgMount> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
        let mut unified = None;
        let mut v1 = Vec::new();
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                if unified.is_some() {
                    continue;
                }
                if let Some((m, cur)) = find_mount(&mounts, path, |m| m.v2) {
                    unified = Some(Unified {
                        mount: m.mount.clone(),
                        current: cur,
                    });
                }
                continue;
            }
            let controllers: Vec<String> = ctrls.split(',').map(str::to_string).collect();
            if controllers.iter().all(|c| c.is_empty()) {
                continue;
            }
            let found = find_mount(&mounts, path, |m| {
                !m.v2 && controllers.iter().all(|c| m.super_opts.contains(c))
            });
            if let Some((m, cur)) = found {
                v1.push(V1Hierarchy {
                    controllers,
                    mount: m.mount.clone(),
                    current: cur,
                });
            }
        }
        let real_v1 = v1
            .iter()
            .any(|h| h.controllers.iter().any(|c| !c.starts_with("name=")));
        let layout = match (real_v1, unified.is_some()) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::V2,
            (false, false) => Layout::None,
        };
        CgroupHost {
            layout,
            unified,
            v1,
        }
    }

    /// The layout: v2, v1, hybrid or none.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The cgroup2 hierarchy, when one is mounted.
    pub fn unified(&self) -> Option<&Unified> {
        self.unified.as_ref()
    }

    /// The mounted v1 hierarchies, in /proc/self/cgroup order.
    pub fn v1(&self) -> &[V1Hierarchy] {
        &self.v1
    }

    /// The v1 hierarchy that has `controller`, if any.
    pub fn v1_with(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1.iter().find(|h| h.has(controller))
    }
}

/// Finds the first mount accepted by `pick` whose root contains `path`, and returns it with
/// the directory of `path` under its mountpoint.
fn find_mount<'a>(
    mounts: &'a [CgMount],
    path: &str,
    pick: impl Fn(&CgMount) -> bool,
) -> Option<(&'a CgMount, PathBuf)> {
    mounts
        .iter()
        .filter(|m| pick(m))
        .find_map(|m| Some((m, m.mount.join(strip_root(&m.root, path)?))))
}

/// `path` relative to the mount's root, or `None` when the path is outside it.
fn strip_root<'p>(root: &str, path: &'p str) -> Option<&'p str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let rel = rest.trim_start_matches('/');
    // A path outside our cgroup namespace shows as "/../..": never walk up out of the mount.
    if Path::new(rel)
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(rel)
}

fn parse_mountinfo_line(line: &str) -> Option<CgMount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_opts = right.next().unwrap_or("");
    let v2 = match fstype {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    Some(CgMount {
        root: fsimpl::mountinfo::unescape(left.get(3)?),
        mount: PathBuf::from(fsimpl::mountinfo::unescape(left.get(4)?)),
        v2,
        super_opts: super_opts.split(',').map(str::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
23 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/bf5e
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_host() {
        let h = CgroupHost::from_proc_text(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(h.layout(), Layout::Hybrid);
        let u = h.unified().unwrap();
        assert_eq!(u.mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(u.current, Path::new("/sys/fs/cgroup/unified"));
        let mem = h.v1_with("memory").unwrap();
        assert_eq!(mem.mount, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            mem.current,
            Path::new("/sys/fs/cgroup/memory/process_api/bf5e")
        );
        assert_eq!(h.v1().len(), 5);
        assert!(h.v1_with("name=systemd").is_some());
        assert!(h.v1_with("blkio").is_none());
    }

    #[test]
    fn pure_v2_with_user_cgroup() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cg = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n";
        let h = CgroupHost::from_proc_text(mi, cg);
        assert_eq!(h.layout(), Layout::V2);
        assert_eq!(
            h.unified().unwrap().current,
            Path::new(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"
            )
        );
        assert!(h.v1().is_empty());
    }

    #[test]
    fn v1_comounted_and_bind_root() {
        // cpu and cpuacct share one hierarchy; the memory mount's root is a subdirectory
        // (as inside a container), so paths are taken relative to it.
        let mi = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let cg = "3:cpu,cpuacct:/a/b\n4:memory:/docker/abc/inner\n";
        let h = CgroupHost::from_proc_text(mi, cg);
        assert_eq!(h.layout(), Layout::V1);
        let cpu = h.v1_with("cpuacct").unwrap();
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(cpu.current, Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b"));
        assert_eq!(
            h.v1_with("memory").unwrap().current,
            Path::new("/sys/fs/cgroup/memory/inner")
        );
    }

    #[test]
    fn nothing_mounted_and_paths_outside_namespace() {
        let h = CgroupHost::from_proc_text("23 1 8:1 / / rw - ext4 /dev/sda1 rw\n", "0::/\n");
        assert_eq!(h.layout(), Layout::None);
        // A cgroup outside our cgroup namespace ("/../x") is never resolved to a directory.
        let mi = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = CgroupHost::from_proc_text(mi, "0::/../x\n");
        assert_eq!(h.layout(), Layout::None);
        assert_eq!(strip_root("/a", "/ab"), None);
        assert_eq!(strip_root("/a", "/a/b"), Some("b"));
        assert_eq!(strip_root("/", "/"), Some(""));
    }

    #[test]
    fn escaped_mountpoint() {
        let mi = "30 23 0:26 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        let h = CgroupHost::from_proc_text(mi, "0::/x\n");
        assert_eq!(h.unified().unwrap().current, Path::new("/mnt/cg two/x"));
    }
}
