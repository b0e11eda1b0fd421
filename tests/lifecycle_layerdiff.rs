//! `rcl::layerdiff` on real upper layers made by kernel overlayfs: diff, commit to a layer
//! directory mounted back as a lowerdir, commit to a tarball unpacked and diffed again.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcl::layerdiff::{self, Change, ChangeKind};
use testkit::MountGuard;

fn overlay_unavailable() -> Option<String> {
    if !testkit::is_root() {
        return Some("mounting kernel overlayfs needs root".into());
    }
    let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        return Some("kernel overlayfs not available".into());
    }
    None
}

fn mount_overlay(opts: &str, target: &Path) -> MountGuard {
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts),
    )
    .unwrap_or_else(|e| panic!("mount overlay {opts} on {}: {e}", target.display()));
    MountGuard::new(target)
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// A lower layer and an upper layer left by kernel overlayfs after a set of changes.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().to_path_buf();
    let lower = root.join("lower");
    let upper = root.join("upper");
    let work = root.join("work");
    let merged = root.join("merged");
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    write(&lower.join("a"), "lower-a");
    write(&lower.join("b"), "lower-b");
    write(&lower.join("d/x"), "x");
    write(&lower.join("d/y"), "y");
    write(&lower.join("e/keep"), "keep");
    write(&lower.join("f"), "f");
    {
        let guard = mount_overlay(
            &format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ),
            &merged,
        );
        let script = format!(
            "set -e; cd {}; echo new > a; rm b; echo c > c; mkdir n; echo z > n/z; \
             rm -rf d; mkdir d; echo w > d/w; chmod 600 f; ln c c2; ln -s c sc",
            merged.display()
        );
        testkit::sh(&script, Duration::from_secs(20)).assert_ok();
        xattr::set(merged.join("c"), "user.keep", b"1").unwrap();
        drop(guard);
    }
    // Private xattrs a union filesystem may leave behind: they must never be committed.
    xattr::set(upper.join("c"), "trusted.overlay.origin", b"junk").unwrap();
    xattr::set(upper.join("c"), "user.rclfs.private", b"junk").unwrap();
    Fixture {
        _dir: dir,
        root,
        lower,
        upper,
    }
}

fn expected() -> Vec<Change> {
    use ChangeKind::*;
    [
        ("a", Changed),
        ("b", Deleted),
        ("c", Added),
        ("c2", Added),
        ("d/w", Added),
        ("d/x", Deleted),
        ("d/y", Deleted),
        ("f", Changed),
        ("n", Added),
        ("n/z", Added),
        ("sc", Added),
    ]
    .into_iter()
    .map(|(p, kind)| Change {
        path: PathBuf::from(p),
        kind,
    })
    .collect()
}

fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.symlink_metadata().unwrap().is_dir() {
            walk_all(&p, out);
        }
    }
}

#[test]
fn diff_of_a_kernel_overlay_upper() {
    if let Some(why) = overlay_unavailable() {
        testkit::skip!("{why}");
    }
    let fx = fixture();
    let changes = layerdiff::diff(&fx.upper, std::slice::from_ref(&fx.lower)).unwrap();
    assert_eq!(changes, expected());
}

