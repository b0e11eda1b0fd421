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
