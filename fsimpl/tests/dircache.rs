//! Directory listings stay right while they are cached (rcl-fs keeps merged listings per
//! directory and lets the kernel cache them): every change made through the mount shows in the
//! next listing, and open directory streams behave. Checked on kernel overlayfs (the reference)
//! and rcl-fs alike; everything inside a mount runs in subprocesses or [`union_mounts::within`].

#[macro_use]
mod union_mounts;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use union_mounts::{within, Fixture, Imp};

/// `ls -A` of `dir`, twice (the second one may come from a cache), checked equal.
fn ls(m: &union_mounts::Mounted, dir: &str) -> String {
    let a = m.sh(&format!("ls -A {dir}"));
    let b = m.sh(&format!("ls -A {dir}"));
    assert_eq!(a, b, "two listings of an unchanged {dir}");
    a
}

fn listing_follows_changes(imp: Imp) {
    let fx = Fixture::new(&[
        "f d/a 1\nf d/b 1\nd d/x\nf e/keep 1",
        "f d/b 2\nf d/c 2\nf d/x/in 2",
    ])
    .with_upper("f d/u u");
    let m = fx.mount(imp, "", "");
    assert_eq!(ls(&m, "d"), "a\nb\nc\nu\nx\n");
    assert_eq!(ls(&m, "e"), "keep\n");
    let steps: [(&str, &str, &str); 9] = [
        ("touch d/new", "a\nb\nc\nnew\nu\nx\n", "keep\n"),
        ("rm d/a", "b\nc\nnew\nu\nx\n", "keep\n"),
        ("mv d/b d/b2", "b2\nc\nnew\nu\nx\n", "keep\n"),
        ("mv d/c e/c", "b2\nnew\nu\nx\n", "c\nkeep\n"),
        (
            "mkdir d/sub && ln -s t d/sym",
            "b2\nnew\nsub\nsym\nu\nx\n",
            "c\nkeep\n",
        ),
        (
            "ln e/keep d/hard",
            "b2\nhard\nnew\nsub\nsym\nu\nx\n",
            "c\nkeep\n",
        ),
        ("rm -r d/x", "b2\nhard\nnew\nsub\nsym\nu\n", "c\nkeep\n"),
        (
            "mkdir d/x && mv d/u e/u",
            "b2\nhard\nnew\nsub\nsym\nx\n",
            "c\nkeep\nu\n",
        ),
        (
            "mv -T e/u d/new",
            "b2\nhard\nnew\nsub\nsym\nx\n",
            "c\nkeep\n",
        ),
    ];
    for (change, d, e) in steps {
        m.sh(change);
        assert_eq!(ls(&m, "d"), d, "d after {change}");
        assert_eq!(ls(&m, "e"), e, "e after {change}");
    }
    // The dir x came back empty (opaque over the lower x/in).
    assert_eq!(ls(&m, "d/x"), "");
    assert_eq!(
        m.sh("cat d/new"),
        "u\n",
        "the renamed-over file is the one moved"
    );
    // d_ino from (possibly cached) listings equals st_ino from lookup.
    let listed = m.sh("cd d && ls -1 -i -A | awk '{print $1\" \"$2}' | sort -k2");
    let stated = m.sh("cd d && for f in $(ls -A); do stat -c '%i %n' \"$f\"; done | sort -k2");
    assert_eq!(listed, stated);
}
both!(listing_follows_changes);

/// Reads every name from `dir` (a `DIR*`) until the end.
///
/// # Safety
/// `dir` must be a valid open `DIR*`.
unsafe fn read_all(dir: *mut libc::DIR) -> Vec<String> {
    let mut v = Vec::new();
    loop {
        // SAFETY: the caller's DIR* is valid; the name is copied out at once.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            return v;
        }
        // SAFETY: d_name is NUL-terminated inside the dirent readdir returned.
        let n = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        v.push(n.to_string_lossy().into_owned());
    }
}

