//! Capabilities, user switch, no_new_privs and rlimits, checked in real child processes that
//! apply the settings and exec busybox, which reports its own /proc/self/status.

mod security_support;

use std::os::unix::fs::MetadataExt;

use rcl::security::{self, DEFAULT_CAPS};
use rcl::spec::Seccomp;
use security_support::{hex, parse_status, prep, run, sec, status, unavailable};

const DOCKER_DEFAULT: u64 = 0xa804_25fb;

fn all_caps() -> u64 {
    let last = security::last_cap().unwrap();
    (1u64 << (u32::from(last) + 1)) - 1
}

/// This test process's permitted set (a runtime can only grant what it holds).
fn held_caps() -> u64 {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    u64::from_str_radix(&parse_status(&st)["CapPrm"], 16).unwrap()
}

#[test]
fn default_set_for_root_is_dockers() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let p = prep(&sec(&[], &[], false, Seccomp::Unconfined));
    assert_eq!(p.caps(), DOCKER_DEFAULT);
    let st = status(&p, 0, 0, &[]);
    assert_eq!(st["CapEff"], "00000000a80425fb");
    assert_eq!(st["CapPrm"], "00000000a80425fb");
    assert_eq!(st["CapBnd"], "00000000a80425fb");
    assert_eq!(
        st["CapInh"],
        hex(0),
        "Docker 20.10.14+ leaves inheritable empty"
    );
    assert_eq!(st["CapAmb"], hex(0));
    assert_eq!(st["NoNewPrivs"], "0");
    assert_eq!(st["Seccomp"], "0");
}

#[test]
fn default_cap_names_match_the_mask() {
    let p = prep(&sec(&[], &[], false, Seccomp::Unconfined));
    let mut names = p.cap_names();
    let mut want: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn cap_drop_chown_removes_bit_0_and_chown_fails() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let dir = testkit::shared_tempdir();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let path = file.to_str().unwrap();

    let dropped = prep(&sec(&[], &["CAP_CHOWN"], false, Seccomp::Default));
    let st = status(&dropped, 0, 0, &[]);
    assert_eq!(st["CapEff"], hex(DOCKER_DEFAULT & !1));
    assert_eq!(st["CapBnd"], hex(DOCKER_DEFAULT & !1));
    let out = run(&dropped, 0, 0, &[], &["chown", "1234", path]);
    assert!(!out.success(), "chown without CAP_CHOWN succeeded: {out:?}");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "expected EPERM: {out:?}"
    );
    assert_eq!(std::fs::metadata(&file).map(|m| m.uid()).unwrap(), 0);

    // Control: with the default set, the same chown works.
    let default = prep(&sec(&[], &[], false, Seccomp::Default));
    run(&default, 0, 0, &[], &["chown", "1234", path]).assert_ok();
    assert_eq!(std::fs::metadata(&file).map(|m| m.uid()).unwrap(), 1234);
}

#[test]
fn cap_add_sys_admin_sets_bit_21() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let p = prep(&sec(&["CAP_SYS_ADMIN"], &[], false, Seccomp::Default));
    let st = status(&p, 0, 0, &[]);
    assert_eq!(st["CapEff"], "00000000a82425fb");
    assert_eq!(st["CapBnd"], "00000000a82425fb");
}

#[test]
fn all_in_add_and_in_drop() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let p = prep(&sec(
        &["ALL"],
        &["CAP_SYS_MODULE"],
        false,
        Seccomp::Unconfined,
    ));
    let st = status(&p, 0, 0, &[]);
    // "ALL" = every capability the kernel knows that the runtime holds (Docker, when nested).
    let want = all_caps() & held_caps() & !(1 << 16);
    assert_eq!(st["CapEff"], hex(want));
    assert_eq!(st["CapBnd"], hex(want));

    let p = prep(&sec(&["CAP_KILL"], &["ALL"], false, Seccomp::Unconfined));
    let st = status(&p, 0, 0, &[]);
    assert_eq!(st["CapEff"], hex(1 << 5));
    assert_eq!(st["CapBnd"], hex(1 << 5));

    let p = prep(&sec(&[], &["ALL"], false, Seccomp::Unconfined));
    let st = status(&p, 0, 0, &[]);
    assert_eq!(st["CapEff"], hex(0));
    assert_eq!(st["CapBnd"], hex(0));
}

#[test]
fn non_root_user_has_no_caps_but_the_bounding_set() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no test user: {why}"),
    };
    for seccomp in [Seccomp::Default, Seccomp::Unconfined] {
        let p = prep(&sec(&[], &[], false, seccomp));
        let st = status(&p, uid, gid, &[gid, 4242]);
        assert_eq!(st["CapEff"], hex(0), "{seccomp:?}");
        assert_eq!(st["CapPrm"], hex(0));
        assert_eq!(st["CapInh"], hex(0));
        assert_eq!(st["CapAmb"], hex(0));
        assert_eq!(st["CapBnd"], "00000000a80425fb");
        let ids = |k: &str| {
            st[k]
                .split_whitespace()
                .map(|s| s.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("Uid"), vec![uid; 4]);
        assert_eq!(ids("Gid"), vec![gid; 4]);
        let mut groups = ids("Groups");
        groups.sort();
        let mut want = vec![gid, 4242];
        want.sort();
        assert_eq!(groups, want);
        let want_seccomp = if seccomp == Seccomp::Default {
            "2"
        } else {
            "0"
        };
        assert_eq!(st["Seccomp"], want_seccomp);
        assert_eq!(st["NoNewPrivs"], "0");
    }
}

