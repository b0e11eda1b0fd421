//! Union semantics, checked the same way against kernel overlayfs (the reference) and rcl-fs.
//!
//! Each `both!(check)` makes `check::kernel` and `check::rclfs`. Where kernel overlayfs needs a
//! mount option to offer a feature (redirect_dir, metacopy, index, userxattr) it gets it; checks
//! of rcl-fs-only features (`.wh.` files, id mapping) run against rcl-fs alone. The `cross`
//! tests at the end mount one implementation on the layers the other wrote.
//!
//! Checks that rcl-fs does not pass yet are `#[ignore = "rcl-fs: ..."]` with the reason; run
//! them with `cargo test -p fsimpl --test union -- --ignored`. Everything inside a mount is
//! reached through subprocesses or [`union_mounts::within`], both bounded by a timeout.

#[macro_use]
mod union_mounts;

use std::path::PathBuf;
use union_mounts::{disk_stat, get_xattr, within, Fixture, Imp};

/// Type and device numbers of an on-disk path, as stat shows them.
fn kind(p: PathBuf) -> String {
    disk_stat(&p, "%F %t %T")
}

const WHITEOUT: &str = "character special file 0 0";

// ---------------------------------------------------------------------------------------------

fn lookup_precedence(imp: Imp) {
    let fx = Fixture::new(&[
        "f a low1\nd d\nf d/y low1\nf only1 o1",
        "f a low2\nf b low2\nf d/x low2\nf d/y low2\nf only2 o2",
    ])
    .with_upper("f a up\nd d\nf d/z up");
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("cat a b only1 only2 d/x d/y d/z"),
        "up\nlow2\no1\no2\nlow2\nlow1\nup\n"
    );
    assert_eq!(m.sh("ls -A d"), "x\ny\nz\n");
}
both!(lookup_precedence);

fn many_layers(imp: Imp) {
    // 40 lower layers, as deep images have: each adds a file; shadowing, a whiteout and an
    // opaque dir deep in the stack.
    let descs: Vec<String> = (0..40)
        .map(|i| {
            let mut d = format!("f only{i:02} {i}\nf all {i}\nf d/x{i:02} {i}\n");
            if i == 5 {
                d.push_str("w only30\n");
            }
            if i == 10 {
                d.push_str("o d\n");
            }
            d
        })
        .collect();
    let refs: Vec<&str> = descs.iter().map(String::as_str).collect();
    let fx = Fixture::new(&refs);
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("cat all only00 only39"), "0\n0\n39\n");
    assert_eq!(m.sh("ls | grep -c only"), "39\n", "only30 is whited out");
    assert_eq!(
        m.sh("ls d | wc -l; ls d | tail -1"),
        "11\nx10\n",
        "d is opaque in layer 10"
    );
    m.sh("echo new >> only39 && rm only20");
    assert_eq!(m.sh("cat only39; ls | grep -c only"), "39\nnew\n38\n");
}
both!(many_layers);

fn root_dir_attributes(imp: Imp) {
    // The mount's root shows the upper root's attributes, and changes go there.
    let fx = Fixture::new(&["f a 1"]);
    union_mounts::build(&fx.lowers[0], "m . 750\nu . 7 8");
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("stat -c '%a %u %g' ."), "755 0 0\n");
    m.sh("chmod 711 . && chown 3:4 .");
    assert_eq!(m.sh("stat -c '%a %u %g' ."), "711 3 4\n");
    assert_eq!(disk_stat(&fx.upper, "%a %u %g"), "711 3 4");
    assert_eq!(disk_stat(&fx.lowers[0], "%a %u %g"), "750 7 8");
}
both!(root_dir_attributes);

fn whiteout_chardev(imp: Imp) {
    // Whiteouts in the upper and in a middle lower layer.
    let fx = Fixture::new(&["w b\nw dd\nf keep k", "f a a\nf b b\nd dd\nf dd/x x"])
        .with_upper("w a\nf new n");
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("ls -A"), "keep\nnew\n");
    for name in ["a", "b", "dd", "dd/x"] {
        let out = m.try_sh(&format!("stat {name}"));
        assert!(
            !out.success() && out.stderr.contains("No such file"),
            "{name}: {out:?}"
        );
    }
    // Names whited out in a lower come back empty-handed when recreated, and go again.
    m.sh("echo new > b && mkdir dd && echo A > a");
    assert_eq!(m.sh("cat a b; ls -A dd"), "A\nnew\n");
    m.sh("rm a b && rmdir dd");
    assert_eq!(m.sh("ls -A"), "keep\nnew\n");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("ls -A"), "keep\nnew\n");
}
both!(whiteout_chardev);

fn opaque_trusted_xattr(imp: Imp) {
    let fx = Fixture::new(&["o d\nf d/mid m\nd e\nf e/mid m", "f d/x x\nf e/low l"])
        .with_upper("o e\nf e/up u");
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("ls -A d"),
        "mid\n",
        "opaque lower hides lower layers below"
    );
    assert_eq!(m.sh("ls -A e"), "up\n", "opaque upper hides all lowers");
}
both!(opaque_trusted_xattr);

fn opaque_user_xattr(imp: Imp) {
    // Kernel overlayfs reads user.overlay.* only with `userxattr`.
    let fx = Fixture::new(&["ou d\nf d/mid m", "f d/x x\nf e/low l"]).with_upper("ou e\nf e/up u");
    let m = fx.mount(imp, "userxattr", "");
    assert_eq!(m.sh("ls -A d"), "mid\n");
    assert_eq!(m.sh("ls -A e"), "up\n");
}
both!(opaque_user_xattr);

fn readdir_merged(imp: Imp) {
    let fx = Fixture::new(&[
        "f a 1\nf b 1\nw c\nf d1/x 1",
        "f b 2\nf c 2\nf e 2\nf d1/y 2\nf d1/x 2",
    ])
    .with_upper("f a u\nw e\nf g u\nf d1/z u");
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("ls -f | sort"),
        ".\n..\na\nb\nd1\ng\n",
        "no dupes, whiteouts hidden"
    );
    assert_eq!(m.sh("ls -f d1 | sort"), ".\n..\nx\ny\nz\n");
    // d_ino from readdir must equal st_ino from lookup, before and after copy-ups.
    for (step, dir) in [(0, "."), (0, "d1"), (1, "."), (1, "d1")] {
        if step == 1 && dir == "." {
            m.sh("echo 2 >> b && echo 2 >> d1/y && mkdir d1/new && mv d1/x d1/x2");
        }
        let listed = m.sh(&format!(
            "cd {dir} && ls -1 -i -A | awk '{{print $1\" \"$2}}' | sort -k2"
        ));
        let stated = m.sh(&format!(
            "cd {dir} && for f in $(ls -A); do stat -c '%i %n' \"$f\"; done | sort -k2"
        ));
        assert_eq!(listed, stated, "d_ino vs st_ino in {dir}, step {step}");
    }
}
both!(readdir_merged);

fn copy_up_preserves_metadata(imp: Imp) {
    let fx = Fixture::new(&[
        "f f hello\nm f 640\nu f 1234 5678\nx f user.foo bar\nt f 978307200\nd dir\nu dir 42 43",
    ]);
    let m = fx.mount(imp, "", "");
    // Open for writing without writing: copies up, changes no time.
    m.sh(": >> f");
    assert_eq!(m.sh("stat -c '%a %u %g %Y' f"), "640 1234 5678 978307200\n");
    assert_eq!(m.sh("cat f"), "hello\n");
    let mp = m.p("f");
    assert_eq!(
        within(move || get_xattr(&mp, "user.foo")),
        Ok(b"bar".to_vec())
    );
    // The upper now holds a complete copy.
    assert_eq!(
        disk_stat(&fx.up("f"), "%F %a %u %g %Y %s"),
        "regular file 640 1234 5678 978307200 6"
    );
    assert_eq!(get_xattr(&fx.up("f"), "user.foo"), Ok(b"bar".to_vec()));
    // A real write lands in the upper; the lower is untouched.
    m.sh("echo more >> f");
    assert_eq!(m.sh("cat f"), "hello\nmore\n");
    assert_eq!(
        std::fs::read_to_string(fx.up("f")).unwrap(),
        "hello\nmore\n"
    );
    assert_eq!(
        std::fs::read_to_string(fx.lowers[0].join("f")).unwrap(),
        "hello\n"
    );
    // A parent copied up on the way keeps its owner.
    m.sh("echo x > dir/new");
    assert_eq!(disk_stat(&fx.up("dir"), "%u %g"), "42 43");
}
both!(copy_up_preserves_metadata);

fn copy_up_keeps_setuid(imp: Imp) {
    let fx = Fixture::new(&["f s x\nu s 1000 1000\nm s 6755\nd sg\nm sg 2775"]);
    let m = fx.mount(imp, "", "");
    m.sh(": >> s && echo y > sg/new");
    assert_eq!(m.sh("stat -c %a s sg"), "6755\n2775\n");
    assert_eq!(disk_stat(&fx.up("s"), "%a %u"), "6755 1000");
    assert_eq!(disk_stat(&fx.up("sg"), "%a"), "2775");
}
both!(copy_up_keeps_setuid);

