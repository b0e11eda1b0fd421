//! cgroups as root on this host's real hierarchies (v1 controllers on a hybrid or v1 host, the
//! v2 tree on a pure v2 host): limits read back from the real files, and enforced on real
//! processes (fork bomb, memory hog, busy loop).

mod cgroup_common;

use cgroup_common::*;
use rcl::cgroup::{Cgroup, CgroupHost};
use rcl::spec::Resources;
use std::path::Path;
use std::time::{Duration, Instant};

/// The group dir holding `v1` (on v1/hybrid) or the v2 group when the v2 tree has `v2`.
fn dir_for<'a>(cg: &'a Cgroup, v1: &str, v2: &str) -> Option<(&'a Path, bool)> {
    if let Some(d) = cg.v1_dir(v1) {
        return Some((d, true));
    }
    let d = cg.unified_dir()?;
    let parent = d.parent()?;
    let on = std::fs::read_to_string(parent.join("cgroup.subtree_control")).ok()?;
    on.split_whitespace().any(|c| c == v2).then_some((d, false))
}

#[test]
fn limits_are_written_to_the_real_files() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("limits");
    let r = Resources {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(20),
        cpuset: Some("0".into()),
        io_weight: Some(5000),
    };
    let (cg, unapplied) = Cgroup::create(&name, &r).unwrap();
    let g = CgGuard(Some(cg));
    let cg = g.cg();
    for u in &unapplied {
        // Hosts without an I/O weight file may refuse io_weight; nothing else may be refused.
        assert_eq!(u.key, "io_weight", "unexpected unapplied limit: {u}");
        assert!(u.reason.contains("weight"), "{u}");
    }
    let mut checked = 0;
    if let Some((d, v1)) = dir_for(cg, "memory", "memory") {
        if v1 {
            assert_eq!(read(d, "memory.limit_in_bytes"), "67108864");
            if d.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read(d, "memory.memsw.limit_in_bytes"), "67108864");
            }
        } else {
            assert_eq!(read(d, "memory.max"), "67108864");
            if d.join("memory.swap.max").exists() {
                assert_eq!(read(d, "memory.swap.max"), "0");
            }
        }
        checked += 1;
    }
    if let Some((d, v1)) = dir_for(cg, "cpu", "cpu") {
        if v1 {
            assert_eq!(read(d, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(d, "cpu.cfs_period_us"), "100000");
        } else {
            assert_eq!(read(d, "cpu.max"), "50000 100000");
        }
        checked += 1;
    }
    if let Some((d, _)) = dir_for(cg, "pids", "pids") {
        assert_eq!(read(d, "pids.max"), "20");
        checked += 1;
    }
    if let Some((d, v1)) = dir_for(cg, "cpuset", "cpuset") {
        assert_eq!(read(d, "cpuset.cpus"), "0");
        if v1 {
            // Copied from the parent, or no task could join.
            assert!(!read(d, "cpuset.mems").is_empty());
        }
        checked += 1;
    }
    if unapplied.is_empty() {
        let (d, v1) = dir_for(cg, "blkio", "io").expect("io_weight applied but no group");
        if v1 && d.join("blkio.bfq.weight").exists() {
            // 5000 of 1..=10000 scaled onto BFQ's 1..=1000.
            assert_eq!(read(d, "blkio.bfq.weight"), "500");
        } else if v1 {
            assert_eq!(read(d, "blkio.weight"), "504");
        } else if d.join("io.weight").exists() {
            assert!(read(d, "io.weight").contains("5000"));
        } else {
            assert_eq!(read(d, "io.bfq.weight"), "500");
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} limits could be read back");
}

#[test]
fn a_process_joins_and_destroy_leaves_nothing() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("join");
    let (cg, unapplied) = Cgroup::create(&name, &Resources::default()).unwrap();
    assert!(unapplied.is_empty(), "{unapplied:?}");
    let mut g = CgGuard(Some(cg));
    let mut p = Gated::sh("exec sleep 30");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    let pid = p.pid();
    let dirs: Vec<_> = g.cg().dirs().iter().map(|d| d.to_path_buf()).collect();
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert!(
            listed(d, "cgroup.procs").contains(&pid),
            "{pid} not in {}",
            d.display()
        );
        if d.join("tasks").exists() {
            assert!(listed(d, "tasks").contains(&pid));
        }
    }
    assert_eq!(g.cg().pids().unwrap(), vec![pid]);
    assert_eq!(g.cg().stats().unwrap().pids_current, Some(1));

    // Another process (rcl stop NAME) finds the same groups by name.
    let again = Cgroup::open(&name).unwrap();
    let mut found: Vec<_> = again.dirs().iter().map(|d| d.to_path_buf()).collect();
    let mut want = dirs.clone();
    found.sort();
    want.sort();
    assert_eq!(found, want);

    g.destroy().unwrap();
    let st = p
        .wait(Duration::from_secs(5))
        .expect("sleep survived destroy");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    let e = Cgroup::open(&name).unwrap_err().to_string();
    assert!(e.contains(&name) && e.contains("no cgroup"), "{e}");
    // Destroying what is already gone is fine.
    let host = CgroupHost::detect().unwrap();
    let (cg, _) = host.create(&name, &Resources::default()).unwrap();
    for d in cg.dirs() {
        std::fs::remove_dir(d).unwrap();
    }
    cg.destroy().unwrap();
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("forkbomb");
    let r = Resources {
        pids: Some(20),
        ..Default::default()
    };
    let (cg, unapplied) = Cgroup::create(&name, &r).unwrap();
    assert!(unapplied.is_empty(), "{unapplied:?}");
    let mut g = CgGuard(Some(cg));
    let Some((dir, _)) = dir_for(g.cg(), "pids", "pids") else {
        testkit::skip!("no pids controller in this host's cgroups");
    };
    let dir = dir.to_path_buf();
    // Starts 100 sleepers; the shell itself counts as one task.
    let mut p =
        Gated::sh("i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done; echo all-started");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    let st = p.wait(Duration::from_secs(20));
    let running = g.cg().pids().unwrap();
    assert!(
        !p.stdout().contains("all-started"),
        "100 forks succeeded under pids=20; stderr: {}",
        p.stderr()
    );
    assert!(
        (15..=20).contains(&running.len()),
        "{} tasks alive (status {st:?}, stderr {})",
        running.len(),
        p.stderr()
    );
    assert!(keyed(&dir, "pids.events", "max") >= 1);
    assert!(read(&dir, "pids.current").parse::<usize>().unwrap() <= 20);
    let err = p.stderr().to_lowercase();
    assert!(err.contains("fork") || err.contains("resource"), "{err}");
    g.destroy().unwrap();
    for pid in running {
        assert!(dead(pid), "pid {pid} survived destroy");
    }
}

