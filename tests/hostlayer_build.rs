//! Host layers built from real host programs, checked with ldd and run with chroot.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcl::hostlayer;
use testkit::{run_timeout, skip};

const T: Duration = Duration::from_secs(30);

/// Resolves `path` inside `layer` the way a chroot would: symlinks (absolute ones too) stay
/// inside the layer. Returns the host path of the final file, if every step exists.
fn resolve_in(layer: &Path, path: &Path) -> Option<PathBuf> {
    let mut todo: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == Path::new("..") {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let meta = std::fs::symlink_metadata(layer.join(&next)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(layer.join(&next)).ok()?;
            if target.is_absolute() {
                cur = PathBuf::new();
            }
            for t in target
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(PathBuf::from(n)),
                    Component::ParentDir => Some(PathBuf::from("..")),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                todo.push(t);
            }
        } else {
            cur = next;
        }
    }
    Some(layer.join(cur))
}

/// Library paths `ldd` reports for `prog` (resolved ones and the interpreter).
fn ldd(prog: &Path) -> Option<Vec<PathBuf>> {
    let out = run_timeout(Command::new("ldd").arg(prog), T);
    if !out.success() {
        return None;
    }
    let mut libs = Vec::new();
    for line in out.stdout.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Some(libs)
}

fn programs(names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(PathBuf::from).collect()
}