fn no_partial_file_visible_during_copy_up(imp: Imp) {
    let fx = Fixture::new(&["big f 128"]);
    let lower = fx.lowers[0].join("f");
    let m = fx.mount(imp, "", "");
    // Readers keep checking size and data while the first write copies the file up.
    let script = format!(
        "(echo x >> f) & w=$!; bad=0; checks=0
         while kill -0 $w 2>/dev/null; do
             s=$(stat -c %s f); [ \"$s\" -lt 134217728 ] && bad=1
             cmp -s -n 1048576 f {l} || bad=1
             checks=$((checks + 1))
         done; wait $w || echo writer-failed; echo $bad; [ $checks -gt 0 ] && echo checked",
        l = lower.display()
    );
    assert_eq!(m.sh(&script), "0\nchecked\n");
    assert_eq!(m.sh("stat -c %s f"), "134217730\n");
}
both!(
    no_partial_file_visible_during_copy_up,
    rclfs_ignore = "rcl-fs (flaky): the writer's open fails with ETXTBSY when a reader opened the \
                    lower copy first (passthrough backing, fs.rs finish_open)"
);

fn metacopy_chmod_copies_no_data(imp: Imp) {
    let fx = Fixture::new(&["big f 64"]);
    let m = fx.mount(imp, "metacopy=on", "metacopy=on");
    m.sh("chmod 600 f");
    assert_eq!(m.sh("stat -c '%a %s' f"), "600 67108864\n");
    let blocks: u64 = disk_stat(&fx.up("f"), "%b").parse().unwrap();
    assert!(blocks < 128, "metacopy upper holds {blocks} blocks of data");
    m.sh(&format!("cmp f {}", fx.lowers[0].join("f").display()));
    // The first write copies the data.
    m.sh("printf x | dd of=f bs=1 seek=0 conv=notrunc 2>/dev/null");
    assert_eq!(m.sh("head -c 2 f | od -An -c | tr -d ' '"), "x002\n");
    assert_eq!(m.sh("stat -c '%a %s' f"), "600 67108864\n");
}
both!(metacopy_chmod_copies_no_data);

fn lower_layers_stay_untouched(imp: Imp) {
    lower_layers_untouched(imp, "");
}
both!(
    lower_layers_stay_untouched,
    rclfs_ignore = "rcl-fs: with passthrough (root), reading a lower file updates its atime (the \
                    kernel's backing file is opened without O_NOATIME)"
);

#[test]
fn rclfs_lower_layers_stay_untouched_passthrough_off() {
    rclfs_only(|| lower_layers_untouched(Imp::RclFs, "passthrough=off"));
}

fn lower_layers_untouched(imp: Imp, ropts: &str) {
    // Reads, copy-ups and truncating opens never change the lower layer, not even atimes
    // (kernel overlayfs opens lower files with O_NOATIME). An old atime makes relatime update
    // it on any read.
    let fx = Fixture::new(&["f r read\nf c copy\nf t trunc\nd d\nf d/x x"]);
    for n in ["r", "c", "t", "d", "d/x"] {
        testkit::sh(
            &format!("touch -a -d 2000-01-01 {}", fx.lowers[0].join(n).display()),
            union_mounts::STEP,
        )
        .assert_ok();
    }
    let snapshot = || {
        testkit::sh(
            &format!(
                "cd {} && find . | sort | xargs stat -c '%n %X %Y %Z %s'",
                fx.lowers[0].display()
            ),
            union_mounts::STEP,
        )
        .stdout
    };
    let before = snapshot();
    let m = fx.mount(imp, "", ropts);
    m.sh("cat r d/x > /dev/null && ls -l d > /dev/null && echo more >> c && : > t && touch d/new");
    m.unmount();
    assert_eq!(snapshot(), before, "the lower layer changed");
}

/// O_TRUNC of a lower file must not read its data. Observed with inotify on the lower files:
/// IN_ACCESS means their data was read; a plain copy-up (c) is the control that events arrive.
/// rcl-fs only: kernel overlayfs copies up through internal files that raise no events.
#[test]
fn rclfs_open_trunc_reads_no_lower_data() {
    rclfs_only(|| open_trunc_reads_no_lower_data(Imp::RclFs));
}

fn open_trunc_reads_no_lower_data(imp: Imp) {
    let fx = Fixture::new(&["big t 16\nbig c 16"]);
    // SAFETY: plain inotify syscalls on an fd owned here; paths are valid C strings.
    let ino = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(ino >= 0);
    let watch = |n: &str| {
        let c = std::ffi::CString::new(fx.lowers[0].join(n).into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: see above.
        unsafe { libc::inotify_add_watch(ino, c.as_ptr(), libc::IN_ACCESS) }
    };
    let (wt, wc) = (watch("t"), watch("c"));
    let m = fx.mount(imp, "", "");
    m.sh(": > t && echo x >> c");
    m.unmount();
    let mut buf = vec![0u8; 65536];
    // SAFETY: reading into a buffer of the given length.
    let n = unsafe { libc::read(ino, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(ino) };
    let mut accessed = std::collections::BTreeSet::new();
    let mut off = 0usize;
    let hdr = std::mem::size_of::<libc::inotify_event>();
    while n > 0 && off + hdr <= n as usize {
        // SAFETY: the kernel wrote whole inotify_event records; read_unaligned copes with any
        // alignment.
        let ev: libc::inotify_event =
            unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
        if ev.mask & libc::IN_ACCESS != 0 {
            accessed.insert(ev.wd);
        }
        off += hdr + ev.len as usize;
    }
    if !accessed.contains(&wc) {
        testkit::skip!("copy-up raised no IN_ACCESS on the lower file: reads cannot be observed");
    }
    assert!(!accessed.contains(&wt), "O_TRUNC open read the lower data");
}

fn open_trunc_of_lower(imp: Imp) {
    let fx = Fixture::new(&["big f 8"]);
    let m = fx.mount(imp, "", "");
    m.sh(": > f");
    assert_eq!(m.sh("stat -c %s f"), "0\n");
    assert_eq!(disk_stat(&fx.up("f"), "%F %s"), "regular empty file 0");
    assert_eq!(disk_stat(&fx.lowers[0].join("f"), "%s"), "8388608");
    m.sh("echo new > f");
    assert_eq!(m.sh("cat f"), "new\n");
}
both!(open_trunc_of_lower);

fn unlink_rmdir_leave_whiteouts(imp: Imp) {
    let fx = Fixture::new(&["f a 1\nd e\nf d2/x 1\nd d2/sub\nf d3/y 1"]);
    let m = fx.mount(imp, "", "");
    m.sh("rm a && rmdir e && rm -r d2");
    for n in ["a", "e", "d2"] {
        assert_eq!(kind(fx.up(n)), WHITEOUT, "{n}");
    }
    assert_eq!(m.sh("ls -A"), "d3\n");
    let out = m.try_sh("rmdir d3");
    assert!(
        !out.success() && out.stderr.contains("Directory not empty"),
        "{out:?}"
    );
    // A dir whose lower entries are all whited out is empty.
    m.sh("rm d3/y && rmdir d3");
    assert_eq!(m.sh("ls -A"), "");
    // Names come back on create.
    m.sh("echo again > a && mkdir e");
    assert_eq!(m.sh("cat a; ls -A"), "again\na\ne\n");
}
both!(unlink_rmdir_leave_whiteouts);

fn mkdir_over_whiteout_is_opaque(imp: Imp) {
    let fx = Fixture::new(&["f d/x 1\nf d/sub/y 1"]);
    let m = fx.mount(imp, "", "");
    m.sh("rm -r d && mkdir d");
    assert_eq!(m.sh("ls -A d"), "");
    assert_eq!(
        get_xattr(&fx.up("d"), "trusted.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("ls -A d"), "", "opaque after remount");
}
both!(mkdir_over_whiteout_is_opaque);

fn rename_lower_dir(imp: Imp) {
    // Kernel overlayfs gives EXDEV here unless redirect_dir=on.
    let fx = Fixture::new(&["f d/x hi\nf d/sub/y deep\nf f plain", "f d/low bottom"]);
    let m = fx.mount(imp, "redirect_dir=on", "");
    let (a, b) = (m.p("d"), m.p("e"));
    within(move || std::fs::rename(a, b)).expect("rename of a lower dir");
    let (a, b) = (m.p("f"), m.p("g"));
    within(move || std::fs::rename(a, b)).expect("rename of a lower file");
    let view = "ls -A; ls -A e; cat e/x e/sub/y e/low g";
    let want = "e\ng\nlow\nsub\nx\nhi\ndeep\nbottom\nplain\n";
    assert_eq!(m.sh(view), want);
    // The old name is free: a new dir there is empty (opaque), not the lower dir again.
    m.sh("mkdir d && echo n > d/n");
    assert_eq!(m.sh("ls -A d"), "n\n");
    // Moved again, deeper, then listed: children from every layer follow.
    m.sh("mkdir -p p/q && mv e p/q/e2");
    assert_eq!(
        m.sh("ls -A p/q/e2; cat p/q/e2/low"),
        "low\nsub\nx\nbottom\n"
    );
    m.sh("mv p/q/e2 e");
    m.unmount();
    let m = fx.mount(imp, "redirect_dir=on", "");
    assert_eq!(
        m.sh(view),
        "d\ne\ng\np\nlow\nsub\nx\nhi\ndeep\nbottom\nplain\n",
        "after remount"
    );
    assert_eq!(m.sh("ls -A d"), "n\n");
}
both!(rename_lower_dir);

fn redirects_across_remounts(imp: Imp) {
    let fx = Fixture::new(&["f d/x x\nf d/y y\nf d/z z\nd other/deep", "f d/w w"]);
    let opts = "redirect_dir=on";
    let m = fx.mount(imp, opts, "");
    m.sh("echo 2 >> d/x && mv d e && rm e/y");
    m.unmount();
    let m = fx.mount(imp, opts, "");
    assert_eq!(m.sh("ls -A e; cat e/x"), "w\nx\nz\nx\n2\n");
    m.sh("mv e other/deep/f && echo n > other/deep/f/n");
    m.unmount();
    let m = fx.mount(imp, opts, "");
    let view = "ls -A; ls -A other/deep/f; cat other/deep/f/x other/deep/f/w";
    assert_eq!(m.sh(view), "other\nn\nw\nx\nz\nx\n2\nw\n");
    // Removing the moved dir and making a new one there gives an empty dir.
    m.sh("rm -r other/deep/f && mkdir other/deep/f && mkdir d");
    m.unmount();
    let m = fx.mount(imp, opts, "");
    assert_eq!(m.sh("ls -A other/deep/f d"), "d:\n\nother/deep/f:\n");
}
both!(redirects_across_remounts);

fn rename_files_across_layers(imp: Imp) {
    let fx = Fixture::new(&["f a A\nf b B\nf w W\nd d\nf d/x X"]).with_upper("w w");
    let m = fx.mount(imp, "", "");
    m.sh("mv a b && echo new > n && mv n w && mv d/x y");
    let view = "ls -A; ls -A d; cat b w y";
    let want = "b\nd\nw\ny\nA\nnew\nX\n";
    assert_eq!(m.sh(view), want);
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh(view), want, "after remount");
}
both!(rename_files_across_layers);

fn rename_flags(imp: Imp) {
    let fx = Fixture::new(&["f a A\nf b B"]);
    let m = fx.mount(imp, "", "");
    let (a, b, c) = (m.p("a"), m.p("b"), m.p("c"));
    let noreplace = libc::RENAME_NOREPLACE;
    let exchange = libc::RENAME_EXCHANGE;
    let r = within({
        let (a, b) = (a.clone(), b.clone());
        move || union_mounts::renameat2(&a, &b, noreplace)
    });
    assert_eq!(r, Err(libc::EEXIST));
    let r = within({
        let (a, c) = (a.clone(), c.clone());
        move || union_mounts::renameat2(&a, &c, noreplace)
    });
    assert_eq!(r, Ok(()));
    let r = within(move || union_mounts::renameat2(&c, &b, exchange));
    assert_eq!(r, Ok(()));
    assert_eq!(m.sh("ls -A; cat b c"), "b\nc\nA\nB\n");
}
both!(rename_flags);

fn ino_stable_across_copy_up_and_remount(imp: Imp) {
    let fx = Fixture::new(&["f a 1\nf d/x 1\nf d/y 1"]);
    let m = fx.mount(imp, "", "");
    let stat = "stat -c %i a d d/x d/y";
    let before = m.sh(stat);
    m.sh("echo 2 >> a && echo 2 >> d/x && chmod 600 d/y");
    assert_eq!(m.sh(stat), before, "after copy-up");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh(stat), before, "after remount");
}
both!(ino_stable_across_copy_up_and_remount);

fn hard_links_survive_copy_up(imp: Imp) {
    // Kernel overlayfs keeps lower hard links together only with index=on.
    let fx = Fixture::new(&["f a data\nh b a\nf p pp\nh q p"]);
    let m = fx.mount(imp, "index=on", "");
    let same = "[ $(stat -c %i a) = $(stat -c %i b) ] && stat -c %h a b";
    assert_eq!(m.sh(same), "2\n2\n", "lower aliases");
    m.sh("echo more >> a");
    assert_eq!(m.sh("cat b"), "data\nmore\n", "alias sees the write");
    assert_eq!(m.sh(same), "2\n2\n", "still one inode after copy-up");
    m.unmount();
    let m = fx.mount(imp, "index=on", "");
    assert_eq!(m.sh(same), "2\n2\n", "after remount");
    assert_eq!(m.sh("cat b"), "data\nmore\n");
    m.sh("rm a");
    assert_eq!(m.sh("stat -c %h b; cat b"), "1\ndata\nmore\n");
    // A renamed alias, then a chmod of the other: still one inode.
    m.sh("mv p r && echo z >> r && chmod 600 q");
    assert_eq!(m.sh("cat q; stat -c '%a %h' r q"), "pp\nz\n600 2\n600 2\n");
}
both!(hard_links_survive_copy_up);

fn hard_link_survives_unlink_of_other_name(imp: Imp) {
    let fx = Fixture::new(&["d d"]);
    let m = fx.mount(imp, "", "");
    m.sh("echo n > n1 && ln n1 n2 && ln n1 d/n3 && rm n1");
    assert_eq!(m.sh("cat n2 d/n3; stat -c %h n2"), "n\nn\n2\n");
    m.sh("rm n2");
    assert_eq!(m.sh("cat d/n3; stat -c %h d/n3"), "n\n1\n");
}
both!(hard_link_survives_unlink_of_other_name);

fn link_of_lower_file(imp: Imp) {
    let fx = Fixture::new(&["f a data"]);
    let m = fx.mount(imp, "", "");
    m.sh("ln a c");
    let same = "[ $(stat -c %i a) = $(stat -c %i c) ] && stat -c %h a c";
    assert_eq!(m.sh(same), "2\n2\n");
    m.sh("echo more >> c");
    assert_eq!(m.sh("cat a"), "data\nmore\n");
    m.sh("rm a");
    assert_eq!(m.sh("stat -c %h c; cat c"), "1\ndata\nmore\n");
}
both!(link_of_lower_file);

fn special_files(imp: Imp) {
    let fx = Fixture::new(&["l ln target\np fifo\nc dev 1 3\ns sock"]);
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("stat -c '%F' ln fifo dev sock; readlink ln; stat -c '%t %T' dev"),
        "symbolic link\nfifo\ncharacter special file\nsocket\ntarget\n1 3\n"
    );
    m.sh("mkfifo f2 && mknod d2 c 1 5 && ln -s xyz l2");
    let sp = m.p("s2");
    let echoed = within(move || {
        use std::io::{Read, Write};
        // Bind, then connect through the path in the mount and talk.
        let l = std::os::unix::net::UnixListener::bind(&sp).expect("bind socket");
        let mut c = std::os::unix::net::UnixStream::connect(&sp).expect("connect");
        let (mut a, _) = l.accept().unwrap();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&echoed, b"ping");
    assert_eq!(
        m.sh("stat -c '%F' f2 d2 l2 s2; readlink l2; stat -c '%t %T' d2"),
        "fifo\ncharacter special file\nsymbolic link\nsocket\nxyz\n1 5\n"
    );
    assert_eq!(kind(fx.up("f2")), "fifo 0 0");
    assert_eq!(kind(fx.up("d2")), "character special file 1 5");
    assert_eq!(kind(fx.up("s2")), "socket 0 0");
    assert_eq!(
        std::fs::read_link(fx.up("l2")).unwrap(),
        PathBuf::from("xyz")
    );
    // chown of a lower symlink copies it up as a symlink.
    m.sh("chown -h 7:8 ln");
    assert_eq!(disk_stat(&fx.up("ln"), "%F %u %g"), "symbolic link 7 8");
    assert_eq!(m.sh("readlink ln"), "target\n");
}
both!(special_files);

fn xattrs(imp: Imp) {
    let fx = Fixture::new(&["f f 1\nx f user.a one\nd d\nx d user.dir yes\nf d/child 1"]);
    let m = fx.mount(imp, "", "");
    let f = m.p("f");
    let (names, a, dir) = within({
        let (f, d) = (f.clone(), m.p("d"));
        move || {
            (
                union_mounts::list_xattr(&f),
                get_xattr(&f, "user.a"),
                get_xattr(&d, "user.dir"),
            )
        }
    });
    assert_eq!(a, Ok(b"one".to_vec()));
    assert_eq!(dir, Ok(b"yes".to_vec()));
    let names = names.unwrap();
    assert!(names.contains(&"user.a".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("overlay")),
        "private xattrs shown: {names:?}"
    );
    // Overlay markers cannot be forged through the mount (rcl-fs refuses with EPERM, the
    // kernel stores an escaped trusted.overlay.overlay.* name): the dir stays merged.
    let d = m.p("d");
    let forged = within(move || union_mounts::set_xattr(&d, "trusted.overlay.opaque", b"y"));
    assert!(matches!(forged, Ok(()) | Err(libc::EPERM)), "{forged:?}");
    let (set, rm, after_rm, listed) = within(move || {
        let set = union_mounts::set_xattr(&f, "user.b", b"two");
        let rm = union_mounts::remove_xattr(&f, "user.a");
        (
            set,
            rm,
            get_xattr(&f, "user.a"),
            union_mounts::list_xattr(&f),
        )
    });
    assert_eq!((set, rm), (Ok(()), Ok(())));
    assert_eq!(after_rm, Err(libc::ENODATA));
    let listed = listed.unwrap();
    assert!(listed.contains(&"user.b".to_string()) && !listed.contains(&"user.a".to_string()));
    assert_eq!(get_xattr(&fx.up("f"), "user.b"), Ok(b"two".to_vec()));
    assert_eq!(get_xattr(&fx.up("f"), "user.a"), Err(libc::ENODATA));
    assert_eq!(
        get_xattr(&fx.lowers[0].join("f"), "user.a"),
        Ok(b"one".to_vec())
    );
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("ls -A d"),
        "child\n",
        "forged opaque marker took effect"
    );
}
both!(xattrs);

fn name_too_long(imp: Imp) {
    let fx = Fixture::new(&["f a 1"]);
    let m = fx.mount(imp, "", "");
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    m.sh(&format!(
        "touch {n255} && stat {n255} >/dev/null && mkdir d && touch d/{n255}"
    ));
    for cmd in ["touch", "stat", "mkdir"] {
        let out = m.try_sh(&format!("{cmd} {n256}"));
        assert!(
            !out.success() && out.stderr.contains("File name too long"),
            "{cmd}: {out:?}"
        );
    }
}
both!(name_too_long);

fn path_near_4096_bytes(imp: Imp) {
    // A lower tree whose deepest file sits ~3900 bytes below the mountpoint.
    let comp = "c".repeat(200);
    let deep: String = (0..19).map(|_| comp.as_str()).collect::<Vec<_>>().join("/");
    let fx = Fixture::new(&[&format!("f {deep}/low old")]);
    let m = fx.mount(imp, "", "");
    let full = m.p(&deep);
    assert!(full.as_os_str().len() > 3800 && full.as_os_str().len() < 4080);
    // Copy-up of the deep file (and all its parents), then new files at that depth.
    m.sh(&format!(
        "echo new >> {deep}/low && echo x > {deep}/up && cat {deep}/low {deep}/up"
    ));
    assert_eq!(m.sh(&format!("cat {deep}/low {deep}/up")), "old\nnew\nx\n");
    let up = fx.up(&deep);
    assert_eq!(std::fs::read_to_string(up.join("up")).unwrap(), "x\n");
    // Renaming and removing the whole deep tree.
    m.sh(&format!("mv {comp} moved && rm -r moved"));
    assert_eq!(m.sh("ls -A"), "");
}
both!(path_near_4096_bytes);

fn nlink_of_open_unlinked_file(imp: Imp) {
    let fx = Fixture::new(&["f low 1"]);
    let m = fx.mount(imp, "", "");
    m.sh("echo 1 > up");
    let (p, q) = (m.p("up"), m.p("low"));
    let (n_up, n_low) = within(move || {
        use std::os::unix::fs::MetadataExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        let g = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&q)
            .unwrap();
        std::fs::remove_file(&q).unwrap();
        (f.metadata().unwrap().nlink(), g.metadata().unwrap().nlink())
    });
    assert_eq!((n_up, n_low), (0, 0));
    // An open unlinked file still reads, and takes writes.
    let r = m.p("r");
    m.sh("echo keep > r");
    let (before, after) = within(move || {
        use std::io::{Read, Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&r)
            .unwrap();
        std::fs::remove_file(&r).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        f.write_all(b"more\n").unwrap();
        f.rewind().unwrap();
        let mut t = String::new();
        f.read_to_string(&mut t).unwrap();
        (s, t)
    });
    assert_eq!(
        (before.as_str(), after.as_str()),
        ("keep\n", "keep\nmore\n")
    );
}
both!(nlink_of_open_unlinked_file);

fn mmap_write(imp: Imp) {
    let fx = Fixture::new(&["f a hello world"]);
    let m = fx.mount(imp, "", "");
    let p = m.p("a");
    within(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        // SAFETY: a shared mapping of the file's first 12 bytes (its size), written then unmapped
        // while `f` is open.
        unsafe {
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                12,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(
                ptr,
                libc::MAP_FAILED,
                "mmap: {}",
                std::io::Error::last_os_error()
            );
            *(ptr as *mut u8) = b'H';
            assert_eq!(libc::msync(ptr, 12, libc::MS_SYNC), 0);
            libc::munmap(ptr, 12);
        }
    });
    assert_eq!(m.sh("cat a"), "Hello world\n");
    m.unmount();
    assert_eq!(
        std::fs::read_to_string(fx.up("a")).unwrap(),
        "Hello world\n"
    );
}
both!(mmap_write);