fn open_stream_across_changes(imp: Imp) {
    let fx = Fixture::new(&["d d", "d d"]);
    for i in 0..400 {
        union_mounts::build(&fx.lowers[i % 2], &format!("f d/n{i:03} x"));
    }
    let m = fx.mount(imp, "", "");
    // Warm whatever caches there are.
    assert_eq!(m.sh("ls -A d | wc -l"), "400\n");
    let d = m.p("d");
    let (first, rest, rewound) = within(move || {
        let c = CString::new(d.clone().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: one DIR* we own, used and closed here; changes go through std::fs.
        unsafe {
            let dir = libc::opendir(c.as_ptr());
            assert!(!dir.is_null());
            let mut first = Vec::new();
            let mut pos = 0;
            while first.len() < 200 {
                let e = libc::readdir(dir);
                assert!(!e.is_null());
                first.push(
                    std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                );
                pos = libc::telldir(dir);
            }
            // Change the directory while the stream is open: add names, remove some already
            // read and some not yet read, rename one.
            for i in 0..20 {
                std::fs::write(d.join(format!("new{i:02}")), "n").unwrap();
            }
            let mut removed = Vec::new();
            for n in first.iter().filter(|n| n.starts_with('n')).take(5) {
                std::fs::remove_file(d.join(n)).unwrap();
                removed.push(n.clone());
            }
            std::fs::rename(d.join("n399"), d.join("renamed")).unwrap();
            removed.push("n399".into());
            libc::seekdir(dir, pos);
            let rest = read_all(dir);
            libc::rewinddir(dir);
            let rewound = read_all(dir);
            libc::closedir(dir);
            (first, rest, (rewound, removed))
        }
    });
    let (rewound, removed) = rewound;
    // Every name that neither came nor went is returned exactly once.
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for n in first.iter().chain(&rest) {
        *count.entry(n.clone()).or_default() += 1;
    }
    for i in 0..400 {
        let n = format!("n{i:03}");
        if removed.contains(&n) {
            continue;
        }
        assert_eq!(count.get(&n), Some(&1), "{n} once across the change");
    }
    // After rewinddir the stream shows the directory as it is now.
    let mut now: Vec<String> = rewound
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    now.sort();
    let mut want: Vec<String> = (0..400)
        .map(|i| format!("n{i:03}"))
        .filter(|n| !removed.contains(n))
        .chain((0..20).map(|i| format!("new{i:02}")))
        .chain(["renamed".to_string()])
        .collect();
    want.sort();
    assert_eq!(now, want, "rewinddir shows the changes");
    let listed = m.sh("ls -A d | wc -l");
    assert_eq!(listed, format!("{}\n", want.len()));
}
both!(open_stream_across_changes);

fn remount_lists_the_same(imp: Imp) {
    // A listing built in one mount is not carried to the next; the upper written by the
    // first mount merges the same way in the second.
    let fx = Fixture::new(&["f d/a 1\nf d/b 1", "f d/c 2"]);
    let m = fx.mount(imp, "", "");
    assert_eq!(ls(&m, "d"), "a\nb\nc\n");
    m.sh("rm d/a && touch d/z && mv d/c d/y");
    assert_eq!(ls(&m, "d"), "b\ny\nz\n");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(ls(&m, "d"), "b\ny\nz\n");
    let p: PathBuf = m.p("d");
    assert!(within(move || p.is_dir()));
}
both!(remount_lists_the_same);

fn xattr_values_of_every_size(imp: Imp) {
    // getxattr answers small values from a stack buffer and larger ones from the heap: both,
    // on lower files, upper files and directories, with size probes.
    let fx = Fixture::new(&["f lo 1\nd ldir"]).with_upper("f up u");
    for (i, rel) in ["lo", "ldir"].iter().enumerate() {
        let v = "v".repeat(1000 + 1500 * i);
        union_mounts::build(&fx.lowers[0], &format!("x {rel} user.big {v}"));
    }
    let m = fx.mount(imp, "", "");
    let p = m.p("up");
    within(move || {
        union_mounts::set_xattr(&p, "user.big", &[b'w'; 3000]).unwrap();
        union_mounts::set_xattr(&p, "user.small", b"s").unwrap();
    });
    for (rel, len) in [("lo", 1000), ("ldir", 2500), ("up", 3000)] {
        let p = m.p(rel);
        let (got, probe) = within(move || {
            let got = union_mounts::get_xattr(&p, "user.big").unwrap();
            let c = CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
            // SAFETY: valid C strings; a size probe with a NULL buffer.
            let probe = unsafe {
                libc::lgetxattr(c.as_ptr(), c"user.big".as_ptr(), std::ptr::null_mut(), 0)
            };
            (got.len(), probe)
        });
        assert_eq!((got, probe), (len, len as isize), "{rel}");
    }
    let p = m.p("up");
    assert_eq!(
        within(move || union_mounts::get_xattr(&p, "user.small")),
        Ok(b"s".to_vec())
    );
    let p = m.p("lo");
    let missing = within(move || union_mounts::get_xattr(&p, "security.capability"));
    assert_eq!(missing, Err(libc::ENODATA));
}
both!(xattr_values_of_every_size);

/// `(d_ino of ".", d_ino of "..")` as one readdir pass over `dir` returns them.
fn dot_inos(dir: &std::path::Path) -> (u64, u64) {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let (mut dot, mut dotdot) = (0, 0);
    // SAFETY: one DIR* we own, read to the end and closed here; each entry is read at once.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null(), "opendir {}", dir.display());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let n = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes();
            if n == b"." {
                dot = (*e).d_ino;
            } else if n == b".." {
                dotdot = (*e).d_ino;
            }
        }
        libc::closedir(d);
    }
    (dot, dotdot)
}

