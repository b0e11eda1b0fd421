//! The `rcl-fs` program: command line, daemon life cycle, unmount paths, `mount -t fuse.rcl-fs`,
//! crash safety of copy-up, and rootless use (with kernel overlayfs as the rootless reference).

#[macro_use]
mod union_mounts;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{run_timeout, MountGuard};
use union_mounts::{server_pid, wait_gone, wait_mounted, Fixture, Imp, STEP};

fn rclfs() -> Command {
    Command::new(testkit::workspace_bin("rcl-fs"))
}

#[test]
fn help_documents_every_option() {
    let out = run_timeout(rclfs().arg("--help"), STEP);
    out.assert_ok();
    for opt in [
        "lowerdir=",
        "upperdir=",
        "workdir=",
        "uidmapping=",
        "gidmapping=",
        "squash_to_root",
        "squash_to_uid=",
        "squash_to_gid=",
        "static_nlink",
        "noacl",
        "fsync=",
        "threads=",
        "passthrough=",
        "whiteout=",
        "xattr=",
        "metacopy=",
        "allow_other",
        "fsname=",
        "xattr_permissions=",
        "plugins=",
        "redirect_dir=",
        "debug",
        " ro ",
        "context=",
        "-f ",
        "mount_program",
    ] {
        assert!(out.stdout.contains(opt), "--help does not mention {opt}");
    }
    let v = run_timeout(rclfs().arg("-V"), STEP);
    assert!(v.success() && v.stdout.starts_with("rcl-fs "), "{v:?}");
}

#[test]
fn bad_command_lines_exit_2_and_mount_nothing() {
    let fx = Fixture::new(&["f a 1"]);
    let l = fx.lowers[0].display().to_string();
    let mnt = fx.mnt.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "MOUNTPOINT"),
        (
            vec!["-o".into(), format!("upperdir={l}"), mnt.clone()],
            "lowerdir",
        ),
        (
            vec![
                "-o".into(),
                format!("lowerdir={l},upperdir={l}"),
                mnt.clone(),
            ],
            "workdir",
        ),
        (
            vec![
                "-o".into(),
                format!("lowerdir={l},threads=zero"),
                mnt.clone(),
            ],
            "threads",
        ),
        (
            vec![
                "-o".into(),
                format!("lowerdir={l},whiteout=bogus"),
                mnt.clone(),
            ],
            "whiteout",
        ),
        (
            vec![
                "-o".into(),
                format!("lowerdir={l},uidmapping=1:2"),
                mnt.clone(),
            ],
            "uidmapping",
        ),
        (
            vec!["-o".into(), format!("lowerdir={l},fsync=yes"), mnt.clone()],
            "fsync",
        ),
        (vec!["--bogus".into(), mnt.clone()], "--bogus"),
        (
            vec![
                "-o".into(),
                format!("lowerdir={l}"),
                mnt.clone(),
                "x".into(),
                "y".into(),
            ],
            "operands",
        ),
    ];
    for (args, want) in cases {
        let out = run_timeout(rclfs().args(&args), STEP);
        let _guard = MountGuard::new(&fx.mnt);
        assert_eq!(out.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(want),
            "{args:?}: stderr lacks {want}: {out:?}"
        );
        assert!(!testkit::is_mounted(&fx.mnt), "{args:?} mounted something");
        assert_eq!(server_pid(&fx.mnt), None, "{args:?} left a server");
    }
}

#[test]
fn missing_mountpoint_exits_1_naming_it() {
    let fx = Fixture::new(&["f a 1"]);
    let missing = fx.dir.path().join("nowhere");
    let out = run_timeout(rclfs().arg("-o").arg(fx.lowerdir_opt()).arg(&missing), STEP);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(&*missing.to_string_lossy()), "{out:?}");
    assert!(!testkit::is_mounted(&missing));
}