fn fallocate_and_seek_hole(imp: Imp) {
    let fx = Fixture::new(&["f a 1"]);
    let m = fx.mount(imp, "", "");
    m.sh("fallocate -l 1048576 new && fallocate -l 65536 a");
    assert_eq!(m.sh("stat -c %s new a"), "1048576\n65536\n");
    m.sh("truncate -s 8M sparse && printf x | dd of=sparse bs=1 seek=4194304 conv=notrunc 2>/dev/null");
    let p = m.p("sparse");
    let (data, hole) = within(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&p).unwrap();
        // SAFETY: lseek on an fd we own.
        unsafe {
            (
                libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA),
                libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE),
            )
        }
    });
    assert_eq!((data, hole), (4194304, 0));
}
both!(fallocate_and_seek_hole);

fn statfs_reports_upper(imp: Imp) {
    let fx = Fixture::new(&["f a 1"]);
    let m = fx.mount(imp, "", "");
    let mine = m.sh("stat -f -c '%S %b %l' .");
    assert_eq!(mine.trim(), disk_stat_f(&fx.upper));
}
both!(statfs_reports_upper);

fn disk_stat_f(p: &std::path::Path) -> String {
    let out = testkit::run_timeout(
        std::process::Command::new("stat")
            .args(["-f", "-c", "%S %b %l"])
            .arg(p),
        union_mounts::STEP,
    );
    out.stdout.trim().to_string()
}

fn read_only_gives_erofs(imp: Imp) {
    let fx = Fixture::new(&["f a 1\nd d", "f low 2"]);
    let m = fx.mount_ro(imp);
    let check = |m: &union_mounts::Mounted| {
        assert_eq!(m.sh("cat a"), "1\n");
        assert_eq!(m.sh("test -w a && echo writable || echo no"), "no\n");
        for cmd in [
            "touch new",
            "rm a",
            "mkdir x",
            "rmdir d",
            "chmod 600 a",
            "sh -c 'echo >> a'",
        ] {
            let out = m.try_sh(cmd);
            assert!(
                !out.success() && out.stderr.contains("Read-only file system"),
                "{cmd}: {out:?}"
            );
        }
    };
    check(&m);
    m.unmount();
    // `ro` with an upper: the upper is shown but never written.
    union_mounts::build(&fx.upper, "f u up");
    let m = fx.mount_with(imp, &format!("{},ro", fx.rw_opts()), "", "");
    assert_eq!(m.sh("cat u"), "up\n");
    check(&m);
    assert!(!fx.up("a").exists() && !fx.up("new").exists());
}
both!(read_only_gives_erofs);

fn readdir_large_merged(imp: Imp) {
    // More entries than one readdir reply holds, overlapping across layers.
    let fx = Fixture::new(&["d big", "d big"]).with_upper("d big");
    for i in 0..1500 {
        std::fs::write(fx.lowers[0].join(format!("big/top-{i:04}")), "t").unwrap();
        std::fs::write(fx.lowers[1].join(format!("big/low-{i:04}")), "l").unwrap();
        if i % 2 == 0 {
            std::fs::write(fx.lowers[1].join(format!("big/top-{i:04}")), "dup").unwrap();
        }
        if i % 3 == 0 {
            union_mounts::mknod_chr(&fx.upper.join(format!("big/low-{i:04}")), 0, 0);
        }
    }
    let m = fx.mount(imp, "", "");
    let out = m.sh(
        "ls -f big | grep -v '^\\.' | sort | uniq -c | awk '$1 != 1' | wc -l; ls -A big | wc -l",
    );
    assert_eq!(
        out, "0\n2500\n",
        "duplicates, then total (1500 + 1500 - 500 whited out)"
    );
}
both!(readdir_large_merged);