/// Checks that listings of each directory `rel` (listed twice: the second pass may come from
/// a cache) show `.` as its own st_ino and `..` as its parent's st_ino.
fn check_dots(m: &union_mounts::Mounted, rels: &[&str], when: &str) {
    for rel in rels {
        let d = m.p(rel);
        let (a, b, own, parent) = within(move || {
            use std::os::unix::fs::MetadataExt;
            let a = dot_inos(&d);
            let b = dot_inos(&d);
            let own = std::fs::metadata(&d).unwrap().ino();
            let parent = std::fs::metadata(d.parent().unwrap()).unwrap().ino();
            (a, b, own, parent)
        });
        assert_eq!(a, b, "{rel} {when}: two listings agree");
        assert_eq!(a.0, own, "{rel} {when}: d_ino of . is the dir's st_ino");
        assert_eq!(
            a.1, parent,
            "{rel} {when}: d_ino of .. is the parent's st_ino"
        );
    }
}

fn dotdot_follows_moved_dirs(imp: Imp) {
    // D: a lower-only directory (copied up and redirected when moved); E: an upper-only one;
    // parents in the lower (a, b), in the upper only (u1, u2) and merged (m).
    let fx = Fixture::new(&["f a/D/f 1\nd a/D/sub\nd b\nf m/x 1", "f m/y 2"])
        .with_upper("f u1/E/g u\nd u2\nd m");
    let m = fx.mount(imp, "redirect_dir=on", "");
    let all = ["a", "b", "m", "u1", "u2", "a/D", "a/D/sub", "u1/E"];
    check_dots(&m, &all, "at first");
    let moves = [
        ("a/D", "b/D"),   // lower dir, lower parent -> lower parent
        ("b/D", "u2/D"),  // -> upper-only parent
        ("u1/E", "m/E"),  // upper dir -> merged parent
        ("m/E", "a/E"),   // -> a lower parent (copied up on the way)
        ("u2/D", "m/D2"), // moved again, renamed too
        ("a/E", "u1/E"),  // back where it was
    ];
    let mut now: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    for (from, to) in moves {
        let (f, t) = (m.p(from), m.p(to));
        within(move || std::fs::rename(f, t)).unwrap();
        for p in now.iter_mut() {
            if let Some(rest) = p.strip_prefix(from) {
                if rest.is_empty() || rest.starts_with('/') {
                    *p = format!("{to}{rest}");
                }
            }
        }
        let rels: Vec<&str> = now.iter().map(String::as_str).collect();
        check_dots(&m, &rels, &format!("after mv {from} {to}"));
    }
    // RENAME_EXCHANGE of two directories in different parents.
    let (x, y) = (m.p("m/D2"), m.p("u1/E"));
    assert_eq!(
        within(move || union_mounts::renameat2(&x, &y, libc::RENAME_EXCHANGE)),
        Ok(())
    );
    assert_eq!(m.sh("cat u1/E/f m/D2/g"), "1\nu\n");
    check_dots(
        &m,
        &["m/D2", "u1/E", "u1/E/sub", "m", "u1"],
        "after exchange",
    );
    // A stream opened before the move and rewound after it.
    let (d, to, b) = (m.p("u1/E"), m.p("b/E"), m.p("b"));
    let (before, after, want) = within(move || {
        use std::os::unix::fs::MetadataExt;
        let c = CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: one DIR* we own, read, rewound and closed here.
        unsafe {
            let dir = libc::opendir(c.as_ptr());
            assert!(!dir.is_null());
            let dotdot = |dir: *mut libc::DIR| loop {
                let e = libc::readdir(dir);
                assert!(!e.is_null(), "no ..");
                if std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes() == b".." {
                    while !libc::readdir(dir).is_null() {}
                    break (*e).d_ino;
                }
            };
            let before = dotdot(dir);
            std::fs::rename(&d, &to).unwrap();
            libc::rewinddir(dir);
            let after = dotdot(dir);
            libc::closedir(dir);
            (before, after, std::fs::metadata(&b).unwrap().ino())
        }
    });
    assert_ne!(before, want);
    if m.imp == Imp::Kernel {
        // Kernel overlayfs (6.18) keeps the entries it read for an open stream, `..` too,
        // across rewinddir: it shows the old parent here. rcl-fs shows the directory as it
        // is now, as a fresh opendir would.
        assert!(after == before || after == want, "{after}");
    } else {
        assert_eq!(after, want, "rewinddir after the move shows the new ..");
    }
}
both!(dotdot_follows_moved_dirs);