#[test]
fn unusable_layers_exit_1_naming_them() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a 1"]);
    let file = fx.dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mut cases = vec![(format!("lowerdir={}", file.display()), file.clone())];
    // A workdir on another filesystem than the upper (tmpfs /dev/shm vs the temp dir's).
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    if let Some(w) = &shm {
        let other = testkit::sh(
            &format!(
                "[ $(stat -c %d {}) != $(stat -c %d {}) ]",
                w.path().display(),
                fx.upper.display()
            ),
            STEP,
        )
        .success();
        if other {
            cases.push((
                format!(
                    "{},upperdir={},workdir={}",
                    fx.lowerdir_opt(),
                    fx.upper.display(),
                    w.path().display()
                ),
                w.path().to_path_buf(),
            ));
        }
    }
    for (opts, culprit) in cases {
        let out = run_timeout(rclfs().arg("-o").arg(&opts).arg(&fx.mnt), STEP);
        let _guard = MountGuard::new(&fx.mnt);
        assert_eq!(out.code(), Some(1), "{opts}: {out:?}");
        assert!(
            out.stderr.contains(&*culprit.to_string_lossy()),
            "{opts}: {out:?}"
        );
        assert!(!testkit::is_mounted(&fx.mnt), "{opts}: mounted");
        assert_eq!(server_pid(&fx.mnt), None, "{opts}: left a server");
    }
}

#[test]
fn escaped_colon_in_lowerdir() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a 1"]);
    let odd = fx.dir.path().join("a:b,c");
    union_mounts::build(&odd, "f f odd");
    let esc = odd
        .display()
        .to_string()
        .replace(':', "\\:")
        .replace(',', "\\,");
    let opts = format!("lowerdir={esc}:{}", fx.lowers[0].display());
    let m = union_mounts::mount_at(Imp::RclFs, &opts, &fx.mnt);
    assert_eq!(m.sh("cat f a"), "odd\n1\n");
}

#[test]
fn missing_layer_exits_1_naming_it() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a 1"]);
    let missing = fx.dir.path().join("no-such-layer");
    for opts in [
        format!("{}:{}", fx.lowerdir_opt(), missing.display()),
        format!(
            "{},upperdir={},workdir={}",
            fx.lowerdir_opt(),
            missing.display(),
            fx.work.display()
        ),
    ] {
        let out = run_timeout(rclfs().arg("-o").arg(&opts).arg(&fx.mnt), STEP);
        let _guard = MountGuard::new(&fx.mnt);
        assert_eq!(out.code(), Some(1), "{opts}: {out:?}");
        assert!(
            out.stderr.contains(&*missing.to_string_lossy()),
            "{opts}: {out:?}"
        );
        assert!(!testkit::is_mounted(&fx.mnt), "{opts}: mounted");
        assert_eq!(server_pid(&fx.mnt), None, "{opts}: left a server");
    }
}

/// Starts `rcl-fs -f` as a child and waits for the mount to appear.
fn foreground(fx: &Fixture) -> (std::process::Child, MountGuard) {
    let child = rclfs()
        .arg("-f")
        .arg("-o")
        .arg(fx.rw_opts())
        .arg(&fx.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rcl-fs -f");
    let guard = MountGuard::new(&fx.mnt).with_server(child.id() as i32);
    assert!(
        wait_mounted(&fx.mnt, Duration::from_secs(10)),
        "rcl-fs -f did not mount within 10 s"
    );
    (child, guard)
}

fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unmount_ends_foreground_server(unmount: &[&str]) {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a hello"]);
    let (mut child, _guard) = foreground(&fx);
    let out = testkit::sh(&format!("cat {}/a", fx.mnt.display()), STEP);
    assert_eq!(out.stdout, "hello\n", "{out:?}");
    run_timeout(
        Command::new(unmount[0]).args(&unmount[1..]).arg(&fx.mnt),
        STEP,
    )
    .assert_ok();
    let st = wait_child(&mut child, Duration::from_secs(10)).expect("server still running");
    assert!(st.success(), "server exit status {st:?}");
    assert!(!testkit::is_mounted(&fx.mnt));
}

#[test]
fn umount_ends_server_with_exit_0() {
    unmount_ends_foreground_server(&["umount"]);
}

#[test]
fn fusermount3_u_ends_server_with_exit_0() {
    if run_timeout(Command::new("fusermount3").arg("-V"), STEP)
        .status
        .is_none_or(|s| s.code().is_none())
    {
        testkit::skip!("fusermount3 not installed (apt-get install fuse3)");
    }
    unmount_ends_foreground_server(&["fusermount3", "-u"]);
}

#[test]
fn daemon_returns_once_live_and_sigterm_unmounts() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a hello"]);
    let out = run_timeout(rclfs().arg("-o").arg(fx.rw_opts()).arg(&fx.mnt), STEP);
    let _guard = MountGuard::new(&fx.mnt);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.is_empty() && !out.stderr.contains("<output not closed>"),
        "{out:?}"
    );
    // Live the moment rcl-fs returned.
    assert!(testkit::is_mounted(&fx.mnt));
    let cat = testkit::sh(&format!("cat {}/a", fx.mnt.display()), STEP);
    assert_eq!(cat.stdout, "hello\n");
    let pid = server_pid(&fx.mnt).expect("server process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "server survived SIGTERM"
    );
    assert!(!testkit::is_mounted(&fx.mnt), "still mounted after SIGTERM");
}