#[test]
fn non_root_cannot_chown_or_read_root_files() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no test user: {why}"),
    };
    let p = prep(&sec(&[], &[], false, Seccomp::Default));
    let out = run(&p, uid, gid, &[], &["cat", "/etc/shadow"]);
    assert!(
        !out.success(),
        "an unprivileged user read /etc/shadow: {out:?}"
    );
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
}

#[test]
fn no_new_privileges_is_set() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let p = prep(&sec(&[], &[], true, Seccomp::Default));
    let st = status(&p, 0, 0, &[]);
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2");
    assert_eq!(st["CapEff"], "00000000a80425fb");

    if let Ok((uid, gid)) = testkit::test_user() {
        let st = status(&p, uid, gid, &[]);
        assert_eq!(st["NoNewPrivs"], "1");
        assert_eq!(st["Seccomp"], "2");
        assert_eq!(st["CapEff"], hex(0));
    }
}

#[test]
fn invalid_capability_names_are_rejected() {
    for (add, drop, bad) in [
        (&["CAP_NOPE"][..], &[][..], "CAP_NOPE"),
        (&[][..], &["CAP_CHOWN", "CAP_FLY"][..], "CAP_FLY"),
    ] {
        let err = security::prepare(&sec(add, drop, false, Seccomp::Default)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(bad), "error does not name {bad}: {msg}");
    }
}

#[test]
fn nofile_limit_is_dockers_default() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let p = prep(&sec(&[], &[], false, Seccomp::Default));
    let out = run(&p, 0, 0, &[], &["cat", "/proc/self/limits"]);
    out.assert_ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    // Raising the hard limit needs CAP_SYS_RESOURCE (in the initial user namespace); without
    // it the current hard limit is kept.
    let hard = if held_caps() & (1 << 24) != 0 {
        1_048_576
    } else {
        let (_, cur) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        cur.min(1_048_576)
    };
    assert_eq!(f[3], "1024", "{line}");
    assert_eq!(f[4], hard.to_string(), "{line}");
}

#[test]
fn a_named_capability_the_runtime_lacks_is_an_error() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let missing = all_caps() & !held_caps();
    if missing == 0 {
        testkit::skip!("this process holds every capability: none to ask for in vain");
    }
    let name = security::cap_name(missing.trailing_zeros() as u8);
    let p = prep(&sec(&[&name], &[], false, Seccomp::Default));
    let child = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(security_support::BUSYBOX);
        cmd.arg("true");
        let p = p.clone();
        // SAFETY: apply() makes only system calls.
        unsafe {
            cmd.pre_exec(move || p.apply(0, 0, &[]).map_err(std::io::Error::from));
        }
        cmd.status()
    };
    let err = child.expect_err("the container started without a capability it asked for");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
}

#[test]
fn rootless_user_namespace_root_gets_the_set_and_capped_limits() {
    if let Some(why) = unavailable() {
        testkit::skip!("{why}");
    }
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no test user: {why}"),
    };
    let userns = testkit::run_timeout(
        testkit::as_test_user(security_support::BUSYBOX).args(["unshare", "-U", "true"]),
        std::time::Duration::from_secs(20),
    );
    if !userns.success() {
        testkit::skip!(
            "unprivileged user namespaces unavailable: {}",
            userns.stderr
        );
    }
    use std::os::unix::process::CommandExt;
    let p = prep(&sec(&[], &[], false, Seccomp::Default));
    let mut cmd = std::process::Command::new(security_support::BUSYBOX);
    cmd.args(["sh", "-c", "cat /proc/self/status /proc/self/limits"]);
    // What a rootless launcher does: an unprivileged user (with a low NOFILE hard limit)
    // creates a user namespace, maps itself to root there, then applies the settings as uid 0.
    let (uid_map, gid_map) = (format!("0 {uid} 1\n"), format!("0 {gid} 1\n"));
    // SAFETY: the hook makes only system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 4096,
            };
            // Dropping root makes the process non-dumpable, which would leave its /proc files
            // owned by root: make it dumpable again so it can write its own id maps.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
                || libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0
                || libc::unshare(libc::CLONE_NEWUSER) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (file, text) in [
                (c"/proc/self/setgroups", "deny"),
                (c"/proc/self/uid_map", uid_map.as_str()),
                (c"/proc/self/gid_map", gid_map.as_str()),
            ] {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.len()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            p.apply(0, 0, &[]).map_err(std::io::Error::from)
        });
    }
    let out = testkit::run_timeout(&mut cmd, std::time::Duration::from_secs(20));
    out.assert_ok();
    let st = parse_status(&out.stdout);
    assert_eq!(st["Uid"].split_whitespace().collect::<Vec<_>>(), ["0"; 4]);
    assert_eq!(st["CapEff"], "00000000a80425fb");
    assert_eq!(st["CapBnd"], "00000000a80425fb");
    assert_eq!(st["Seccomp"], "2");
    assert_eq!(st["NoNewPrivs"], "0");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&f[3..5], &["1024", "4096"], "hard limit not capped: {line}");
}
