//! fscore rootless test: the server runs as an unprivileged user inside its own user and mount
//! namespace (as podman runs fuse-overlayfs): markers go to `user.overlay.*`, whiteouts are
//! char 0/0, passthrough falls back, and the container view still works.

#[macro_use]
mod union_mounts;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use union_mounts::{
    config_for, get_xattr, is_whiteout, library_mount, only_test, put, sh_ok_in, InProcessMount,
};

const ENV: &str = "RCLFS_CORE_ROOTLESS";

/// Not a test on its own: the body that runs inside the user namespace (re-executed by
/// `rootless_mount_works`). Without the variable it does nothing.
#[test]
fn rootless_inner_process() {
    let Ok(base) = std::env::var(ENV) else {
        return;
    };
    let base = Path::new(&base);
    let mnt = base.join("mnt");
    let cfg = config_for(vec![base.join("l0")], base.join("upper"), base.join("work"));
    let bg = library_mount(cfg, &mnt).spawn().expect("spawn");
    let out = sh_ok_in(
        &mnt,
        "cat f; rm f; test ! -e f; rm -r d; mkdir d; ls -A d | wc -l; echo new > n; cat n; \
         mv keep kept; cat kept/x; dd if=/dev/zero of=big bs=1M count=8 2>/dev/null; stat -c %s big",
    );
    assert_eq!(out, "lower\n0\nnew\nx\n8388608\n");
    drop(bg);
    println!("ROOTLESS-OK");
}

/// Runs the inner body in a new user + mount namespace, as the unprivileged test user when it
/// may open /dev/fuse, else as root mapped to itself (no capability in the initial namespace
/// either way, so trusted xattrs and passthrough are unavailable: the rootless paths).
#[test]
fn rootless_mount_works() {
    need_fuse!();
    let mut probe = testkit::as_test_user("sh");
    probe.args(["-c", "exec 3<>/dev/fuse"]);
    let as_user = testkit::test_user().is_ok()
        && testkit::run_timeout(&mut probe, Duration::from_secs(10)).success();
    let m = InProcessMount::layers(1);
    let base = m.dir.path().to_path_buf();
    let l = m.lower(0).to_path_buf();
    put(&l.join("f"), "lower\n");
    put(&l.join("d/child"), "c");
    put(&l.join("keep/x"), "x\n");
    if as_user {
        let (uid, gid) = testkit::test_user().expect("checked");
        for p in [
            "l0",
            "l0/d",
            "l0/keep",
            "upper",
            "work",
            "mnt",
            "l0/f",
            "l0/d/child",
            "l0/keep/x",
        ] {
            std::os::unix::fs::chown(base.join(p), Some(uid), Some(gid)).unwrap();
        }
    }
    let exe = base.join("test-exe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    testkit::set_mode(&exe, 0o755);
    let mut cmd = if as_user {
        testkit::as_test_user("unshare")
    } else {
        Command::new("unshare")
    };
    cmd.args(["-Urm", "--"])
        .arg(&exe)
        .args(only_test("rootless_inner_process"))
        .env(ENV, &base);
    let out = testkit::run_timeout(&mut cmd, Duration::from_secs(120));
    if out.stderr.contains("unshare failed") {
        testkit::skip!("user namespaces unavailable: {}", out.stderr.trim());
    }
    assert!(
        out.stdout.contains("ROOTLESS-OK"),
        "as_user={as_user} {out:#?}"
    );
    assert!(is_whiteout(&m.upper.join("f")));
    assert_eq!(
        get_xattr(&m.upper.join("d"), "user.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    assert!(get_xattr(&m.upper.join("d"), "trusted.overlay.opaque").is_err());
    assert_eq!(
        get_xattr(&m.upper.join("kept"), "user.overlay.redirect"),
        Ok(b"/keep".to_vec())
    );
}

/// Asking for the trusted namespace where it cannot be written fails at `UnionFs::new`, naming
/// the problem (run inside a user namespace as root mapped to itself).
#[test]
fn trusted_namespace_refused_in_user_namespace() {
    need_fuse!();
    if let Ok(dir) = std::env::var("RCLFS_CORE_TRUSTED_PROBE") {
        let d = Path::new(&dir);
        let mut cfg = fsimpl::OverlayConfig::new(vec![d.join("l0")])
            .with_upper(d.join("upper"), d.join("work"));
        cfg.xattr_namespace = fsimpl::XattrNamespace::Trusted;
        match fsimpl::UnionFs::new(cfg) {
            Ok(_) => println!("ACCEPTED"),
            Err(e) => println!("REFUSED {e}"),
        }
        return;
    }
    let m = InProcessMount::layers(1);
    let base = m.dir.path().to_path_buf();
    let exe = base.join("test-exe");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    testkit::set_mode(&exe, 0o755);
    let mut cmd = Command::new("unshare");
    cmd.args(["-Urm", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "trusted_namespace_refused_in_user_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RCLFS_CORE_TRUSTED_PROBE", &base);
    let out = testkit::run_timeout(&mut cmd, Duration::from_secs(60));
    if out.stderr.contains("unshare failed") {
        testkit::skip!("user namespaces unavailable: {}", out.stderr.trim());
    }
    assert!(
        out.stdout.contains("REFUSED") && out.stdout.contains("trusted"),
        "{out:#?}"
    );
}