#[test]
fn mount_t_fuse_rclfs() {
    need!(Imp::RclFs);
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        testkit::skip!("mount.fuse3 not installed (apt-get install fuse3)");
    }
    let fx = Fixture::new(&["f a hello"]);
    let bindir = fx.dir.path().join("bin");
    std::fs::create_dir(&bindir).unwrap();
    std::os::unix::fs::symlink(testkit::workspace_bin("rcl-fs"), bindir.join("rcl-fs")).unwrap();
    // mount(8) runs helpers with a fixed PATH, so the temp bin dir is bind-mounted over
    // /usr/local/sbin inside a private mount namespace that dies with the script.
    let script = r#"set -e
mount --make-rprivate /
mount --bind "$BIN" /usr/local/sbin
mount -t fuse.rcl-fs rcl-fs "$MNT" -o "$OPTS"
awk -v m="$MNT" '$5 == m' /proc/self/mountinfo | grep -q " - fuse" && echo mounted
cat "$MNT/a"
echo up > "$MNT/b"
umount "$MNT"
echo unmounted
"#;
    let out = run_timeout(
        Command::new("unshare")
            .args(["-m", "sh", "-c", script])
            .env("BIN", &bindir)
            .env("MNT", &fx.mnt)
            .env("OPTS", fx.rw_opts()),
        STEP,
    );
    if let Some(pid) = server_pid(&fx.mnt) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "mounted\nhello\nunmounted\n", "{out:?}");
    assert_eq!(std::fs::read_to_string(fx.up("b")).unwrap(), "up\n");
}

#[test]
fn kill_9_during_copy_up_leaves_no_partial_file() {
    need!(Imp::RclFs);
    const MIB: u64 = 256;
    let fx = Fixture::new(&[&format!("big f {MIB}")]);
    let lower = fx.lowers[0].join("f");
    let m = fx.mount(Imp::RclFs, "", "fsync=0");
    let pid = m.server.expect("server pid");
    // Start a copy-up of a large file and kill the server while it runs.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("echo x >> {}", m.p("f").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_gone(pid, Duration::from_secs(10)));
    let _ = wait_child(&mut writer, Duration::from_secs(10));
    let _ = writer.kill();
    drop(m);
    // The upper holds the whole file or nothing.
    let full = MIB << 20;
    let upf = fx.up("f");
    let finished = upf.exists();
    if finished {
        let size = std::fs::metadata(&upf).unwrap().len();
        assert!(
            size == full || size == full + 2,
            "partial copy-up in the upper: {size} bytes"
        );
        let cmp = run_timeout(
            Command::new("cmp")
                .arg("-n")
                .arg(full.to_string())
                .arg(&lower)
                .arg(&upf),
            STEP,
        );
        assert!(cmp.success(), "copied-up data differs: {cmp:?}");
    }
    let before = testkit::sh(&format!("find {} -type f | wc -l", fx.work.display()), STEP);
    eprintln!(
        "copy-up finished before the kill: {finished}; files in workdir: {}",
        before.stdout.trim()
    );
    // Remount: leftovers in the workdir are cleaned and the file reads whole.
    let m = fx.mount(Imp::RclFs, "", "");
    let left = testkit::sh(&format!("find {} -type f", fx.work.display()), STEP);
    assert_eq!(left.stdout, "", "workdir leftovers after remount");
    let size: u64 = m.sh("stat -c %s f").trim().parse().unwrap();
    assert!(size == full || size == full + 2, "size {size}");
    m.sh(&format!("cmp -n {full} f {}", lower.display()));
}