#[test]
fn dynamic_programs_get_every_library_ldd_lists() {
    let cache = tempfile::tempdir().unwrap();
    let progs = programs(&["/bin/sh", "/usr/bin/env"]);
    let layer = hostlayer::build(&progs, cache.path()).expect("build");
    assert!(layer.starts_with(cache.path()));
    let mut checked = 0;
    for p in &progs {
        let placed = resolve_in(&layer, p).unwrap_or_else(|| panic!("{} missing", p.display()));
        assert!(
            placed.is_file(),
            "{} is not a file in the layer",
            p.display()
        );
        let Some(libs) = ldd(p) else {
            skip!("ldd cannot inspect {} here", p.display());
        };
        for lib in libs {
            let got = resolve_in(&layer, &lib)
                .unwrap_or_else(|| panic!("{} needs {}, missing", p.display(), lib.display()));
            let want = std::fs::read(std::fs::canonicalize(&lib).unwrap()).unwrap();
            assert_eq!(
                std::fs::read(&got).unwrap(),
                want,
                "{} differs",
                lib.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected /bin/sh to need libraries");
    // Mountpoints a rootfs needs.
    for d in ["proc", "dev", "sys", "tmp"] {
        assert!(layer.join(d).is_dir(), "/{d} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp_mode = std::fs::metadata(layer.join("tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777);
}

#[test]
fn host_symlink_chains_are_recreated() {
    let cache = tempfile::tempdir().unwrap();
    let layer = hostlayer::build(&programs(&["/bin/sh"]), cache.path()).unwrap();
    // Every symlink on the way to /bin/sh on the host is a symlink with the same target in the
    // layer.
    let mut cur = PathBuf::from("/");
    for c in Path::new("/bin/sh").components().skip(1) {
        cur.push(c);
        let host = std::fs::symlink_metadata(&cur).unwrap();
        let ours = std::fs::symlink_metadata(layer.join(cur.strip_prefix("/").unwrap())).unwrap();
        assert_eq!(
            host.file_type().is_symlink(),
            ours.file_type().is_symlink(),
            "{}",
            cur.display()
        );
        if host.file_type().is_symlink() {
            let target = std::fs::read_link(&cur).unwrap();
            let ours = std::fs::read_link(layer.join(cur.strip_prefix("/").unwrap())).unwrap();
            assert_eq!(target, ours);
            cur = if target.is_absolute() {
                target
            } else {
                cur.parent().unwrap().join(target)
            };
        }
    }
}

#[test]
fn chroot_runs_the_shell_and_env() {
    if !testkit::is_root() {
        skip!("chroot needs root");
    }
    let cache = tempfile::tempdir().unwrap();
    let layer = hostlayer::build(&programs(&["/bin/sh", "/usr/bin/env"]), cache.path()).unwrap();
    let out = run_timeout(
        Command::new("chroot")
            .arg(&layer)
            .args(["/bin/sh", "-c", "echo ok"]),
        T,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "ok\n");
    let out = run_timeout(
        Command::new("chroot")
            .arg(&layer)
            .args(["/usr/bin/env", "-i", "A=b", "/usr/bin/env"]),
        T,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "A=b\n");
}

#[test]
fn busybox_gets_its_applets() {
    let bb = Path::new("/bin/busybox");
    if !bb.exists() {
        skip!("no /bin/busybox (CI installs busybox-static)");
    }
    let cache = tempfile::tempdir().unwrap();
    let layer = hostlayer::build(&[bb.to_path_buf()], cache.path()).unwrap();
    for applet in ["sh", "ls", "cat", "echo"] {
        let p = resolve_in(&layer, &Path::new("/bin").join(applet));
        assert!(p.is_some_and(|p| p.is_file()), "applet {applet} missing");
    }
    if !testkit::is_root() {
        skip!("chroot needs root");
    }
    let out = run_timeout(
        Command::new("chroot").arg(&layer).args([
            "/bin/sh",
            "-c",
            "ls -d /proc /tmp && echo hi | cat",
        ]),
        T,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "/proc\n/tmp\nhi\n");
}

#[test]
fn cache_is_reused_and_keyed_by_inputs() {
    let cache = tempfile::tempdir().unwrap();
    let a = hostlayer::build(&programs(&["/bin/sh"]), cache.path()).unwrap();
    let marker = a.join("tmp/.marker");
    std::fs::write(&marker, "x").unwrap();
    let again = hostlayer::build(&programs(&["/bin/sh"]), cache.path()).unwrap();
    assert_eq!(a, again);
    assert!(marker.exists(), "a cached layer must not be rebuilt");
    let b = hostlayer::build(&programs(&["/bin/sh", "/usr/bin/env"]), cache.path()).unwrap();
    assert_ne!(a, b);
    // A changed input (a program with a new mtime) gives a new layer.
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("tool");
    std::fs::write(&prog, "#!/bin/sh\necho tool\n").unwrap();
    testkit::set_mode(&prog, 0o755);
    let c1 = hostlayer::build(std::slice::from_ref(&prog), cache.path()).unwrap();
    std::fs::write(&prog, "#!/bin/sh\necho tool, longer\n").unwrap();
    let c2 = hostlayer::build(std::slice::from_ref(&prog), cache.path()).unwrap();
    assert_ne!(c1, c2);
    // The script brought its interpreter.
    assert!(resolve_in(&c2, Path::new("/bin/sh")).is_some());
    let leftovers: BTreeSet<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary dirs left: {leftovers:?}");
}

#[test]
fn concurrent_builds_agree_and_leave_no_partial_layers() {
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path().to_path_buf();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                hostlayer::build(&programs(&["/bin/sh", "/usr/bin/env"]), &root).unwrap()
            })
        })
        .collect();
    let paths: BTreeSet<PathBuf> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(paths.len(), 1);
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn missing_program_is_an_error_and_leaves_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let err = hostlayer::build(&programs(&["/nonexistent/prog"]), cache.path()).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent/prog"), "{err:#}");
    let err = hostlayer::build(&programs(&["bin/sh"]), cache.path()).unwrap_err();
    assert!(format!("{err:#}").contains("absolute"), "{err:#}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn skeleton_has_users_and_mountpoints() {
    let cache = tempfile::tempdir().unwrap();
    let s = hostlayer::skeleton(cache.path()).unwrap();
    let passwd = std::fs::read_to_string(s.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    assert!(passwd.contains("nobody:x:65534:65534:"));
    let group = std::fs::read_to_string(s.join("etc/group")).unwrap();
    assert!(group.contains("root:x:0:"));
    for d in ["proc", "dev", "sys", "tmp", "root"] {
        assert!(s.join(d).is_dir());
    }
    assert_eq!(hostlayer::skeleton(cache.path()).unwrap(), s);
}

/// Compiles a program that loads its own library through `$ORIGIN/../lib` (as DT_RUNPATH or
/// DT_RPATH), with a versioned symlink chain, then checks the layer runs it.
fn origin_case(new_dtags: bool) {
    let cc = ["cc", "gcc", "clang"]
        .into_iter()
        .find(|c| run_timeout(Command::new(c).arg("--version"), T).success());
    let Some(cc) = cc else {
        skip!("no C compiler to build the $ORIGIN test program");
    };
    let src = testkit::shared_tempdir();
    let app = src.path().join("app");
    std::fs::create_dir_all(app.join("bin")).unwrap();
    std::fs::create_dir_all(app.join("lib")).unwrap();
    std::fs::write(
        src.path().join("greet.c"),
        "#include <stdio.h>\nvoid greet(void) { puts(\"greetings from libgreet\"); }\n",
    )
    .unwrap();
    std::fs::write(
        src.path().join("main.c"),
        "void greet(void);\nint main(void) { greet(); return 0; }\n",
    )
    .unwrap();
    let sh = |script: String| {
        let out = run_timeout(
            Command::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(src.path()),
            T,
        );
        out.assert_ok();
    };
    let dtags = if new_dtags {
        "--enable-new-dtags"
    } else {
        "--disable-new-dtags"
    };
    sh(format!(
        "{cc} -shared -fPIC -Wl,-soname,libgreet.so.1 -o app/lib/libgreet.so.1.0 greet.c && \
         ln -s libgreet.so.1.0 app/lib/libgreet.so.1 && ln -s libgreet.so.1 app/lib/libgreet.so && \
         {cc} -o app/bin/greet main.c -Lapp/lib -lgreet -Wl,{dtags} -Wl,-rpath,'$ORIGIN/../lib'"
    ));
    let dynamic = run_timeout(
        Command::new("readelf").arg("-d").arg(app.join("bin/greet")),
        T,
    );
    if dynamic.success() {
        let tag = if new_dtags { "RUNPATH" } else { "(RPATH)" };
        assert!(dynamic.stdout.contains(tag), "{}", dynamic.stdout);
    }
    let cache = tempfile::tempdir().unwrap();
    let layer = hostlayer::build(&[app.join("bin/greet")], cache.path()).unwrap();
    let inside = |p: &Path| layer.join(p.strip_prefix("/").unwrap());
    let link = inside(&app.join("lib/libgreet.so.1"));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("libgreet.so.1.0")
    );
    assert!(inside(&app.join("lib/libgreet.so.1.0")).is_file());
    assert!(
        std::fs::symlink_metadata(inside(&app.join("lib/libgreet.so"))).is_err(),
        "only what the loader opens is copied"
    );
    if !testkit::is_root() {
        skip!("chroot needs root");
    }
    // The loader finds the main program's $ORIGIN through /proc/self/exe, so mount a proc (in
    // a private mount namespace: it vanishes with the process) as a container would have.
    let out = run_timeout(
        Command::new("unshare")
            .args(["--pid", "--fork"])
            .arg(format!("--mount-proc={}", layer.join("proc").display()))
            .arg("chroot")
            .arg(&layer)
            .arg(app.join("bin/greet")),
        T,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "greetings from libgreet\n");
}

#[test]
fn origin_runpath_and_soname_symlinks() {
    origin_case(true);
}

#[test]
fn origin_rpath() {
    origin_case(false);
}

#[test]
fn stale_temporary_layers_are_swept() {
    let cache = tempfile::tempdir().unwrap();
    let stale = cache.path().join(".building-crashed");
    let fresh = cache.path().join(".building-running");
    std::fs::create_dir_all(stale.join("usr")).unwrap();
    std::fs::create_dir_all(&fresh).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    hostlayer::build(&programs(&["/bin/sh"]), cache.path()).unwrap();
    assert!(!stale.exists(), "a crashed build's leftovers stay");
    assert!(fresh.exists(), "a build in progress was removed");
}

/// Run as the unprivileged test user by `rootless_users_can_build_layers`; does nothing when
/// started any other way.
#[test]
#[ignore = "started as the test user by rootless_users_can_build_layers"]
fn rootless_child() {
    let Some(cache) = std::env::var_os("RCL_TEST_LAYER_CACHE") else {
        return;
    };
    let layer = hostlayer::build(&programs(&["/bin/sh", "/usr/bin/env"]), Path::new(&cache))
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!("LAYER={}", layer.display());
}

#[test]
fn rootless_users_can_build_layers() {
    if !testkit::is_root() {
        skip!("needs root to switch to the test user");
    }
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => skip!("no test user: {why}"),
    };
    let dir = testkit::shared_tempdir();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).unwrap();
    let out = run_timeout(
        testkit::as_test_user(std::env::current_exe().unwrap())
            .args(["--exact", "rootless_child", "--ignored", "--nocapture"])
            .env("RCL_TEST_LAYER_CACHE", &cache),
        T,
    );
    out.assert_ok();
    let layer = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("LAYER="))
        .unwrap_or_else(|| panic!("no layer printed: {out:?}"));
    let layer = PathBuf::from(layer);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&layer).unwrap().uid(), uid);
    let sh = resolve_in(&layer, Path::new("/bin/sh")).expect("/bin/sh in the layer");
    assert_eq!(std::fs::metadata(&sh).unwrap().uid(), uid);
    let out = run_timeout(
        Command::new("chroot")
            .arg(&layer)
            .args(["/bin/sh", "-c", "echo rootless ok"]),
        T,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "rootless ok\n");
}