#[test]
fn memory_hog_is_oom_killed() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("oom");
    let r = Resources {
        memory: Some(64 << 20),
        ..Default::default()
    };
    let (cg, unapplied) = Cgroup::create(&name, &r).unwrap();
    assert!(unapplied.is_empty(), "{unapplied:?}");
    let g = CgGuard(Some(cg));
    let Some((dir, v1)) = dir_for(g.cg(), "memory", "memory") else {
        testkit::skip!("no memory controller in this host's cgroups");
    };
    let dir = dir.to_path_buf();
    // tail keeps the whole newline-free stream in memory: 200 MiB against a 64 MiB limit.
    let mut p = Gated::sh("head -c 200M /dev/zero | tail; echo tail-status=$?");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    p.wait(Duration::from_secs(60))
        .expect("memory hog still running after 60 s");
    let out = p.stdout();
    // 128 + SIGKILL
    assert!(
        out.contains("tail-status=137"),
        "stdout {out:?} stderr {}",
        p.stderr()
    );
    let kills = if v1 {
        keyed(&dir, "memory.oom_control", "oom_kill")
    } else {
        keyed(&dir, "memory.events", "oom_kill")
    };
    assert!(kills >= 1, "no OOM kill recorded in {}", dir.display());
    let s = g.cg().stats().unwrap();
    let peak = s.memory_peak.expect("memory peak");
    assert!(peak <= 64 << 20, "peak {peak} over the limit");
    assert!(peak >= 32 << 20, "peak {peak}: the hog did not allocate");
}