// --- rootless -----------------------------------------------------------------------------------

/// Runs `script` as the test user inside `unshare -Urm`, with `$D` = the fixture dir.
/// Runs `body` (a shell script; `$D` = the fixture dir, `$OPTS` = its rw options, `$RCLFS` =
/// the binary) as the test user inside `unshare -Urm`, after giving it the fixture and, where
/// /dev/fuse is root-only, a private FUSE device node. Kills a server left behind.
fn run_rootless(fx: &Fixture, uid: u32, gid: u32, body: &str) -> testkit::Output {
    run_rootless_with(fx, uid, gid, &["-Urm"], body)
}

/// [`run_rootless`] with other `unshare` options (e.g. `--map-auto` for /etc/subuid ranges).
fn run_rootless_with(
    fx: &Fixture,
    uid: u32,
    gid: u32,
    unshare: &[&str],
    body: &str,
) -> testkit::Output {
    // Distributions make /dev/fuse 0666; where it is root-only (no udev rule here), give the
    // test user a node of its own, bound over /dev/fuse inside its private mount namespace only.
    let mut prelude = String::new();
    if !fuse_open_to_all() {
        union_mounts::mknod_chr(&fx.dir.path().join("fuse"), 10, 229);
        testkit::set_mode(&fx.dir.path().join("fuse"), 0o600);
        prelude = "mount --bind \"$D/fuse\" /dev/fuse\n".into();
    }
    run_timeout(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(fx.dir.path()),
        STEP,
    )
    .assert_ok();
    let script = format!("set -e\n{prelude}{body}");
    let out = run_timeout(
        testkit::as_test_user("unshare")
            .args(unshare)
            .args(["sh", "-c", &script])
            .env("D", fx.dir.path())
            .env("OPTS", fx.rw_opts())
            .env("RCLFS", testkit::workspace_bin("rcl-fs")),
        STEP,
    );
    if let Some(pid) = server_pid(&fx.mnt) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    out
}

fn rootless(imp: Imp) {
    need!(imp);
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let fx = Fixture::new(&["f a hello\nf b bye\nd d\nf d/x 1\nf ld/y y"]);
    let mount = match imp {
        Imp::Kernel => "mount -t overlay overlay -o \"$OPTS,userxattr,nodev\" \"$D/mnt\"",
        Imp::RclFs => "\"$RCLFS\" -o \"$OPTS,nodev\" \"$D/mnt\"",
    };
    let body = format!(
        "{mount}\ncd \"$D/mnt\"\ncat a\necho new > n\nmkdir nd\nrm b\nrm -r d\nmkdir d\n\
         ls -A\nstat -c '%u %g' n a\nmv a a2\nmv ld ld2\ncd /\numount \"$D/mnt\"\necho unmounted\n\
         {mount}\ncd \"$D/mnt\"\nls -A\ncat a2 ld2/y n\ncd /\numount \"$D/mnt\""
    );
    let out = run_rootless(&fx, uid, gid, &body);
    assert!(out.success(), "{imp:?} rootless: {out:#?}");
    assert_eq!(
        out.stdout,
        "hello\na\nd\nld\nn\nnd\n0 0\n0 0\nunmounted\na2\nd\nld2\nn\nnd\nhello\ny\nnew\n",
        "{out:?}"
    );
    // On disk, what was created inside belongs to the test user; deletions are 0/0 whiteouts.
    assert_eq!(
        union_mounts::disk_stat(&fx.up("n"), "%u %g"),
        format!("{uid} {gid}")
    );
    assert_eq!(
        union_mounts::disk_stat(&fx.up("nd"), "%u %g %F"),
        format!("{uid} {gid} directory")
    );
    assert_eq!(
        union_mounts::disk_stat(&fx.up("b"), "%F %t %T"),
        "character special file 0 0"
    );
    assert_eq!(
        union_mounts::get_xattr(&fx.up("d"), "user.overlay.opaque"),
        Ok(b"y".to_vec()),
        "rootless opaque marker"
    );
}