fn concurrent_copy_up(imp: Imp) {
    let fx = Fixture::new(&["big f 16\nf g 0"]);
    let m = fx.mount(imp, "", "");
    m.sh("for i in 1 2 3 4 5 6 7 8; do (echo $i >> f; echo $i >> g) & done; wait");
    assert_eq!(m.sh("stat -c %s f"), format!("{}\n", (16 << 20) + 16));
    assert_eq!(m.sh("sort -n g | tr -d '\\n'"), "012345678");
    m.sh(&format!(
        "cmp -n {} f {}",
        16 << 20,
        fx.lowers[0].join("f").display()
    ));
}
both!(concurrent_copy_up);

fn parallel_namespace_storm(imp: Imp) {
    // Four writers create, rename, copy up and delete in shared lower directories at once.
    let mut lower = String::new();
    for i in 0..4 {
        for n in 0..50 {
            lower.push_str(&format!("f d/l{i}-{n} {n}\n"));
        }
    }
    let fx = Fixture::new(&[&lower]);
    let m = fx.mount(imp, "", "");
    let worker = r#"i=$1; n=0
        while [ $n -lt 50 ]; do
            echo $n > d/w$i-$n && mv d/w$i-$n d/r$i-$n && echo x >> d/l$i-$n || exit 1
            if [ $((n % 2)) = 0 ]; then rm d/r$i-$n d/l$i-$n || exit 1; fi
            ls d > /dev/null || exit 1
            n=$((n + 1))
        done"#;
    m.sh(&format!(
        "pids=; for i in 0 1 2 3; do sh -c '{worker}' w $i & pids=\"$pids $!\"; done; \
         for p in $pids; do wait $p || exit 1; done"
    ));
    let out = m.sh("ls d | wc -l; cat d/r3-49 d/l2-49; ls d | grep -c '^w' || true");
    assert_eq!(out, "200\n49\n49\nx\n0\n");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("ls d | wc -l; cat d/r3-49 d/l2-49; ls d | grep -c '^w' || true"),
        out
    );
}
both!(parallel_namespace_storm);

fn fd_ops_follow_renamed_files(imp: Imp) {
    // Operations through a descriptor (and on the inode by its new name) reach the file it
    // was opened on, after that file was renamed and its old name reused.
    let fx = Fixture::new(&["f low lower\nd d"]);
    let m = fx.mount(imp, "", "");
    m.sh("echo upper > up");
    let root = m.mnt.clone();
    within(move || {
        use std::io::{Seek, Write};
        use std::os::unix::fs::PermissionsExt;
        for name in ["low", "up"] {
            let p = root.join(name);
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap();
            let moved = root.join(format!("d/{name}-moved"));
            std::fs::rename(&p, &moved).unwrap();
            std::fs::write(&p, "new\n").unwrap();
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .unwrap();
            f.set_len(3).unwrap();
            f.seek(std::io::SeekFrom::End(0)).unwrap();
            f.write_all(b"+\n").unwrap();
            drop(f);
        }
    });
    assert_eq!(
        m.sh("cat d/low-moved d/up-moved low up; stat -c %a d/low-moved d/up-moved low up"),
        "low+\nupp+\nnew\nnew\n600\n600\n644\n644\n"
    );
}
both!(fd_ops_follow_renamed_files);

fn held_lower_dir_renamed_under_a_cwd(imp: Imp) {
    let fx = Fixture::new(&["f d/x x\nf d/sub/y y"]);
    let m = fx.mount(imp, "redirect_dir=on", "");
    let out =
        m.sh("cd d/sub && (cd \"$M\" && mv d d.old && mkdir d) && echo n > new && cat y && ls -A");
    assert_eq!(out, "y\nnew\ny\n");
    assert_eq!(m.sh("ls -A d d.old/sub"), "d:\n\nd.old/sub:\nnew\ny\n");
}
both!(held_lower_dir_renamed_under_a_cwd);

fn odd_names(imp: Imp) {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let names: Vec<&[u8]> = vec![
        b" lead",
        b"new\nline",
        b"back\\slash",
        b"\xff\xfe-not-utf8",
        b".wh",
        b"..wh.x",
        b"wh.x",
        b"-dash",
        b"*star?",
        b"tab\tx",
    ];
    let fx = Fixture::new(&["d low", "d low"]);
    for n in &names {
        std::fs::write(fx.lowers[1].join("low").join(OsStr::from_bytes(n)), n).unwrap();
    }
    let m = fx.mount(imp, "", "");
    let root = m.mnt.clone();
    let owned: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    let (listed, contents, made) = within(move || {
        let low = root.join("low");
        let mut listed: Vec<Vec<u8>> = std::fs::read_dir(&low)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        listed.sort();
        let contents: Vec<Vec<u8>> = owned
            .iter()
            .map(|n| std::fs::read(low.join(OsStr::from_bytes(n))).unwrap())
            .collect();
        let up = root.join("up");
        std::fs::create_dir(&up).unwrap();
        for n in &owned {
            std::fs::write(up.join(OsStr::from_bytes(n)), n).unwrap();
            // Copy-up under the odd name too.
            std::fs::OpenOptions::new()
                .append(true)
                .open(low.join(OsStr::from_bytes(n)))
                .unwrap();
        }
        let mut made: Vec<Vec<u8>> = std::fs::read_dir(&up)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        made.sort();
        (listed, contents, made)
    });
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(made, want);
    for (n, c) in names.iter().zip(&contents) {
        assert_eq!(c.as_slice(), *n);
        assert!(
            fx.up("low").join(OsStr::from_bytes(n)).exists(),
            "{n:?} not copied up"
        );
    }
}
both!(odd_names);

fn posix_odds_and_ends(imp: Imp) {
    let fx = Fixture::new(&[
        "f a 12345\nf b b\nd d 700\nf d/x x\nf e e\nt e 1000000000\nd ld\nt ld 1000000000",
    ]);
    let m = fx.mount(imp, "", "");
    // O_EXCL on a lower name.
    let out = m.try_sh("set -C; echo > a");
    assert!(!out.success() && out.stderr.contains("exists"), "{out:?}");
    // truncate, rename over a lower file, chmod of a lower dir, utimes of a lower file.
    m.sh("truncate -s 2 a && mv a b && chmod 751 d && touch -m -d @1234567890 e");
    assert_eq!(m.sh("cat b; echo; ls -A"), "12\nb\nd\ne\nld\n");
    assert_eq!(m.sh("stat -c '%a' d; stat -c '%Y' e"), "751\n1234567890\n");
    // A name changes type: file -> dir, dir -> file.
    m.sh("rm b && mkdir b && echo y > b/y && rm -r d && echo now-a-file > d");
    assert_eq!(m.sh("cat b/y d; ls -A b"), "y\nnow-a-file\ny\n");
    // readdir's d_type follows the change (find trusts d_type).
    assert_eq!(
        m.sh("find . -mindepth 1 -maxdepth 1 -type d | sort; echo; find . -maxdepth 1 -type f | sort"),
        "./b\n./ld\n\n./d\n./e\n"
    );
    // O_APPEND writes land at the end.
    m.sh("echo 1 >> e && echo 2 >> e");
    assert_eq!(m.sh("cat e"), "e\n1\n2\n");
    // Creating in a lower directory updates its mtime.
    assert_eq!(m.sh("stat -c %Y ld"), "1000000000\n");
    m.sh("echo n > ld/new");
    let mtime: u64 = m.sh("stat -c %Y ld").trim().parse().unwrap();
    assert!(mtime > 1000000000, "dir mtime not updated: {mtime}");
}
both!(posix_odds_and_ends);

fn no_host_symlink_following(imp: Imp) {
    // A directory held open (as a cwd) is swapped for a symlink to a host directory; creating
    // a file through the held directory must land in the directory itself, never in the target.
    let fx = Fixture::new(&["d base"]);
    let victim = fx.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let m = fx.mount(imp, "", "");
    let script = format!(
        "mkdir d && cd d && (cd \"$M\" && mv d d.old && ln -s {v} d) && echo pwn > newfile \
         && mkdir newdir && ln -s x newlink && cat newfile",
        v = victim.display()
    );
    assert_eq!(m.sh(&script), "pwn\n");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "wrote through a symlink"
    );
    assert_eq!(
        m.sh("ls -A d.old; readlink d"),
        format!("newdir\nnewfile\nnewlink\n{}\n", victim.display())
    );
    assert_eq!(
        std::fs::read_to_string(fx.up("d.old/newfile")).unwrap(),
        "pwn\n"
    );
}
both!(no_host_symlink_following);

fn permissions_for_other_users(imp: Imp) {
    // rcl-fs needs allow_other for other users to enter at all (FUSE rule); then the kernel
    // checks permissions (default_permissions) as it does on overlayfs.
    let (uid, gid) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let fx = Fixture::new(&[
        "f pub readable\nm pub 644\nf secret s\nm secret 600\nd ro 755\nd open 777\nd mine 755",
    ]);
    union_mounts::build(
        &fx.lowers[0],
        &format!("u mine {uid} {gid}\nd deep/er 755\nd deep/er/own 755\nu deep/er/own {uid} {gid}"),
    );
    let m = fx.mount(imp, "", "allow_other");
    let script = "cd \"$M\"; cat pub; cat secret 2>&1 | grep -c 'Permission denied'; \
        (echo x >> pub) 2>&1 | grep -c 'Permission denied'; \
        touch ro/f 2>&1 | grep -c 'Permission denied'; \
        echo mine > open/f && echo mine2 > mine/g && echo deep > deep/er/own/h \
        && stat -c '%u %g' open/f mine/g deep/er/own/h";
    let out = testkit::run_timeout(
        testkit::as_test_user("sh")
            .arg("-c")
            .arg(script)
            .env("M", &m.mnt),
        union_mounts::STEP,
    );
    assert_eq!(
        out.stdout,
        format!("readable\n1\n1\n1\n{uid} {gid}\n{uid} {gid}\n{uid} {gid}\n"),
        "{out:?}"
    );
    // Parents copied up on the user's behalf keep their owners.
    assert_eq!(disk_stat(&fx.up("deep"), "%u %a"), "0 755");
    assert_eq!(disk_stat(&fx.up("deep/er/own"), "%u"), uid.to_string());
    assert_eq!(disk_stat(&fx.up("open/f"), "%u %g"), format!("{uid} {gid}"));
}
both!(permissions_for_other_users);

/// A POSIX ACL in the xattr format (version 2, then tag, permissions, id per entry).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