#[test]
fn committed_dir_mounts_as_a_lowerdir_and_shows_the_changes() {
    if let Some(why) = overlay_unavailable() {
        testkit::skip!("{why}");
    }
    let fx = fixture();
    let out = fx.root.join("layer");
    let stats = layerdiff::commit_dir(&fx.upper, std::slice::from_ref(&fx.lower), &out).unwrap();
    assert_eq!(stats.whiteouts, 1, "{stats:?}");
    assert_eq!(stats.opaque, 1, "{stats:?}");
    assert_eq!(stats.hardlinks, 1, "{stats:?}");

    // No private xattr leaked; only the opaque marker we wrote ourselves.
    let mut all = vec![out.clone()];
    walk_all(&out, &mut all);
    for p in &all {
        for name in xattr::list(p).unwrap() {
            let n = name.to_string_lossy();
            if layerdiff::is_private_xattr(&name) {
                assert!(
                    n == "trusted.overlay.opaque" && p == &out.join("d"),
                    "private xattr {n} leaked on {}",
                    p.display()
                );
            }
        }
    }
    assert_eq!(
        fs::metadata(out.join("c")).unwrap().ino(),
        fs::metadata(out.join("c2")).unwrap().ino(),
        "hard link kept"
    );
    // The layer diffs the same as the upper it came from.
    assert_eq!(
        layerdiff::diff(&out, std::slice::from_ref(&fx.lower)).unwrap(),
        expected()
    );

    let merged = fx.root.join("merged2");
    fs::create_dir(&merged).unwrap();
    let _g = mount_overlay(
        &format!("lowerdir={}:{}", out.display(), fx.lower.display()),
        &merged,
    );
    assert_eq!(fs::read_to_string(merged.join("a")).unwrap(), "new\n");
    assert!(!merged.join("b").exists(), "b deleted");
    assert_eq!(fs::read_to_string(merged.join("c")).unwrap(), "c\n");
    assert_eq!(fs::read_to_string(merged.join("c2")).unwrap(), "c\n");
    let mut d: Vec<_> = fs::read_dir(merged.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    d.sort();
    assert_eq!(d, ["w"], "opaque d hides the lower's x and y");
    assert_eq!(fs::read_to_string(merged.join("e/keep")).unwrap(), "keep");
    assert_eq!(
        fs::metadata(merged.join("f")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_to_string(merged.join("n/z")).unwrap(), "z\n");
    assert_eq!(fs::read_link(merged.join("sc")).unwrap(), Path::new("c"));
    assert_eq!(
        xattr::get(merged.join("c"), "user.keep")
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        xattr::get(merged.join("c"), "user.rclfs.private").unwrap(),
        None
    );
}

#[test]
fn committed_tar_uses_wh_files_and_round_trips() {
    if let Some(why) = overlay_unavailable() {
        testkit::skip!("{why}");
    }
    let fx = fixture();
    let tarball = fx.root.join("layer.tar");
    layerdiff::commit_tar(&fx.upper, std::slice::from_ref(&fx.lower), &tarball).unwrap();

    let mut names = Vec::new();
    let mut ar = tar::Archive::new(fs::File::open(&tarball).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        let kind = e.header().entry_type();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let key = ext.unwrap().key().unwrap().to_string();
                assert!(
                    !key.contains("overlay.") && !key.contains("rclfs."),
                    "private xattr {key} in tar at {}",
                    path.display()
                );
                if path == Path::new("c") {
                    assert_eq!(key, "SCHILY.xattr.user.keep");
                }
            }
        }
        if path == Path::new("c2") {
            assert_eq!(kind, tar::EntryType::Link);
            assert_eq!(e.link_name().unwrap().unwrap(), Path::new("c"));
        }
        if path == Path::new("sc") {
            assert_eq!(kind, tar::EntryType::Symlink);
        }
        if path == Path::new("f") {
            assert_eq!(e.header().mode().unwrap() & 0o777, 0o600);
        }
        names.push(path.to_string_lossy().into_owned());
    }
    for want in [".wh.b", "d/.wh..wh..opq", "d/w", "n/z", "a"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "b"));

    // Unpacked, the OCI-format layer diffs the same as the kernel-format upper.
    let unpacked = fx.root.join("unpacked");
    let mut ar = tar::Archive::new(fs::File::open(&tarball).unwrap());
    ar.set_unpack_xattrs(true);
    ar.unpack(&unpacked).unwrap();
    assert_eq!(
        layerdiff::diff(&unpacked, std::slice::from_ref(&fx.lower)).unwrap(),
        expected()
    );
}