/// True when /dev/fuse is readable and writable by every user.
fn fuse_open_to_all() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

#[test]
fn rootless_kernel() {
    rootless(Imp::Kernel);
}

#[test]
fn rootless_rclfs() {
    rootless(Imp::RclFs);
}

#[test]
fn sigterm_while_busy_unmounts_and_exits() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a hello"]);
    let m = fx.mount(Imp::RclFs, "", "");
    let pid = m.server.expect("server pid");
    // A process keeps the mount busy (cwd inside, a file open).
    let mut busy = Command::new("sh")
        .arg("-c")
        .arg("cd \"$M\" && exec 3<a && sleep 30")
        .env("M", &fx.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it sits in the mount (readlink of /proc/PID/cwd does not enter the mount).
    let cwd = format!("/proc/{}/cwd", busy.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(&cwd).ok().as_deref() != Some(fx.mnt.as_path()) {
        assert!(
            Instant::now() < deadline,
            "the busy process never entered the mount"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let out = run_timeout(Command::new("umount").arg(&fx.mnt), STEP);
    assert!(!out.success() && out.stderr.contains("busy"), "{out:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let gone = wait_gone(pid, Duration::from_secs(10));
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(gone, "server survived SIGTERM while busy");
    assert!(!testkit::is_mounted(&fx.mnt), "still mounted");
}

#[test]
fn debug_flag_logs_and_stays_in_foreground() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a hello"]);
    let log = fx.dir.path().join("log");
    let mut child = rclfs()
        .arg("-d")
        .arg("-o")
        .arg(fx.rw_opts())
        .arg(&fx.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _guard = MountGuard::new(&fx.mnt).with_server(child.id() as i32);
    assert!(
        wait_mounted(&fx.mnt, Duration::from_secs(10)),
        "rcl-fs -d did not mount"
    );
    assert_eq!(
        testkit::sh(&format!("cat {}/a", fx.mnt.display()), STEP).stdout,
        "hello\n"
    );
    run_timeout(Command::new("umount").arg(&fx.mnt), STEP).assert_ok();
    let st = wait_child(&mut child, Duration::from_secs(10)).expect("server still running");
    assert!(st.success(), "{st:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 3, "little debug output: {text}");
}

#[test]
fn podman_style_command_line_with_relative_paths() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a hello\nf b bye"]);
    // What podman's mount_program gets (options first, SELinux context quoted), with paths
    // relative to the caller's directory.
    let opts = "lowerdir=l0,upperdir=upper,workdir=work,xattr_permissions=2,\
                context=\"system_u:object_r:container_file_t:s0:c1,c2\",whiteout=wh";
    let out = run_timeout(
        rclfs()
            .arg("-o")
            .arg(opts)
            .arg("mnt")
            .current_dir(fx.dir.path()),
        STEP,
    );
    let mut guard = MountGuard::new(&fx.mnt);
    if let Some(pid) = server_pid(Path::new("mnt")) {
        guard = guard.with_server(pid);
    }
    assert!(out.success(), "{out:?}");
    assert!(
        out.stderr.contains("xattr_permissions") && out.stderr.contains("context="),
        "{out:?}"
    );
    let r = testkit::sh(
        &format!("cd {} && cat a && rm b && ls -A", fx.mnt.display()),
        STEP,
    );
    assert_eq!(r.stdout, "hello\na\n", "{r:?}");
    assert!(fx.up(".wh.b").exists(), "whiteout=wh not honoured");
    run_timeout(Command::new("umount").arg(&fx.mnt), STEP).assert_ok();
    drop(guard);
}

#[test]
fn sigint_to_foreground_server_unmounts_and_exits_0() {
    need!(Imp::RclFs);
    let fx = Fixture::new(&["f a hello"]);
    let (mut child, _guard) = foreground(&fx);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = wait_child(&mut child, Duration::from_secs(10)).expect("server ignored SIGINT");
    assert!(st.success(), "exit status {st:?}");
    assert!(!testkit::is_mounted(&fx.mnt));
}

#[test]
fn rootless_passthrough_on_fails_to_mount() {
    need!(Imp::RclFs);
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let fx = Fixture::new(&["f a hello"]);
    let out = run_rootless(
        &fx,
        uid,
        gid,
        "if \"$RCLFS\" -o \"$OPTS,passthrough=on\" \"$D/mnt\"; then umount \"$D/mnt\"; \
         echo mounted; else echo refused; fi",
    );
    assert_eq!(out.stdout, "refused\n", "{out:?}");
    assert!(out.stderr.contains("passthrough"), "{out:?}");
}

/// First id of the test user's range in /etc/subuid or /etc/subgid.
fn subid_start(file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 3 && f[0] == testkit::TEST_USER).then(|| f[1].parse().ok())?
    })
}

/// podman's rootless layout: a user namespace mapping /etc/subuid ranges (through newuidmap);
/// ids chowned inside land on disk shifted into the range.
fn rootless_subid_ranges(imp: Imp) {
    need!(imp);
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let ok = |c: &str| testkit::sh(c, STEP).success();
    if !ok("command -v newuidmap && command -v newgidmap && unshare --help | grep -q map-auto") {
        testkit::skip!(
            "needs newuidmap/newgidmap (uidmap) and unshare --map-auto (util-linux 2.38)"
        );
    }
    let (Some(su), Some(sg)) = (subid_start("/etc/subuid"), subid_start("/etc/subgid")) else {
        testkit::skip!(
            "no /etc/subuid or /etc/subgid range for {}",
            testkit::TEST_USER
        );
    };
    let fx = Fixture::new(&["f a hello"]);
    let mount = match imp {
        Imp::Kernel => "mount -t overlay overlay -o \"$OPTS,userxattr\" \"$D/mnt\"",
        Imp::RclFs => "\"$RCLFS\" -o \"$OPTS\" \"$D/mnt\"",
    };
    let body = format!(
        "{mount}\ncd \"$D/mnt\"\necho b > b\nchown 5:6 b\nchown 7:8 a\nmkdir d\nchown 9:10 d\n\
         stat -c '%u %g' a b d\ncd /\numount \"$D/mnt\""
    );
    let out = run_rootless_with(
        &fx,
        uid,
        gid,
        &["--map-auto", "--map-root-user", "-m"],
        &body,
    );
    assert!(out.success(), "{imp:?}: {out:#?}");
    assert_eq!(out.stdout, "7 8\n5 6\n9 10\n");
    // Container id N >= 1 is host id start + N - 1.
    for (name, cu, cg) in [("a", 7, 8), ("b", 5, 6), ("d", 9, 10)] {
        assert_eq!(
            union_mounts::disk_stat(&fx.up(name), "%u %g"),
            format!("{} {}", su + cu - 1, sg + cg - 1),
            "{name}"
        );
    }
}

#[test]
fn rootless_subid_ranges_kernel() {
    rootless_subid_ranges(Imp::Kernel);
}

#[test]
fn rootless_subid_ranges_rclfs() {
    rootless_subid_ranges(Imp::RclFs);
}

#[test]
fn rootless_xattr_trusted_fails_to_mount() {
    need!(Imp::RclFs);
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let fx = Fixture::new(&["f a hello"]);
    let out = run_rootless(
        &fx,
        uid,
        gid,
        "if \"$RCLFS\" -o \"$OPTS,xattr=trusted\" \"$D/mnt\"; then umount \"$D/mnt\"; \
         echo mounted; else echo refused; fi",
    );
    assert_eq!(out.stdout, "refused\n", "{out:?}");
    assert!(out.stderr.contains("trusted"), "{out:?}");
}