fn posix_acls(imp: Imp) {
    const ACCESS: &str = "system.posix_acl_access";
    const DEFAULT: &str = "system.posix_acl_default";
    // Tags: owner, named user, owning group, mask, other; the id only for named entries.
    const OWNER: u16 = 1;
    const USER: u16 = 2;
    const GROUP: u16 = 4;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NONE: u32 = u32::MAX;
    let (uid, _) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let fx = Fixture::new(&["f secret s\nm secret 600\nd dd 755\nf dd/x 1\nf pub p\nm pub 640"]);
    let l = &fx.lowers[0];
    // The test user may read `secret` through an ACL entry; the mode alone says no.
    let grant = acl(&[
        (OWNER, 6, NONE),
        (USER, 4, uid),
        (GROUP, 0, NONE),
        (MASK, 4, NONE),
        (OTHER, 0, NONE),
    ]);
    union_mounts::set_xattr(&l.join("secret"), ACCESS, &grant).unwrap();
    let inherit = acl(&[
        (OWNER, 7, NONE),
        (USER, 7, uid),
        (GROUP, 5, NONE),
        (MASK, 7, NONE),
        (OTHER, 5, NONE),
    ]);
    union_mounts::set_xattr(&l.join("dd"), DEFAULT, &inherit).unwrap();
    let m = fx.mount(imp, "", "allow_other");
    let as_user = |script: &str| {
        testkit::run_timeout(
            testkit::as_test_user("sh")
                .arg("-c")
                .arg(script)
                .env("M", &m.mnt),
            union_mounts::STEP,
        )
    };
    let out = as_user("cat \"$M/secret\"");
    assert_eq!(out.stdout, "s\n", "the ACL grants read: {out:?}");
    let out = as_user("echo no >> \"$M/secret\"");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");

    // New objects in a directory with a default ACL inherit it, and the umask does not apply
    // (the mode's group bits become the mask); also for a name over a whiteout, which is made
    // in the work dir first.
    m.sh(
        "umask 022; touch dd/new; mkdir dd/sub; rm dd/x; echo again > dd/x; umask 077; touch plain",
    );
    assert_eq!(
        m.sh("stat -c '%n %a' dd/new dd/sub dd/x plain"),
        "dd/new 664\ndd/sub 775\ndd/x 664\nplain 600\n"
    );
    let file_acl = acl(&[
        (OWNER, 6, NONE),
        (USER, 7, uid),
        (GROUP, 5, NONE),
        (MASK, 6, NONE),
        (OTHER, 4, NONE),
    ]);
    for f in ["dd/new", "dd/x"] {
        assert_eq!(
            union_mounts::get_xattr(&m.p(f), ACCESS),
            Ok(file_acl.clone()),
            "{f}"
        );
    }
    assert_eq!(
        union_mounts::get_xattr(&m.p("dd/sub"), DEFAULT),
        Ok(inherit.clone())
    );
    assert_eq!(
        union_mounts::get_xattr(&m.p("plain"), ACCESS),
        Err(libc::ENODATA)
    );

    // An ACL set through the mount (what setfacl does) sets the group bits from its mask and
    // is enforced at once.
    let rw = acl(&[
        (OWNER, 6, NONE),
        (USER, 6, uid),
        (GROUP, 4, NONE),
        (MASK, 6, NONE),
        (OTHER, 0, NONE),
    ]);
    union_mounts::set_xattr(&m.p("pub"), ACCESS, &rw).unwrap();
    assert_eq!(m.sh("stat -c %a pub"), "660\n");
    let out = as_user("echo more >> \"$M/pub\" && cat \"$M/pub\"");
    assert_eq!(out.stdout, "p\nmore\n", "{out:?}");
    // Removing it takes the grant back.
    union_mounts::remove_xattr(&m.p("pub"), ACCESS).unwrap();
    let out = as_user("cat \"$M/pub\"");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
}
both!(posix_acls);

fn setuid_programs_run_setuid(imp: Imp) {
    // A container rootfs needs suid binaries (su, ping): the mount must not be nosuid.
    let (uid, _) = match testkit::test_user() {
        Ok(ids) => ids,
        Err(why) => testkit::skip!("no unprivileged test user: {why}"),
    };
    let fx = Fixture::new(&[]);
    let lower = fx.dir.path().join("l-suid");
    std::fs::create_dir(&lower).unwrap();
    std::fs::copy("/usr/bin/id", lower.join("id")).unwrap();
    testkit::set_mode(&lower.join("id"), 0o4755);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        fx.upper.display(),
        fx.work.display()
    );
    let m = fx.mount_with(imp, &opts, "", "allow_other");
    let out = testkit::run_timeout(
        testkit::as_test_user("sh")
            .arg("-c")
            .arg("\"$M/id\" -u; \"$M/id\" -ru")
            .env("M", &m.mnt),
        union_mounts::STEP,
    );
    assert_eq!(out.stdout, format!("0\n{uid}\n"), "{out:?}");
}
both!(setuid_programs_run_setuid);

fn sparse_copy_up_keeps_holes(imp: Imp) {
    let fx = Fixture::new(&[]);
    let lower = fx.dir.path().join("l-sparse");
    std::fs::create_dir(&lower).unwrap();
    testkit::sh(
        &format!(
            "truncate -s 64M {0}/s && printf x | dd of={0}/s bs=1 seek=33554432 conv=notrunc 2>/dev/null",
            lower.display()
        ),
        union_mounts::STEP,
    )
    .assert_ok();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        fx.upper.display(),
        fx.work.display()
    );
    let m = fx.mount_with(imp, &opts, "", "");
    m.sh("echo y >> s");
    assert_eq!(m.sh("stat -c %s s"), format!("{}\n", (64 << 20) + 2));
    let blocks: u64 = disk_stat(&fx.up("s"), "%b").parse().unwrap();
    // Kernel overlayfs skips holes at 1 MiB granularity (2056 blocks here); a full copy would
    // be 131072 blocks.
    assert!(blocks < 16384, "copy-up filled holes: {blocks} blocks");
    assert_eq!(
        m.sh("dd if=s bs=1 skip=33554432 count=1 2>/dev/null; tail -c 2 s"),
        "xy\n"
    );
}
both!(sparse_copy_up_keeps_holes);

fn metacopy_survives_remount(imp: Imp) {
    let fx = Fixture::new(&["big f 4\nf g small"]);
    let m = fx.mount(imp, "metacopy=on", "metacopy=on");
    m.sh("chmod 604 f && chown 5:6 g");
    m.unmount();
    let m = fx.mount(imp, "metacopy=on", "metacopy=on");
    assert_eq!(
        m.sh("stat -c '%a %s' f; stat -c '%u %g' g; cat g"),
        "604 4194304\n5 6\nsmall\n"
    );
    m.sh(&format!("cmp f {}", fx.lowers[0].join("f").display()));
    m.sh("echo more >> g");
    assert_eq!(m.sh("cat g"), "small\nmore\n");
}
both!(metacopy_survives_remount);

fn ro_mount_of_a_used_upper(imp: Imp) {
    // Everything a read-write mount left in the upper (metacopy files, redirects, whiteouts,
    // opaque dirs) reads the same through a later `ro` mount.
    let fx = Fixture::new(&["big f 2\nf d/x x\nf e/y y\nf gone g"]);
    let k = "metacopy=on";
    let m = fx.mount(imp, k, "");
    m.sh("chmod 600 f && mv d d2 && rm gone && rm -r e && mkdir e && echo n > e/n");
    let view = "stat -c %a f; md5sum < f; ls -A; ls -A d2 e";
    let want = m.sh(view);
    m.unmount();
    let m = fx.mount_with(imp, &format!("{},ro", fx.rw_opts()), k, "");
    assert_eq!(m.sh(view), want);
}
both!(ro_mount_of_a_used_upper);

fn used_upper_as_lower_layer(imp: Imp) {
    // An upper a read-write mount produced (metacopy files, redirects, whiteouts, opaque dirs)
    // stacked as a lower layer over its old lowers reads the same.
    let fx = Fixture::new(&["big f 2\nf d/x x\nf e/y y\nf gone g"]);
    let k = "metacopy=on";
    let m = fx.mount(imp, k, "");
    m.sh("chmod 600 f && mv d d2 && rm gone && rm -r e && mkdir e && echo n > e/n");
    let view = "stat -c %a f; md5sum < f; ls -A; ls -A d2 e";
    let want = m.sh(view);
    m.unmount();
    let opts = format!("lowerdir={}:{}", fx.upper.display(), fx.lowers[0].display());
    let m = fx.mount_with(imp, &opts, k, "");
    assert_eq!(m.sh(view), want);
}
both!(used_upper_as_lower_layer);

fn copy_file_range_within_the_mount(imp: Imp) {
    let fx = Fixture::new(&["big src 4\nf small 0123456789"]);
    let m = fx.mount(imp, "", "");
    let root = m.mnt.clone();
    let copied = within(move || {
        use std::os::fd::AsRawFd;
        let src = std::fs::File::open(root.join("src")).unwrap();
        let dst = std::fs::File::create(root.join("dst")).unwrap();
        let small = std::fs::File::open(root.join("small")).unwrap();
        // Whole file, then 4 bytes from offset 3 of another file written at offset 100.
        let mut total = 0i64;
        loop {
            // SAFETY: copy_file_range between fds we own, with null offsets (file positions).
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    1 << 20,
                    0,
                )
            };
            assert!(n >= 0, "{}", std::io::Error::last_os_error());
            if n == 0 {
                break;
            }
            total += n as i64;
        }
        let (mut off_in, mut off_out) = (3i64, 100i64);
        let dst2 = std::fs::File::create(root.join("dst2")).unwrap();
        // SAFETY: as above, with explicit offsets.
        let n = unsafe {
            libc::copy_file_range(
                small.as_raw_fd(),
                &mut off_in,
                dst2.as_raw_fd(),
                &mut off_out,
                4,
                0,
            )
        };
        (total, n)
    });
    assert_eq!(copied, (4 << 20, 4));
    m.sh("cmp src dst");
    assert_eq!(m.sh("stat -c %s dst2; tail -c 4 dst2"), "104\n3456");
    // The source stayed a lower file; the copies are in the upper.
    assert!(!fx.up("src").exists() && fx.up("dst").exists());
}
both!(copy_file_range_within_the_mount);

/// A kernel-written upper (metacopy=on: metacopy files and redirects) stacked by rcl-fs as a
/// lower layer over its old lowers.
#[test]
#[ignore = "rcl-fs: a kernel-written upper used as a lower: metacopy files' and moved dirs' \
            overlay.redirect are not followed"]
fn rclfs_stacks_a_kernel_upper_as_lower() {
    for imp in [Imp::Kernel, Imp::RclFs] {
        need!(imp);
    }
    let fx = Fixture::new(&["big f 2\nf d/x x\nf e/y y\nf gone g\nf c c"]);
    let m = fx.mount(Imp::Kernel, "metacopy=on", "");
    m.sh("chmod 600 f && mv d d2 && mv c c2 && rm gone && rm -r e && mkdir e && echo n > e/n");
    let view = "stat -c %a f; md5sum < f; ls -A; ls -A d2 e; cat c2";
    let want = m.sh(view);
    m.unmount();
    let opts = format!("lowerdir={}:{}", fx.upper.display(), fx.lowers[0].display());
    let m = union_mounts::mount_at(Imp::RclFs, &opts, &fx.mnt);
    assert_eq!(m.sh(view), want);
}

fn device_nodes_work(imp: Imp) {
    let fx = Fixture::new(&["c null 1 3\nc zero 1 5"]);
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("echo gone > null && head -c 3 zero | od -An -tx1"),
        " 00 00 00\n"
    );
}
both!(device_nodes_work);

fn nodev_noexec_nosuid_options(imp: Imp) {
    // podman passes `mountopt = "nodev"`; the kernel takes these as mount flags.
    let fx = Fixture::new(&["c null 1 3"]);
    std::fs::copy("/bin/true", fx.lowers[0].join("true")).unwrap();
    let flags = "nodev,noexec,nosuid";
    let m = fx.mount(imp, flags, flags);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(&*fx.mnt.to_string_lossy()))
        .unwrap();
    let opts = line.split(' ').nth(5).unwrap();
    for f in ["nodev", "noexec", "nosuid"] {
        assert!(opts.split(',').any(|o| o == f), "{f} missing: {line}");
    }
    for cmd in ["echo x > null", "./true"] {
        let out = m.try_sh(cmd);
        assert!(
            !out.success() && out.stderr.contains("Permission denied"),
            "{cmd}: {out:?}"
        );
    }
}
both!(nodev_noexec_nosuid_options);

