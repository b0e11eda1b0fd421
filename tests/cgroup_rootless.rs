//! Rootless cgroups, run for real as the unprivileged test user: this test binary re-executes
//! itself as that user, running only [`helper_as_test_user`], which prints what it saw.

mod cgroup_common;

use cgroup_common::*;
use rcl::cgroup::{Cgroup, CgroupHost, Layout};
use rcl::spec::Resources;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Run by the tests below as the test user (ignored in normal runs). Reads RCL_CG_MODE
/// ("detect" or "v2only"), RCL_CG_LIMITS ("all", "pids" or "none") and RCL_CG_NAME.
#[test]
#[ignore = "helper: run as the unprivileged test user by the rootless tests"]
fn helper_as_test_user() {
    let mode = std::env::var("RCL_CG_MODE").unwrap_or_default();
    let name = std::env::var("RCL_CG_NAME").unwrap();
    let host = match mode.as_str() {
        "v2only" => {
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let keep = |t: &str, f: &dyn Fn(&str) -> bool| -> String {
                t.lines()
                    .filter(|l| f(l))
                    .map(|l| format!("{l}\n"))
                    .collect()
            };
            CgroupHost::from_proc_text(
                &keep(&mi, &|l| l.contains(" - cgroup2 ")),
                &keep(&cg, &|l| l.starts_with("0::")),
            )
        }
        _ => CgroupHost::detect().unwrap(),
    };
    // libtest prints "test NAME ... " without a newline first.
    println!("\nLAYOUT {:?}", host.layout());
    let r = match std::env::var("RCL_CG_LIMITS").as_deref() {
        Ok("all") => Resources {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(20),
            cpuset: Some("0".into()),
            io_weight: Some(300),
        },
        Ok("pids") => Resources {
            pids: Some(10),
            ..Default::default()
        },
        _ => Resources::default(),
    };
    let (cg, unapplied) = match host.create(&name, &r) {
        Ok(x) => x,
        Err(e) => {
            println!("CREATE-ERR {e:#}");
            return;
        }
    };
    for u in &unapplied {
        println!("UNAPPLIED {}\t{}", u.key, u.reason);
    }
    let dirs: Vec<String> = cg.dirs().iter().map(|d| d.display().to_string()).collect();
    println!("DIRS {}", dirs.join(" "));
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    match cg.add_pid(child.id() as i32) {
        Ok(()) => println!("ADDED {:?}", cg.pids().unwrap()),
        Err(e) => println!("ADD-ERR {e:#}"),
    }
    if !cg.is_empty() {
        match host.open(&name) {
            Ok(again) => println!("OPEN {}", again.dirs().len()),
            Err(e) => println!("OPEN-ERR {e:#}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    match cg.destroy() {
        Ok(()) => println!("DESTROYED"),
        Err(e) => println!("DESTROY-ERR {e:#}"),
    }
}

/// What the helper printed, run as the test user.
struct Seen {
    out: String,
    uid: u32,
}

impl Seen {
    fn lines(&self, tag: &str) -> Vec<&str> {
        self.out
            .lines()
            .filter_map(|l| l.strip_prefix(tag).map(str::trim))
            .collect()
    }

    fn unapplied(&self) -> Vec<(&str, &str)> {
        self.lines("UNAPPLIED ")
            .into_iter()
            .filter_map(|l| l.split_once('\t'))
            .collect()
    }
}

/// Runs the helper as the test user; `cgroup_dir` (as root, before it runs) is where its
/// process is put first.
fn run_helper(mode: &str, limits: &str, name: &str, cgroup_dir: Option<&Path>) -> Seen {
    let (uid, _) = testkit::test_user().expect("test user");
    let shared = testkit::shared_tempdir();
    let bin = user_copy_of_self(shared.path());
    let mut cmd = testkit::as_test_user("sh");
    cmd.arg("-c")
        .arg("read _ && exec \"$0\" \"$@\"")
        .arg(&bin)
        .args([
            "--ignored",
            "--exact",
            "helper_as_test_user",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RCL_CG_MODE", mode)
        .env("RCL_CG_LIMITS", limits)
        .env("RCL_CG_NAME", name);
    let mut p = Gated::spawn(cmd);
    if let Some(d) = cgroup_dir {
        std::fs::write(d.join("cgroup.procs"), p.pid().to_string()).unwrap();
    }
    p.release();
    let st = p.wait(Duration::from_secs(60));
    let out = p.stdout();
    assert!(
        st.is_some_and(|s| s.success()),
        "helper failed ({st:?}): {out}\n{}",
        p.stderr()
    );
    Seen { out, uid }
}

fn rootless_unavailable() -> Option<String> {
    if !testkit::is_root() {
        return Some("needs root to switch to the test user".into());
    }
    testkit::test_user().err()
}

#[test]
fn rootless_limits_on_this_host_come_back_with_reasons() {
    if let Some(why) = rootless_unavailable() {
        testkit::skip!("{why}");
    }
    let layout = CgroupHost::detect().unwrap().layout();
    let name = unique("rootless-all");
    let seen = run_helper("detect", "all", &name, None);
    let un = seen.unapplied();
    let mut keys: Vec<&str> = un.iter().map(|(k, _)| *k).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["cpus", "cpuset", "io_weight", "memory", "pids"],
        "{}",
        seen.out
    );
    for (key, reason) in &un {
        assert!(
            reason.contains(&format!("user {}", seen.uid)),
            "{key}: {reason}"
        );
        assert!(reason.contains("root"), "{key}: {reason}");
        if matches!(layout, Layout::V1 | Layout::Hybrid) {
            assert!(
                reason.contains("is not writable by user")
                    && reason.contains("cgroup v1 cannot be delegated"),
                "{key}: {reason}"
            );
        }
    }
    // Nothing was made, joining and destroying are quiet no-ops.
    assert_eq!(seen.lines("DIRS"), [""], "{}", seen.out);
    assert_eq!(seen.lines("ADDED"), ["[]"], "{}", seen.out);
    assert_eq!(seen.lines("DESTROYED").len(), 1, "{}", seen.out);
    assert!(Cgroup::open(&name).is_err());
}

#[test]
fn rootless_without_limits_is_silent() {
    if let Some(why) = rootless_unavailable() {
        testkit::skip!("{why}");
    }
    let name = unique("rootless-none");
    let seen = run_helper("detect", "none", &name, None);
    assert!(seen.unapplied().is_empty(), "{}", seen.out);
    assert!(seen.lines("CREATE-ERR").is_empty(), "{}", seen.out);
    assert_eq!(seen.lines("DESTROYED").len(), 1, "{}", seen.out);
}

/// A delegated cgroup2 subtree, as systemd makes for `user@UID.service`: a directory owned by
/// the user (with its cgroup.procs, cgroup.subtree_control and cgroup.threads), holding a leaf
/// for the user's processes. Removed (processes killed) when dropped.
struct Delegated {
    top: PathBuf,
}

impl Delegated {
    fn new(mount: &Path, uid: u32, gid: u32) -> Delegated {
        let top = mount.join(format!("rcl-test-deleg-{}", std::process::id()));
        let d = Delegated { top };
        let session = d.top.join("session");
        std::fs::create_dir_all(&session).unwrap();
        for dir in [&d.top, &session] {
            for f in [
                "",
                "cgroup.procs",
                "cgroup.subtree_control",
                "cgroup.threads",
            ] {
                std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).unwrap();
            }
        }
        d
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut stack = vec![self.top.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        let _ = std::fs::write(self.top.join("cgroup.kill"), "1");
        std::thread::sleep(Duration::from_millis(50));
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn rootless_in_a_delegated_v2_subtree() {
    if let Some(why) = rootless_unavailable() {
        testkit::skip!("{why}");
    }
    let Some(u) = CgroupHost::detect().unwrap().unified().cloned() else {
        testkit::skip!("no cgroup2 hierarchy to delegate from");
    };
    let (uid, gid) = testkit::test_user().unwrap();
    let deleg = Delegated::new(&u.mount, uid, gid);
    let name = unique("deleg");
    let seen = run_helper("v2only", "pids", &name, Some(&deleg.top.join("session")));
    assert_eq!(seen.lines("LAYOUT"), ["V2"], "{}", seen.out);
    // The group is made at the top of the delegated subtree, beside the user's own leaf.
    let dir = deleg.top.join("rcl").join(&name);
    assert_eq!(
        seen.lines("DIRS"),
        [dir.display().to_string()],
        "{}",
        seen.out
    );
    let added = seen.lines("ADDED");
    assert!(added.len() == 1 && added[0] != "[]", "{}", seen.out);
    assert_eq!(seen.lines("OPEN"), ["1"], "{}", seen.out);
    assert_eq!(seen.lines("DESTROYED").len(), 1, "{}", seen.out);
    assert!(!dir.exists());
    let ctrls = read(&deleg.top, "cgroup.controllers");
    if ctrls.split_whitespace().any(|c| c == "pids") {
        assert!(seen.unapplied().is_empty(), "{}", seen.out);
    } else {
        let un = seen.unapplied();
        assert_eq!(un.len(), 1, "{}", seen.out);
        let (key, reason) = un[0];
        assert_eq!(key, "pids");
        assert!(
            reason.contains(&format!("'pids' is not delegated to user {uid}"))
                && reason.contains(&deleg.top.display().to_string())
                && reason.contains("systemctl edit user@"),
            "{reason}"
        );
    }
}
