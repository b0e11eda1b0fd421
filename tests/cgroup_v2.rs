//! The cgroup v2 code path on the host's real cgroup2 hierarchy, as root. The host is viewed as
//! pure v2 (only its cgroup2 mount and `0::` line are kept), so on a hybrid host this runs in
//! the controller-less tree at /sys/fs/cgroup/unified: groups, membership, freezing, cgroup.kill
//! and removal are real; limits are real only where the tree has controllers, and otherwise
//! must come back as Unapplied with the reason.

mod cgroup_common;

use cgroup_common::*;
use rcl::cgroup::{CgroupHost, Layout};
use rcl::spec::Resources;
use std::time::Duration;

/// This process's view of the host with everything but cgroup2 left out.
fn v2_only() -> Option<CgroupHost> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mi: String = mi
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let cg: String = cg
        .lines()
        .filter(|l| l.starts_with("0::"))
        .map(|l| format!("{l}\n"))
        .collect();
    let h = CgroupHost::from_proc_text(&mi, &cg);
    (h.layout() == Layout::V2).then_some(h)
}

fn controllers(dir: &std::path::Path) -> Vec<String> {
    read(dir, "cgroup.controllers")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn v2_group_tracks_freezes_and_kills() {
    if !testkit::is_root() {
        testkit::skip!("creating groups in the cgroup2 root needs root");
    }
    let Some(host) = v2_only() else {
        testkit::skip!("no cgroup2 hierarchy mounted");
    };
    let mount = host.unified().unwrap().mount.clone();
    let name = unique("v2track");
    let (cg, unapplied) = host.create(&name, &Resources::default()).unwrap();
    assert!(unapplied.is_empty());
    let mut g = CgGuard(Some(cg));
    let dir = g.cg().unified_dir().expect("no v2 group").to_path_buf();
    assert_eq!(dir, mount.join("rcl").join(&name));
    assert!(g.cg().v1_dir("memory").is_none());

    let mut p = Gated::sh("while :; do :; done");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    assert_eq!(listed(&dir, "cgroup.procs"), vec![p.pid()]);
    assert_eq!(keyed(&dir, "cgroup.events", "populated"), 1);
    assert_eq!(g.cg().pids().unwrap(), vec![p.pid()]);
    let s = g.cg().stats().unwrap();
    assert_eq!(s.pids_current, Some(1));
    assert!(s.cpu_usage_ns.is_some(), "cpu.stat is always there on v2");

    g.cg().freeze().unwrap();
    assert_eq!(keyed(&dir, "cgroup.events", "frozen"), 1);
    let u0 = g.cg().stats().unwrap().cpu_usage_ns.unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let u1 = g.cg().stats().unwrap().cpu_usage_ns.unwrap();
    assert!(u1 - u0 < 20_000_000, "frozen loop used {} ns", u1 - u0);
    g.cg().thaw().unwrap();
    assert_eq!(keyed(&dir, "cgroup.events", "frozen"), 0);

    let again = host.open(&name).unwrap();
    assert_eq!(again.unified_dir(), Some(dir.as_path()));

    g.destroy().unwrap();
    let st = p
        .wait(Duration::from_secs(5))
        .expect("loop survived cgroup.kill");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    assert!(!dir.exists());
}

#[test]
fn v2_limits_are_applied_or_explained() {
    if !testkit::is_root() {
        testkit::skip!("creating groups in the cgroup2 root needs root");
    }
    let Some(host) = v2_only() else {
        testkit::skip!("no cgroup2 hierarchy mounted");
    };
    let mount = host.unified().unwrap().mount.clone();
    let available = controllers(&mount);
    let name = unique("v2limits");
    let r = Resources {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(20),
        cpuset: Some("0".into()),
        io_weight: Some(300),
    };
    let (cg, unapplied) = host.create(&name, &r).unwrap();
    let g = CgGuard(Some(cg));
    let dir = g.cg().unified_dir().unwrap().to_path_buf();
    let refused = |key: &str| unapplied.iter().find(|u| u.key == key);
    for (key, ctrl, file, want) in [
        ("memory", "memory", "memory.max", "67108864"),
        ("cpus", "cpu", "cpu.max", "50000 100000"),
        ("pids", "pids", "pids.max", "20"),
        ("cpuset", "cpuset", "cpuset.cpus", "0"),
    ] {
        if available.iter().any(|c| c == ctrl) {
            assert!(refused(key).is_none(), "{key} refused: {unapplied:?}");
            assert_eq!(read(&dir, file), want);
        } else {
            let u = refused(key).unwrap_or_else(|| panic!("{key} neither applied nor refused"));
            assert!(
                u.reason
                    .contains(&format!("'{ctrl}' is not available at {}", mount.display()))
                    && u.reason.contains("cgroup.controllers lists"),
                "{u}"
            );
        }
    }
    if !available.iter().any(|c| c == "io") {
        assert!(refused("io_weight").unwrap().reason.contains("'io'"));
    }
    if available.is_empty() {
        eprintln!("note: this cgroup2 tree has no controllers: v2 limit files were not tested");
    }
}