fn data_integrity(imp: Imp) {
    let fx = Fixture::new(&["big low 8"]);
    let m = fx.mount(imp, "", "");
    let src = fx.dir.path().join("random");
    testkit::sh(
        &format!("head -c 20000000 /dev/urandom > {}", src.display()),
        union_mounts::STEP,
    )
    .assert_ok();
    let want = testkit::sh(&format!("md5sum < {}", src.display()), union_mounts::STEP).stdout;
    m.sh(&format!("cp {} new", src.display()));
    // Scattered writes into a lower file (copy-up), then read back.
    m.sh(
        "printf AB | dd of=low bs=1 seek=5000000 conv=notrunc 2>/dev/null \
          && printf CD | dd of=low bs=1 seek=8388607 conv=notrunc 2>/dev/null",
    );
    let view = "dd if=low bs=1 skip=5000000 count=2 2>/dev/null; echo; tail -c 2 low; echo; \
                stat -c %s low";
    assert_eq!(m.sh("md5sum < new"), want);
    assert_eq!(m.sh(view), "AB\nCD\n8388609\n");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("md5sum < new"), want, "after remount");
    assert_eq!(m.sh(view), "AB\nCD\n8388609\n");
}
both!(data_integrity);

fn write_while_lower_open_goes_to_upper(imp: Imp) {
    write_while_lower_open(imp, "");
}
both!(write_while_lower_open_goes_to_upper);

/// `lsattr`'s and `chattr`'s ioctls on `p` (`FS_IOC_GETFLAGS`, `FS_IOC_SETFLAGS`).
fn file_flags(p: &std::path::Path, set: Option<i32>) -> Result<i32, i32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    let mut v: libc::c_int = set.unwrap_or(0);
    let cmd = if set.is_some() {
        0x4008_6602
    } else {
        0x8008_6601
    };
    // SAFETY: both commands read or write one int at the pointer, which lives across the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), cmd, &mut v) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(v)
}

fn file_attribute_flags(imp: Imp) {
    const APPEND: i32 = 0x20; // FS_APPEND_FL
    let fx = Fixture::new(&["f f base\nd dd"]);
    let m = fx.mount(imp, "", "");
    let (f, lower_f) = (m.p("f"), fx.lowers[0].join("f"));
    let disk = file_flags(&lower_f, None);
    assert_eq!(
        within(move || file_flags(&f, None)),
        disk,
        "lsattr shows the file's flags"
    );
    let Ok(flags) = disk else {
        testkit::skip!("the test directory's file system has no file flags: {disk:?}");
    };
    // chattr +a through the mount: the file is copied up and takes the flag there; the lower
    // file keeps its own. Appending works, truncating does not.
    let f = m.p("f");
    let got = within(move || {
        file_flags(&f, Some(flags | APPEND))?;
        let after = file_flags(&f, None)?;
        let trunc = std::fs::write(&f, "x").map_err(|e| e.raw_os_error().unwrap_or(0));
        let append = std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut w| std::io::Write::write_all(&mut w, b"+more"))
            .map_err(|e| e.raw_os_error().unwrap_or(0));
        file_flags(&f, Some(flags))?;
        Ok::<_, i32>((
            after & APPEND,
            trunc,
            append,
            file_flags(&f, None)? & APPEND,
        ))
    });
    assert_eq!(got, Ok((APPEND, Err(libc::EPERM), Ok(()), 0)));
    assert_eq!(m.sh("cat f"), "base\n+more");
    assert_eq!(file_flags(&lower_f, None).map(|v| v & APPEND), Ok(0));
}
both!(file_attribute_flags);

#[test]
fn rclfs_write_while_lower_open_passthrough_off() {
    rclfs_only(|| write_while_lower_open(Imp::RclFs, "passthrough=off"));
}

fn write_while_lower_open(imp: Imp, ropts: &str) {
    // A small file opened read-only before copy-up (served from the lower) must not block a
    // later writer, nor let it reach the lower layer; the old descriptor then reads what was
    // written, as on kernel overlayfs. (rcl-fs with passthrough reads lower files of more
    // than 1 MiB through a backing file, which refuses the writer: README "Known limits".)
    let fx = Fixture::new(&["f a original"]);
    let m = fx.mount(imp, "", ropts);
    let p = m.p("a");
    let (before, after_ro, after_new) = within(move || {
        use std::io::{Read, Seek, Write};
        let mut ro = std::fs::File::open(&p).unwrap();
        let mut s = String::new();
        ro.read_to_string(&mut s).unwrap();
        let mut rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        rw.write_all(b"CHANGED").unwrap();
        rw.sync_all().unwrap();
        drop(rw);
        ro.rewind().unwrap();
        let mut t = String::new();
        ro.read_to_string(&mut t).unwrap();
        (s, t, std::fs::read_to_string(&p).unwrap())
    });
    assert_eq!(before, "original\n");
    assert_eq!(after_ro, "CHANGEDl\n");
    assert_eq!(after_new, "CHANGEDl\n");
    assert_eq!(
        std::fs::read_to_string(fx.lowers[0].join("a")).unwrap(),
        "original\n"
    );
    assert_eq!(std::fs::read_to_string(fx.up("a")).unwrap(), "CHANGEDl\n");
}

fn errno_parity(imp: Imp) {
    let fx = Fixture::new(&[
        "f f 1\nd d\nf d/x 1\nd e\nf gone 1\nl ln f",
        "d full\nf full/y 1",
    ])
    .with_upper("w gone\nd ue");
    let m = fx.mount(imp, "", "");
    let root = m.mnt.clone();
    let got = within(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let p = |s: &str| root.join(s);
        let e = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
        let x = |r: Result<(), i32>| r.err().unwrap_or(0);
        vec![
            (
                "open missing",
                e(std::fs::File::open(p("missing")).map(drop)),
            ),
            ("open gone", e(std::fs::File::open(p("gone")).map(drop))),
            ("open f/x", e(std::fs::File::open(p("f/x")).map(drop))),
            ("mkdir d", e(std::fs::create_dir(p("d")))),
            ("rmdir f", e(std::fs::remove_dir(p("f")))),
            ("unlink d", e(std::fs::remove_file(p("d")))),
            ("rmdir full", e(std::fs::remove_dir(p("full")))),
            ("rename d d/x/in", e(std::fs::rename(p("d"), p("d/sub")))),
            ("rename f e", e(std::fs::rename(p("f"), p("full")))),
            ("rename e f", e(std::fs::rename(p("e"), p("f")))),
            // (an upper-only dir: kernel overlayfs renames lower dirs only with redirect_dir)
            ("rename ue full", e(std::fs::rename(p("ue"), p("full")))),
            ("rename gone", e(std::fs::rename(p("gone"), p("g2")))),
            ("link d", e(std::fs::hard_link(p("d"), p("d2")))),
            ("symlink over f", e(std::os::unix::fs::symlink("t", p("f")))),
            ("readlink f", e(std::fs::read_link(p("f")).map(drop))),
            (
                "open d for writing",
                e(std::fs::OpenOptions::new()
                    .write(true)
                    .open(p("d"))
                    .map(drop)),
            ),
            (
                "O_NOFOLLOW ln",
                e(std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(p("ln"))
                    .map(drop)),
            ),
            (
                "O_CREAT|O_EXCL f",
                e(std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p("f"))
                    .map(drop)),
            ),
            (
                "getxattr missing",
                x(get_xattr(&p("f"), "user.none").map(drop)),
            ),
            (
                "removexattr missing",
                x(union_mounts::remove_xattr(&p("f"), "user.none")),
            ),
            (
                "rename to 256-byte name",
                e(std::fs::rename(p("f"), p(&"n".repeat(256)))),
            ),
            (
                "symlink 4096-byte target",
                e(std::os::unix::fs::symlink("t".repeat(4096), p("sl"))),
            ),
            (
                "xattr 256-byte name",
                x(union_mounts::set_xattr(
                    &p("f"),
                    &format!("user.{}", "n".repeat(251)),
                    b"v",
                )),
            ),
            (
                "user xattr on a symlink",
                x(union_mounts::set_xattr(&p("ln"), "user.x", b"v")),
            ),
            ("mknod over f", {
                let c =
                    std::ffi::CString::new(p("f").into_os_string().into_encoded_bytes()).unwrap();
                // SAFETY: valid C string.
                let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFIFO | 0o644, 0) };
                if r < 0 {
                    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                } else {
                    0
                }
            }),
        ]
    });
    let want = [
        libc::ENOENT,
        libc::ENOENT,
        libc::ENOTDIR,
        libc::EEXIST,
        libc::ENOTDIR,
        libc::EISDIR,
        libc::ENOTEMPTY,
        libc::EINVAL,
        libc::EISDIR,
        libc::ENOTDIR,
        libc::ENOTEMPTY,
        libc::ENOENT,
        libc::EPERM,
        libc::EEXIST,
        libc::EINVAL,
        libc::EISDIR,
        libc::ELOOP,
        libc::EEXIST,
        libc::ENODATA,
        libc::ENODATA,
        libc::ENAMETOOLONG,
        libc::ENAMETOOLONG,
        libc::ERANGE,
        libc::EPERM,
        libc::EEXIST,
    ];
    let mismatches: Vec<String> = got
        .iter()
        .zip(want)
        .filter(|((_, g), w)| g != w)
        .map(|((what, g), w)| format!("{what}: got {g}, want {w}"))
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
both!(errno_parity);

fn inode_numbers_unique(imp: Imp) {
    let fx = Fixture::new(&[
        "f a 1\nf b 1\nd d\nf d/x 1\nf d/y 1",
        "f c 1\nf b 2\nd d\nf d/z 1\nd e\nf e/w 1",
    ])
    .with_upper("f u 1\nd d\nf d/v 1");
    let m = fx.mount(imp, "", "");
    m.sh("echo 2 >> a && mkdir n && echo 1 > n/f && echo 1 > new1 && touch d/x && ln -s a sl");
    let dups = "find . -printf '%i\\n' | sort | uniq -d";
    assert_eq!(m.sh(dups), "", "two names share an inode number");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh(dups), "", "after remount");
}
both!(inode_numbers_unique);

fn locks(imp: Imp) {
    let fx = Fixture::new(&["f a 1\nf b 1"]);
    let m = fx.mount(imp, "", "");
    // BSD locks: a second open file cannot take the lock while it is held.
    assert_eq!(m.sh("flock -x a sh -c 'flock -n a true; echo $?'"), "1\n");
    // Open-file-description locks conflict between two descriptors of one process.
    let p = m.p("b");
    let (first, second) = within(move || {
        use std::os::fd::AsRawFd;
        let lock = |f: &std::fs::File| {
            // SAFETY: flock is plain old data; all-zero is a valid value.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as i16;
            fl.l_whence = libc::SEEK_SET as i16;
            // SAFETY: fcntl with a valid fd and a pointer to an initialised flock.
            let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
            if r < 0 {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            } else {
                0
            }
        };
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap()
        };
        let (f1, f2) = (open(), open());
        (lock(&f1), lock(&f2))
    });
    assert_eq!((first, second), (0, libc::EAGAIN));
}
both!(locks);

fn exec_and_direct_io(imp: Imp) {
    let fx = Fixture::new(&["f data 0123456789"]);
    std::fs::copy("/bin/echo", fx.lowers[0].join("echo")).unwrap();
    let m = fx.mount(imp, "", "");
    assert_eq!(m.sh("./echo from-lower"), "from-lower\n");
    m.sh("printf '#!/bin/sh\\necho script\\n' > s.sh && chmod 755 s.sh");
    assert_eq!(m.sh("./s.sh"), "script\n");
    // O_DIRECT reads of a lower file and writes of a new one.
    assert_eq!(
        m.sh("dd if=data iflag=direct bs=4096 2>/dev/null"),
        "0123456789\n"
    );
    m.sh("dd if=/dev/zero of=direct bs=4096 count=8 oflag=direct 2>/dev/null");
    assert_eq!(m.sh("stat -c %s direct"), "32768\n");
}
both!(exec_and_direct_io);

