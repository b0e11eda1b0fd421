//! `rcl run` with resource limits: a fork bomb stopped by `pids`, a memory hog OOM-killed,
//! the CPU quota in place; rootless on a host without delegation warns in one line each.

mod run_common;

use run_common::{As, Env};

/// Whether the host's v1 hierarchy (or v2 tree) for `controller` exists.
fn has_controller(controller: &str) -> bool {
    std::path::Path::new("/sys/fs/cgroup")
        .join(controller)
        .is_dir()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == controller))
}

#[test]
fn fork_bomb_stopped_by_pids() {
    need!(As::Root);
    if !has_controller("pids") {
        testkit::skip!("no pids controller on this host");
    }
    let env = Env::new(As::Root, "forkbomb");
    let spec = env.spec(
        "(for i in $(seq 60); do sleep 5 & echo started; done) >/tmp/ok 2>/tmp/err; \
         count() { n=0; while read -r l; do n=$((n+1)); done < $1; echo $n; }; \
         count /tmp/err; count /tmp/ok; set -- /proc/[0-9]*; echo $#",
        "[resources]\npids = 20\n",
    );
    let out = env.run(&spec);
    out.assert_ok();
    let mut nums = out.stdout.lines().map(|l| l.trim().parse::<u32>().unwrap());
    let (failed, started, running) = (
        nums.next().unwrap(),
        nums.next().unwrap(),
        nums.next().unwrap(),
    );
    assert!(failed >= 1, "a fork should fail: {out:#?}");
    assert!(started < 20, "at most 20 tasks: {out:#?}");
    assert!(running <= 20, "at most 20 tasks: {out:#?}");
    env.assert_clean();
}

#[test]
fn memory_hog_oom_killed() {
    need!(As::Root);
    if !has_controller("memory") {
        testkit::skip!("no memory controller on this host");
    }
    let env = Env::new(As::Root, "oom");
    // The shell holds 200 MB in a variable: the OOM killer ends it (SIGKILL -> 137).
    let spec = env.spec(
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
        "[resources]\nmemory = \"32M\"\n",
    );
    let out = env.run(&spec);
    assert_eq!(out.code(), Some(137), "{out:#?}");
    assert!(!out.stdout.contains("survived"), "{out:#?}");
    env.assert_clean();
}

#[test]
fn cpu_quota_in_place() {
    need!(As::Root);
    if !has_controller("cpu") {
        testkit::skip!("no cpu controller on this host");
    }
    let env = Env::new(As::Root, "cpuq");
    let spec = env.spec("echo ready; sleep 100", "[resources]\ncpus = 0.5\n");
    let run = env.spawn_until(&["run", spec.to_str().unwrap()], "ready");
    let id = format!("{}-{}", env.name, run.child.id());
    let v1 = std::path::PathBuf::from("/sys/fs/cgroup/cpu/rcl").join(&id);
    let (quota, procs) = if v1.is_dir() {
        (
            std::fs::read_to_string(v1.join("cpu.cfs_quota_us")).unwrap(),
            std::fs::read_to_string(v1.join("cgroup.procs")).unwrap(),
        )
    } else {
        let v2 = std::path::PathBuf::from("/sys/fs/cgroup/rcl").join(&id);
        (
            std::fs::read_to_string(v2.join("cpu.max")).unwrap(),
            std::fs::read_to_string(v2.join("cgroup.procs")).unwrap(),
        )
    };
    run.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _, err) = run.wait();
    assert!(
        quota.trim() == "50000" || quota.starts_with("50000 100000"),
        "quota {quota:?}"
    );
    assert!(
        procs.lines().count() >= 2,
        "init and command in the group: {procs:?}"
    );
    assert_eq!(code, Some(143), "{err}");
    env.assert_clean();
}

#[test]
fn rootless_limits_warn_or_fail() {
    need!(As::User);
    let env = Env::new(As::User, "limwarn");
    let spec = env.spec("echo ran", "[resources]\npids = 20\n");
    let out = env.run(&spec);
    out.assert_ok();
    assert_eq!(out.stdout, "ran\n");
    // On this hybrid host v1 cannot be delegated: one warning line saying why and how to fix.
    let warnings: Vec<&str> = out.stderr.lines().collect();
    if warnings.is_empty() {
        testkit::skip!("limits were applied rootless here (delegated cgroup v2)");
    }
    assert_eq!(warnings.len(), 1, "{out:#?}");
    assert!(
        warnings[0].starts_with("rcl: warning: limit 'pids' not applied: "),
        "{out:#?}"
    );
    let out = env.rcl(&["run", "--require-limits", spec.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.starts_with("rcl: error: "), "{out:#?}");
    assert_eq!(out.stdout, "", "nothing ran: {out:#?}");
    env.assert_clean();
}