#[test]
fn cpu_quota_holds_a_busy_loop_near_its_share() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("cpu");
    let r = Resources {
        cpus: Some(0.2),
        ..Default::default()
    };
    let (cg, unapplied) = Cgroup::create(&name, &r).unwrap();
    assert!(unapplied.is_empty(), "{unapplied:?}");
    let g = CgGuard(Some(cg));
    let mut p = Gated::sh("while :; do :; done");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    std::thread::sleep(Duration::from_millis(200));
    let u0 = g.cg().stats().unwrap().cpu_usage_ns.expect("cpu usage");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let u1 = g.cg().stats().unwrap().cpu_usage_ns.unwrap();
    let share = (u1 - u0) as f64 / t0.elapsed().as_nanos() as f64;
    eprintln!("busy loop under cpus=0.2 used {share:.3} CPUs");
    // Unthrottled it would take ~1.0 of a CPU; the quota allows 0.2. Generous bounds: this is
    // a functional check, not a timing benchmark (other builds share these 2 CPUs).
    assert!(
        (0.02..=0.35).contains(&share),
        "busy loop used {share:.3} CPUs under a 0.2 quota"
    );
    if let Some((d, true)) = dir_for(g.cg(), "cpu", "cpu") {
        assert!(keyed(d, "cpu.stat", "nr_throttled") >= 1);
    }
    assert!(p.wait(Duration::ZERO).is_none());
}

#[test]
fn freeze_stops_and_thaw_resumes() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("freeze");
    let (cg, _) = Cgroup::create(&name, &Resources::default()).unwrap();
    let g = CgGuard(Some(cg));
    let mut p = Gated::sh("while :; do :; done");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    std::thread::sleep(Duration::from_millis(100));
    g.cg().freeze().unwrap();
    let u0 = g.cg().stats().unwrap().cpu_usage_ns.unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let u1 = g.cg().stats().unwrap().cpu_usage_ns.unwrap();
    assert!(u1 - u0 < 20_000_000, "frozen loop used {} ns", u1 - u0);
    g.cg().thaw().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let u2 = g.cg().stats().unwrap().cpu_usage_ns.unwrap();
    assert!(u2 - u1 > 20_000_000, "thawed loop used only {} ns", u2 - u1);
    // Killing works on a frozen group too.
    g.cg().freeze().unwrap();
    g.cg().kill_all().unwrap();
    assert!(p.wait(Duration::from_secs(5)).is_some());
}

#[test]
fn block_io_is_counted() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("io");
    let (cg, _) = Cgroup::create(&name, &Resources::default()).unwrap();
    let g = CgGuard(Some(cg));
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = tmp.path().join("out");
    let mut p = Gated::sh(&format!(
        "dd if=/dev/zero of={} bs=1M count=8 oflag=direct 2>&1",
        file.display()
    ));
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    let st = p.wait(Duration::from_secs(30)).expect("dd hung");
    if !st.success() {
        testkit::skip!("direct I/O not possible here: {}", p.stdout());
    }
    let s = g.cg().stats().unwrap();
    let w = s.io_write_bytes.expect("no block I/O statistics");
    if w == 0 && host_counts_no_block_io() {
        testkit::skip!(
            "this host's block devices are not accounted to cgroups (the root blkio group \
             counts 0 bytes too), so I/O bytes cannot be checked"
        );
    }
    assert!(w >= 8 << 20, "{w} bytes written counted, 8 MiB expected");
}

#[test]
fn bad_input_fails_cleanly_and_names_the_path() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    for bad in ["..", "a/b", ""] {
        let e = Cgroup::create(bad, &Resources::default()).unwrap_err();
        assert!(format!("{e:#}").contains("invalid container name"), "{e:#}");
    }

    // A cpuset the kernel refuses: the error names the file, and nothing is left behind.
    let name = unique("badcpuset");
    let r = Resources {
        cpuset: Some("4000-4001".into()),
        ..Default::default()
    };
    let host = CgroupHost::detect().unwrap();
    match Cgroup::create(&name, &r) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("cpuset.cpus") && msg.contains(&name), "{msg}");
        }
        Ok((cg, unapplied)) => {
            let _g = CgGuard(Some(cg));
            assert!(!unapplied.is_empty(), "an impossible cpuset was accepted");
        }
    }
    let e = host.open(&name).unwrap_err();
    assert!(format!("{e:#}").contains("no cgroup"), "{e:#}");

    // The same name twice while the first has a live process: refused, naming the group.
    let name = unique("twice");
    let (cg, _) = Cgroup::create(&name, &Resources::default()).unwrap();
    let g = CgGuard(Some(cg));
    let mut p = Gated::sh("exec sleep 30");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    let e = format!(
        "{:#}",
        Cgroup::create(&name, &Resources::default()).unwrap_err()
    );
    assert!(e.contains("already running") && e.contains(&name), "{e}");
    // ...and the first group is untouched.
    assert_eq!(g.cg().pids().unwrap(), vec![p.pid()]);
}