fn tar_round_trip(imp: Imp) {
    let fx = Fixture::new(&["f base 1"]);
    let src = fx.dir.path().join("src");
    for i in 0..60 {
        let d = src.join(format!("d{}/e{}", i % 7, i % 3));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("{i}").repeat(i * 37)).unwrap();
        if i % 5 == 0 {
            std::os::unix::fs::symlink(format!("f{i}"), d.join(format!("s{i}"))).unwrap();
        }
        if i % 9 == 0 {
            std::fs::hard_link(d.join(format!("f{i}")), src.join(format!("h{i}"))).unwrap();
        }
    }
    let tarball = fx.dir.path().join("src.tar");
    testkit::sh(
        &format!("tar cf {} -C {} .", tarball.display(), src.display()),
        union_mounts::STEP,
    )
    .assert_ok();
    let m = fx.mount(imp, "", "");
    m.sh(&format!(
        "mkdir x y && (tar xf {t} -C x & tar xf {t} -C y & wait) && diff -r --no-dereference {s} x \
         && diff -r --no-dereference {s} y",
        t = tarball.display(),
        s = src.display()
    ));
    assert_eq!(m.sh("find x -type f -links 2 | wc -l"), "14\n");
    // And back out: the archive made from the mount lists the same entries (in name order, so
    // that the same name of each hard-linked file is archived as the file: readdir order is the
    // filesystem's own).
    let list = |dir: &str| {
        format!("tar cf - --sort=name -C {dir} . | tar tvf - | awk '{{print $1, $3, $6}}' | sort")
    };
    let want = testkit::sh(&list(&src.display().to_string()), union_mounts::STEP).stdout;
    assert_eq!(m.sh(&list("x")), want);
}
both!(tar_round_trip);

fn telldir_seekdir(imp: Imp) {
    let fx = Fixture::new(&["d d", "d d"]);
    for i in 0..300 {
        union_mounts::build(&fx.lowers[i % 2], &format!("f d/n{i:03} x"));
    }
    let m = fx.mount(imp, "", "");
    let p = m.p("d");
    let (first, again, total) = within(move || {
        let c = std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: opendir/readdir/telldir/seekdir/closedir on one DIR* we own; names are
        // copied out before the next readdir call.
        unsafe {
            let dir = libc::opendir(c.as_ptr());
            assert!(!dir.is_null());
            let mut names = Vec::new();
            let mut pos = 0;
            loop {
                if names.len() == 150 {
                    pos = libc::telldir(dir);
                }
                let e = libc::readdir(dir);
                if e.is_null() {
                    break;
                }
                let n = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                names.push(n);
            }
            libc::seekdir(dir, pos);
            let mut again = Vec::new();
            loop {
                let e = libc::readdir(dir);
                if e.is_null() {
                    break;
                }
                again.push(
                    std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            libc::closedir(dir);
            (names[150..].to_vec(), again, names.len())
        }
    });
    assert_eq!(total, 302, "300 names plus . and ..");
    assert_eq!(
        first, again,
        "seekdir to a telldir position replays the same names"
    );
}
both!(telldir_seekdir);

fn xattr_size_probe_and_erange(imp: Imp) {
    let fx = Fixture::new(&["f f 1"]);
    let m = fx.mount(imp, "", "");
    let p = m.p("f");
    let (probe, small, list_probe, list_small) = within(move || {
        let big = vec![b'v'; 300];
        for i in 0..8 {
            union_mounts::set_xattr(&p, &format!("user.k{i}"), &big).unwrap();
        }
        let c = std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
        let n = std::ffi::CString::new("user.k3").unwrap();
        let mut buf = [0u8; 16];
        // SAFETY: valid C strings; sizes match the buffers (0 = probe).
        unsafe {
            let probe = libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0);
            let small = libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), 16);
            let small_err = std::io::Error::last_os_error().raw_os_error();
            let list_probe = libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0);
            let list_small = libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), 4);
            let list_err = std::io::Error::last_os_error().raw_os_error();
            (
                probe,
                (small, small_err),
                list_probe,
                (list_small, list_err),
            )
        }
    });
    assert_eq!(probe, 300);
    assert_eq!(small, (-1, Some(libc::ERANGE)));
    assert!(list_probe >= 8 * 8, "list size probe {list_probe}");
    assert_eq!(list_small, (-1, Some(libc::ERANGE)));
}
both!(xattr_size_probe_and_erange);

fn long_symlink_and_truncate_extend(imp: Imp) {
    let fx = Fixture::new(&["f a abc"]);
    let m = fx.mount(imp, "", "");
    let target = "t".repeat(4095);
    m.sh(&format!("ln -s {target} long && truncate -s 1M a"));
    assert_eq!(
        m.sh("readlink long | wc -c; stat -c %s a; head -c 3 a"),
        "4096\n1048576\nabc"
    );
}
both!(long_symlink_and_truncate_extend);

fn new_file_modes_and_setgid_dirs(imp: Imp) {
    let fx = Fixture::new(&["d sg 2775\nu sg 0 43\nd plain 755"]);
    let m = fx.mount(imp, "", "");
    m.sh("umask 027 && touch plain/f && mkdir plain/d && touch sg/f && mkdir sg/d");
    assert_eq!(
        m.sh("stat -c '%a %g' plain/f plain/d sg/f sg/d"),
        "640 0\n750 0\n640 43\n2750 43\n"
    );
    assert_eq!(disk_stat(&fx.up("sg/d"), "%a %g"), "2750 43");
}
both!(new_file_modes_and_setgid_dirs);

fn recreated_name_gets_new_inode(imp: Imp) {
    let fx = Fixture::new(&["f a 1\nd d"]);
    let m = fx.mount(imp, "", "");
    let out = m.sh("stat -c %i a d; rm a && rmdir d && echo 2 > a && mkdir d && stat -c %i a d");
    let inos: Vec<&str> = out.lines().collect();
    assert_ne!(
        inos[0], inos[2],
        "recreated file reuses the old inode number"
    );
    assert_ne!(
        inos[1], inos[3],
        "recreated dir reuses the old inode number"
    );
}
both!(recreated_name_gets_new_inode);

fn names_follow_renames_and_unlinks(imp: Imp) {
    // rcl-fs remembers which node a name shows; every way a name changes must update that.
    let fx = Fixture::new(&["f a A\nf b B\nf c C\nd d\nf d/x X", "f a A2\nf e E"]);
    let m = fx.mount(imp, "", "");
    let out = m.sh(
        "cat a b c e d/x >/dev/null; mv a z && cat z && mv b a && cat a && rm a && \
         echo n > a && cat a && mv c d/x && cat d/x && mv e c && rm c && mkdir c && \
         rmdir c && echo m > c && cat c && mv d/x b && rmdir d && mkdir d && \
         mv b d/b && cat d/b; ls -A; ls -A d",
    );
    assert_eq!(out, "A\nB\nn\nC\nm\nC\na\nc\nd\nz\nb\n");
    m.unmount();
    let m = fx.mount(imp, "", "");
    assert_eq!(
        m.sh("ls -A; ls -A d; cat a c z d/b"),
        "a\nc\nd\nz\nb\nn\nm\nA\nC\n"
    );
}
both!(names_follow_renames_and_unlinks);

// --- rcl-fs only -------------------------------------------------------------------------------

/// Kernel overlayfs does not read `.wh.` files: this format is rcl-fs's (and OCI layers').
fn rclfs_only(check: fn()) {
    need!(Imp::RclFs);
    check();
}

#[test]
fn rclfs_wh_files_in_lowers() {
    rclfs_only(|| {
        let fx = Fixture::new(&[
            "f .wh.b\nf d/.wh..wh..opq\nf d/mid m\nf keep k\nf e/.wh.x",
            "f a a\nf b b\nf d/low l\nf e/x x\nf e/y y",
        ]);
        let m = fx.mount(Imp::RclFs, "", "");
        assert_eq!(
            m.sh("ls -A"),
            "a\nd\ne\nkeep\n",
            ".wh. names hidden, b whited out"
        );
        assert_eq!(m.sh("ls -A d; ls -A e"), "mid\ny\n");
        for n in [".wh.b", "d/.wh..wh..opq", "b", "e/x"] {
            assert!(!m.try_sh(&format!("stat {n}")).success(), "{n} visible");
        }
    });
}

#[test]
fn rclfs_wh_files_after_many_lookups() {
    // Many missing names looked up in one directory make rcl-fs scan its layer directories
    // for `.wh.` files once: a layer with one must keep hiding, one without stays cheap.
    rclfs_only(|| {
        let fx = Fixture::new(&[
            "f e/.wh.x
f e/top t
d f",
            "f e/x x
f e/y y
f f/z z",
        ]);
        let m = fx.mount(Imp::RclFs, "", "");
        let probe = "for i in 1 2 3 4 5 6 7 8 9 10; do stat e/n$i f/n$i 2>/dev/null; done; true";
        m.sh(probe);
        assert!(
            !m.try_sh("stat e/x").success(),
            "e/x visible after the scan"
        );
        assert_eq!(
            m.sh("cat e/y f/z; ls -A e f"),
            "y
z
e:
top
y

f:
z
"
        );
        m.sh("rm e/y f/z");
        m.sh(probe);
        assert_eq!(
            m.sh("ls -A e f"),
            "e:
top

f:
"
        );
    });
}

#[test]
fn rclfs_whiteout_wh_option_writes_wh_files() {
    rclfs_only(|| {
        let fx = Fixture::new(&["f a 1\nf d/x 1\nf c c"]);
        let m = fx.mount(Imp::RclFs, "", "whiteout=wh");
        m.sh("rm a && rm -r d && mkdir d && echo n > d/n && mv c c2");
        assert_eq!(m.sh("ls -A; ls -A d; cat c2"), "c2\nd\nn\nc\n");
        assert_eq!(disk_stat(&fx.up(".wh.c"), "%F"), "regular empty file");
        assert_eq!(disk_stat(&fx.up(".wh.a"), "%F"), "regular empty file");
        assert_eq!(
            disk_stat(&fx.up("d/.wh..wh..opq"), "%F"),
            "regular empty file"
        );
        assert!(!fx.up("a").exists());
        m.unmount();
        let m = fx.mount(Imp::RclFs, "", "whiteout=wh");
        assert_eq!(m.sh("ls -A; ls -A d; cat c2"), "c2\nd\nn\nc\n");
        // No char-device whiteout anywhere in the upper.
        let cdev = testkit::sh(
            &format!("find {} -type c", fx.upper.display()),
            union_mounts::STEP,
        );
        assert_eq!(cdev.stdout, "");
    });
}

#[test]
fn rclfs_uid_gid_mapping() {
    rclfs_only(|| {
        let fx = Fixture::new(&["f a 1\nu a 1000 1000\nf b 1\nu b 5 5\nf c 1\nu c 100002 100003"]);
        let m = fx.mount(
            Imp::RclFs,
            "",
            "uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1:1:100000:65536",
        );
        assert_eq!(m.sh("stat -c '%u %g' a b c"), "0 0\n65534 65534\n3 4\n");
        m.sh("echo x > new && chown 2:3 new && echo y > own0");
        assert_eq!(disk_stat(&fx.up("new"), "%u %g"), "100001 100002");
        assert_eq!(disk_stat(&fx.up("own0"), "%u %g"), "1000 1000");
        assert_eq!(m.sh("stat -c '%u %g' new"), "2 3\n");
    });
}

#[test]
fn rclfs_squash_options() {
    rclfs_only(|| {
        let fx = Fixture::new(&["f a 1\nu a 1000 1001\nf b 1\nu b 5 6"]);
        let m = fx.mount(Imp::RclFs, "", "squash_to_root");
        assert_eq!(m.sh("stat -c '%u %g' a b"), "0 0\n0 0\n");
        m.unmount();
        let m = fx.mount(Imp::RclFs, "", "squash_to_uid=7,squash_to_gid=8");
        assert_eq!(m.sh("stat -c '%u %g' a b"), "7 8\n7 8\n");
    });
}

// --- each implementation reads the other's upper -----------------------------------------------