#[test]
fn commit_refuses_an_existing_output_and_names_a_missing_upper() {
    let dir = tempfile::tempdir().unwrap();
    let upper = dir.path().join("upper");
    fs::create_dir(&upper).unwrap();
    fs::write(upper.join("x"), "x").unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let err = layerdiff::commit_dir(&upper, &[], &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already exists") && err.contains("out"),
        "{err}"
    );
    let err = layerdiff::commit_tar(&upper, &[], &upper.join("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");

    let missing = dir.path().join("nope");
    let err = layerdiff::diff(&missing, &[]).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    let err = layerdiff::commit_dir(&missing, &[], &dir.path().join("o2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    // Nothing left behind.
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn diff_reads_oci_whiteouts_without_root() {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    let upper = dir.path().join("upper");
    write(&lower.join("gone"), "");
    write(&lower.join("dir/old"), "");
    write(&lower.join("keep"), "");
    write(&upper.join(".wh.gone"), "");
    write(&upper.join("dir/.wh..wh..opq"), "");
    write(&upper.join("dir/new"), "");
    write(&upper.join("keep"), "changed");
    let got = layerdiff::diff(&upper, &[lower]).unwrap();
    let got: Vec<_> = got
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(got, ["A dir/new", "D dir/old", "D gone", "C keep"]);
}

/// An upper made by kernel overlayfs with metacopy (chmod copies up metadata only) and
/// redirect_dir (a renamed lower directory keeps pointing at its old content).
fn metacopy_fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().to_path_buf();
    let lower = root.join("lower");
    let upper = root.join("upper");
    let work = root.join("work");
    let merged = root.join("merged");
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    write(&lower.join("big/data"), "payload");
    write(&lower.join("olddir/f1"), "one");
    write(&lower.join("olddir/sub/f2"), "two");
    write(&lower.join("stay"), "stay");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},metacopy=on,redirect_dir=on",
        lower.display(),
        upper.display(),
        work.display()
    );
    if nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .is_err()
    {
        return None;
    }
    let guard = MountGuard::new(&merged);
    let script = format!(
        "set -e; cd {}; chmod 600 big/data; mv olddir newdir; echo new > newdir/added",
        merged.display()
    );
    testkit::sh(&script, Duration::from_secs(20)).assert_ok();
    drop(guard);
    Some(Fixture {
        _dir: dir,
        root,
        lower,
        upper,
    })
}

#[test]
fn metacopy_files_and_renamed_dirs_are_committed_whole() {
    if let Some(why) = overlay_unavailable() {
        testkit::skip!("{why}");
    }
    let Some(fx) = metacopy_fixture() else {
        testkit::skip!("kernel overlayfs refused metacopy=on,redirect_dir=on");
    };
    // The upper really holds a metadata-only copy and a redirect.
    assert!(
        xattr::get(fx.upper.join("big/data"), "trusted.overlay.metacopy")
            .unwrap()
            .is_some()
    );
    assert!(
        xattr::get(fx.upper.join("newdir"), "trusted.overlay.redirect")
            .unwrap()
            .is_some()
    );
    let lowers = std::slice::from_ref(&fx.lower);
    let got: Vec<String> = layerdiff::diff(&fx.upper, lowers)
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(
        got,
        [
            "C big/data",
            "A newdir",
            "A newdir/added",
            "A newdir/f1",
            "A newdir/sub",
            "A newdir/sub/f2",
            "D olddir"
        ]
    );

    let out = fx.root.join("layer");
    layerdiff::commit_dir(&fx.upper, lowers, &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("big/data")).unwrap(), "payload");
    assert_eq!(
        fs::read_to_string(out.join("newdir/sub/f2")).unwrap(),
        "two"
    );
    for p in [out.join("big/data"), out.join("newdir")] {
        for name in xattr::list(&p).unwrap() {
            let n = name.to_string_lossy();
            assert!(
                !n.contains("metacopy") && !n.contains("redirect"),
                "{n} on {}",
                p.display()
            );
        }
    }
    let merged = fx.root.join("merged2");
    fs::create_dir(&merged).unwrap();
    let _g = mount_overlay(
        &format!("lowerdir={}:{}", out.display(), fx.lower.display()),
        &merged,
    );
    assert_eq!(
        fs::read_to_string(merged.join("big/data")).unwrap(),
        "payload"
    );
    assert_eq!(
        fs::metadata(merged.join("big/data"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!merged.join("olddir").exists());
    assert_eq!(fs::read_to_string(merged.join("newdir/f1")).unwrap(), "one");
    assert_eq!(
        fs::read_to_string(merged.join("newdir/added")).unwrap(),
        "new\n"
    );
    assert_eq!(fs::read_to_string(merged.join("stay")).unwrap(), "stay");

    let tarball = fx.root.join("layer.tar");
    layerdiff::commit_tar(&fx.upper, lowers, &tarball).unwrap();
    let unpacked = fx.root.join("unpacked");
    tar::Archive::new(fs::File::open(&tarball).unwrap())
        .unpack(&unpacked)
        .unwrap();
    assert_eq!(
        fs::read_to_string(unpacked.join("big/data")).unwrap(),
        "payload"
    );
    assert_eq!(
        fs::read_to_string(unpacked.join("newdir/sub/f2")).unwrap(),
        "two"
    );
    assert!(unpacked.join(".wh.olddir").exists());
    assert!(unpacked.join("newdir/.wh..wh..opq").exists());
}

/// The mountpoints a runtime creates in the upper (empty `/etc/hostname`, volume targets and
/// the new directories above them) are not the user's changes: diff and commit leave them out,
/// but keep anything the user put beside them.
#[test]
fn mountpoint_stubs_are_left_out_of_diff_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::write(lower.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/hostname"), "").unwrap();
    fs::create_dir_all(upper.join("proc")).unwrap();
    fs::create_dir_all(upper.join("srv/data/cache")).unwrap();
    fs::create_dir_all(upper.join("opt/vol")).unwrap();
    fs::write(upper.join("opt/notes"), "mine").unwrap();
    fs::write(upper.join("made"), "x").unwrap();
    let stubs: Vec<PathBuf> = ["proc", "etc/hostname", "srv/data/cache", "opt/vol"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let lowers = std::slice::from_ref(&lower);

    let all = layerdiff::diff(&upper, lowers).unwrap();
    assert!(all.iter().any(|c| c.path == Path::new("etc/hostname")));
    let shown: Vec<String> = layerdiff::without_stubs(all, &stubs)
        .iter()
        .map(|c| format!("{} /{}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(shown, ["A /made", "A /opt", "A /opt/notes"]);

    let out = dir.path().join("layer");
    layerdiff::commit_dir_without(&upper, lowers, &stubs, &out).unwrap();
    let mut got = Vec::new();
    walk_all(&out, &mut got);
    let mut got: Vec<String> = got
        .iter()
        .map(|p| p.strip_prefix(&out).unwrap().display().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["etc", "made", "opt", "opt/notes"]);

    let tarball = dir.path().join("layer.tar");
    layerdiff::commit_tar_without(&upper, lowers, &stubs, &tarball).unwrap();
    let mut names: Vec<String> = tar::Archive::new(fs::File::open(&tarball).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert!(
        !names.iter().any(|n| n.contains("hostname")
            || n.contains("srv")
            || n.contains("proc")
            || n.contains("vol")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.trim_end_matches('/') == "opt/notes"),
        "{names:?}"
    );
}