/// True when even the root blkio group has counted no I/O at all (some virtual disks bypass
/// cgroup accounting).
fn host_counts_no_block_io() -> bool {
    let Some(h) = CgroupHost::detect().ok() else {
        return true;
    };
    let Some(b) = h.v1_with("blkio") else {
        return false;
    };
    let f = b.mount.join("blkio.throttle.io_service_bytes_recursive");
    std::fs::read_to_string(f)
        .map(|t| {
            t.lines()
                .all(|l| l.starts_with("Total 0") || l.ends_with(" 0"))
        })
        .unwrap_or(true)
}

#[test]
fn a_stale_group_from_a_crash_is_made_afresh() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("stale");
    let r = Resources {
        pids: Some(20),
        ..Default::default()
    };
    // A run that died without destroying its group.
    let (cg, _) = Cgroup::create(&name, &r).unwrap();
    drop(cg);
    let (cg, unapplied) = Cgroup::create(&name, &Resources::default()).unwrap();
    assert!(unapplied.is_empty());
    let g = CgGuard(Some(cg));
    if let Some((d, _)) = dir_for(g.cg(), "pids", "pids") {
        assert_eq!(read(d, "pids.max"), "max", "the old limit survived");
    }
}

/// This process's view of the host with the cgroup2 tree left out (a pure v1 host).
fn v1_only() -> Option<CgroupHost> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mi: String = mi
        .lines()
        .filter(|l| l.contains(" - cgroup "))
        .map(|l| format!("{l}\n"))
        .collect();
    let cg: String = cg
        .lines()
        .filter(|l| !l.starts_with("0::"))
        .map(|l| format!("{l}\n"))
        .collect();
    let h = CgroupHost::from_proc_text(&mi, &cg);
    (h.layout() == rcl::cgroup::Layout::V1).then_some(h)
}

#[test]
fn v1_only_freezes_and_kills_a_forking_group_without_cgroup_kill() {
    if let Some(why) = root_unavailable() {
        testkit::skip!("{why}");
    }
    let Some(host) = v1_only() else {
        testkit::skip!("no cgroup v1 hierarchies here");
    };
    if host.v1_with("freezer").is_none() {
        testkit::skip!("no v1 freezer hierarchy");
    }
    let name = unique("v1kill");
    let r = Resources {
        pids: Some(50),
        ..Default::default()
    };
    let (cg, unapplied) = host.create(&name, &r).unwrap();
    assert!(unapplied.is_empty(), "{unapplied:?}");
    assert!(cg.unified_dir().is_none());
    let mut g = CgGuard(Some(cg));
    // Keeps forking short-lived children, so a kill-by-list alone would race with it.
    let mut p = Gated::sh("while :; do sleep 0.05 & sleep 0.01; done");
    g.cg().add_pid(p.pid()).unwrap();
    p.release();
    std::thread::sleep(Duration::from_millis(300));
    g.cg().freeze().unwrap();
    let freezer = g.cg().v1_dir("freezer").unwrap().to_path_buf();
    assert_eq!(read(&freezer, "freezer.state"), "FROZEN");
    let frozen = g.cg().pids().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(g.cg().pids().unwrap(), frozen, "a frozen group changed");
    g.cg().thaw().unwrap();
    assert_eq!(read(&freezer, "freezer.state"), "THAWED");
    let dirs: Vec<_> = g.cg().dirs().iter().map(|d| d.to_path_buf()).collect();
    g.destroy().unwrap();
    assert!(
        p.wait(Duration::from_secs(5)).is_some(),
        "the loop survived"
    );
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