/// Changes of every kind except renames of lower entries (checked separately below).
const WRITE_SCRIPT: &str = "echo new >> a && rm b && rm -r d && mkdir d && echo z > d/z \
    && chmod 600 c && mkdir n && echo n > n/f && rm -r e && echo keep > keep \
    && ln -s a sl && mkfifo fifo && mkdir keep_dir/sub && setfattr -n user.k -v v keep_dir/k";
const VIEW_SCRIPT: &str = "ls -A; cat a c n/f; stat -c %a c; ls -A d; cat d/z; ls -A keep_dir; \
    readlink sl; stat -c %F fifo; getfattr --only-values -n user.k keep_dir/k; echo";
const VIEW: &str =
    "a\nc\nd\nfifo\nkeep\nkeep_dir\nn\nsl\n1\nnew\nc\nn\n600\nz\nz\nk\nsub\na\nfifo\nv\n";

/// Renames of a lower file and of a lower directory.
const RENAME_SCRIPT: &str = "mv c c2 && mv d d2";
const RENAME_VIEW_SCRIPT: &str = "ls -A; cat c2 d2/x";
const RENAME_VIEW: &str = "a\nb\nc2\nd2\ne\nkeep_dir\nc\nx\n";

/// Hard-linked lower files, one alias copied up.
const LINK_SCRIPT: &str = "echo more >> c && ln a a2";
const LINK_VIEW_SCRIPT: &str = "cat c c2 a2; stat -c %h c c2 a a2; \
    [ $(stat -c %i c) = $(stat -c %i c2) ] && echo same";
const LINK_VIEW: &str = "c\nmore\nc\nmore\n1\n2\n2\n2\n2\nsame\n";
// (cat c c2 a2 = "c more", "c more", "1"; then nlinks 2 2 2 2; then c and c2 one inode.)

const CROSS_LAYER: &str = "f a 1\nf b b\nf c c\nf d/x x\nf e/y y\nf keep_dir/k k";

struct CrossCase {
    layer: &'static str,
    writer: Imp,
    reader: Imp,
    kopts: &'static str,
    ropts: &'static str,
    script: &'static str,
    view_script: &'static str,
    view: &'static str,
}

fn cross(c: CrossCase) {
    for imp in [c.writer, c.reader] {
        need!(imp);
    }
    if run_timeout_ok("command -v setfattr && command -v getfattr").is_none() {
        testkit::skip!("setfattr/getfattr missing (apt-get install attr)");
    }
    let fx = Fixture::new(&[c.layer]);
    let m = fx.mount(c.writer, c.kopts, c.ropts);
    m.sh(c.script);
    assert_eq!(
        m.sh(c.view_script),
        c.view,
        "{:?} view of its own upper",
        c.writer
    );
    m.unmount();
    let m = fx.mount(c.reader, c.kopts, c.ropts);
    assert_eq!(
        m.sh(c.view_script),
        c.view,
        "{:?} view of {:?}'s upper",
        c.reader,
        c.writer
    );
}

fn run_timeout_ok(script: &str) -> Option<String> {
    let out = testkit::sh(script, union_mounts::STEP);
    out.success().then_some(out.stdout)
}

const fn case(writer: Imp, reader: Imp, kopts: &'static str, ropts: &'static str) -> CrossCase {
    CrossCase {
        layer: CROSS_LAYER,
        writer,
        reader,
        kopts,
        ropts,
        script: WRITE_SCRIPT,
        view_script: VIEW_SCRIPT,
        view: VIEW,
    }
}

const fn links(c: CrossCase) -> CrossCase {
    CrossCase {
        layer: "f a 1\nf c c\nh c2 c",
        script: LINK_SCRIPT,
        view_script: LINK_VIEW_SCRIPT,
        view: LINK_VIEW,
        ..c
    }
}

const fn renames(c: CrossCase) -> CrossCase {
    CrossCase {
        script: RENAME_SCRIPT,
        view_script: RENAME_VIEW_SCRIPT,
        view: RENAME_VIEW,
        ..c
    }
}

// rcl-fs copies metadata only by default (metacopy=on), which the kernel reads only with
// metacopy=on (which implies redirect_dir=on, needed for directory renames too).

#[test]
fn kernel_reads_rclfs_upper() {
    cross(case(Imp::RclFs, Imp::Kernel, "metacopy=on", ""));
}

#[test]
fn kernel_reads_rclfs_upper_metacopy_off() {
    cross(case(
        Imp::RclFs,
        Imp::Kernel,
        "redirect_dir=on",
        "metacopy=off",
    ));
}

// Hard links kept together across copy-up: the kernel needs index=on.

#[test]
#[ignore = "rcl-fs: its hard-link index (private trusted.rclfs.origin) is not kernel overlayfs's \
            (workdir/index + overlay.origin file handles): with index=on the kernel shows the \
            other alias with the old lower data"]
fn kernel_reads_rclfs_upper_hard_links() {
    cross(links(case(
        Imp::RclFs,
        Imp::Kernel,
        "index=on",
        "metacopy=off",
    )));
}

#[test]
#[ignore = "rcl-fs: does not read kernel overlayfs's index (workdir/index, overlay.origin): \
            the alias the kernel did not copy up shows the old lower data"]
fn rclfs_reads_kernel_upper_hard_links() {
    cross(links(case(Imp::Kernel, Imp::RclFs, "index=on", "")));
}

// The rootless format: user.overlay.* markers (kernel `userxattr`, which excludes metacopy).

#[test]
fn kernel_reads_rclfs_user_xattr_upper() {
    cross(case(
        Imp::RclFs,
        Imp::Kernel,
        "userxattr",
        "xattr=user,metacopy=off",
    ));
}

#[test]
fn rclfs_reads_kernel_user_xattr_upper() {
    cross(case(Imp::Kernel, Imp::RclFs, "userxattr", ""));
}

#[test]
fn rclfs_reads_kernel_upper() {
    cross(case(Imp::Kernel, Imp::RclFs, "", ""));
}

#[test]
fn rclfs_reads_kernel_metacopy_upper() {
    cross(case(Imp::Kernel, Imp::RclFs, "metacopy=on", ""));
}

#[test]
fn kernel_reads_rclfs_upper_renames() {
    cross(renames(case(Imp::RclFs, Imp::Kernel, "metacopy=on", "")));
}

#[test]
fn kernel_reads_rclfs_upper_renames_metacopy_off() {
    cross(renames(case(
        Imp::RclFs,
        Imp::Kernel,
        "redirect_dir=on",
        "metacopy=off",
    )));
}

#[test]
#[ignore = "rcl-fs: ignores the kernel's overlay.redirect on a renamed lower dir (honoured only \
            with its private rclfs.redirect marker and an absolute path; the kernel writes \
            relative ones): the moved dir shows empty"]
fn rclfs_reads_kernel_upper_renames() {
    cross(renames(case(
        Imp::Kernel,
        Imp::RclFs,
        "redirect_dir=on",
        "",
    )));
}

#[test]
#[ignore = "rcl-fs: does not follow overlay.redirect of a kernel metacopy file (renamed lower \
            file): reads zeros instead of the lower data"]
fn rclfs_reads_kernel_metacopy_upper_renames() {
    cross(renames(case(Imp::Kernel, Imp::RclFs, "metacopy=on", "")));
}

/// rcl-fs reserves `.wh.` names (kernel overlayfs would store them as plain files): creating one
/// is refused, so no whiteout can be forged through the mount.
#[test]
fn rclfs_refuses_wh_names() {
    rclfs_only(|| {
        for ropts in ["", "whiteout=wh"] {
            let fx = Fixture::new(&["f a 1\nd d\nf d/x 1"]);
            let m = fx.mount(Imp::RclFs, "", ropts);
            for cmd in [
                "touch .wh.a",
                "mkdir d/.wh..wh..opq",
                "mv a .wh.b",
                "ln -s x .wh.d",
            ] {
                let out = m.try_sh(cmd);
                assert!(!out.success(), "{ropts}: {cmd} succeeded");
            }
            assert_eq!(m.sh("ls -A; ls -A d"), "a\nd\nx\n", "{ropts}");
        }
    });
}

/// Mounted by root (as in the tests), rcl-fs lets every user in, like fuse-overlayfs (which adds
/// allow_other when its euid is 0) and kernel overlayfs; the kernel checks permissions.
#[test]
fn rclfs_as_root_lets_other_users_in() {
    rclfs_only(|| {
        if let Err(why) = testkit::test_user() {
            testkit::skip!("no unprivileged test user: {why}");
        }
        let fx = Fixture::new(&["f pub readable\nm pub 644\nf priv secret\nm priv 600"]);
        let m = fx.mount(Imp::RclFs, "", "");
        let out = testkit::run_timeout(
            testkit::as_test_user("cat").arg(m.p("pub")),
            union_mounts::STEP,
        );
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout, "readable\n");
        let out = testkit::run_timeout(
            testkit::as_test_user("cat").arg(m.p("priv")),
            union_mounts::STEP,
        );
        assert!(
            !out.success() && out.stderr.contains("Permission denied"),
            "{out:?}"
        );
    });
}

/// Number of FUSE request threads (fuser names them `fuser-N`) of a server.
fn serving_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("fuser-"))
        .count()
}
#[test]
fn rclfs_options_take_effect() {
    rclfs_only(|| {
        let fx = Fixture::new(&["big f 4\nf d/x 1\nd s/a\nd s/b"]);
        let m = fx.mount(
            Imp::RclFs,
            "",
            "threads=1,passthrough=off,fsync=0,metacopy=off,xattr=user,static_nlink,fsname=myfs",
        );
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(&*fx.mnt.to_string_lossy()))
            .expect("mountinfo line");
        // (fuser's own mount(2) sets the type "fuse", not "fuse.rcl-fs"; only the source shows.)
        let fields: Vec<&str> = line.split(" - ").nth(1).unwrap().split(' ').collect();
        assert!(
            fields[0].starts_with("fuse") && fields[1] == "myfs",
            "{line}"
        );
        assert_eq!(m.sh("stat -c %h s"), "1\n", "static_nlink");
        assert_eq!(
            serving_threads(m.server.expect("server pid")),
            1,
            "threads=1"
        );
        m.sh("chmod 600 f && rm -r d && mkdir d");
        let blocks: u64 = disk_stat(&fx.up("f"), "%b").parse().unwrap();
        assert!(
            blocks >= 8192,
            "metacopy=off must copy the data: {blocks} blocks"
        );
        assert_eq!(
            get_xattr(&fx.up("d"), "user.overlay.opaque"),
            Ok(b"y".to_vec())
        );
        assert!(get_xattr(&fx.up("d"), "trusted.overlay.opaque").is_err());
        // One serving thread: parallel work still completes.
        m.sh("for i in 1 2 3 4; do (cat f > /dev/null; echo $i > n$i; ls -R > /dev/null) & done; wait");
        assert_eq!(m.sh("cat n1 n2 n3 n4"), "1\n2\n3\n4\n");
        m.unmount();
        // Without static_nlink a directory counts its subdirectories.
        let m = fx.mount(Imp::RclFs, "", "threads=3");
        assert_eq!(m.sh("stat -c %h s"), "4\n");
        assert_eq!(
            serving_threads(m.server.expect("server pid")),
            3,
            "threads=3"
        );
    });
}

#[test]
fn rclfs_passthrough_on() {
    rclfs_only(|| {
        // As root on Linux 6.9+ passthrough=on must mount and serve correct data.
        let fx = Fixture::new(&["big f 8\nf a data"]);
        let m = fx.mount(Imp::RclFs, "", "passthrough=on");
        m.sh(&format!("cmp f {}", fx.lowers[0].join("f").display()));
        m.sh("echo more >> a && echo new > b");
        assert_eq!(m.sh("cat a b"), "data\nmore\nnew\n");
        assert_eq!(
            std::fs::read_to_string(fx.lowers[0].join("a")).unwrap(),
            "data\n"
        );
    });
}
