//! fscore integration tests: lookup, readdir, whiteouts, opaque dirs, copy-up, rename,
//! hard links, metacopy — through a real in-process mount and by looking at the upper layer.

#[macro_use]
mod union_mounts;
use std::os::unix::fs::MetadataExt;
use union_mounts::*;

#[test]
fn readonly_merge_whiteouts_opaque() {
    need_fuse!();
    let mut m = InProcessMount::layers(2);
    let (top, bot) = (m.lower(0).to_path_buf(), m.lower(1).to_path_buf());
    put(&top.join("both"), "top");
    put(&bot.join("both"), "bottom");
    put(&bot.join("d/only_bottom"), "b");
    put(&top.join("d/only_top"), "t");
    put(&bot.join("gone_chr"), "x");
    put(&bot.join("gone_wh"), "x");
    put(&bot.join("op/hidden"), "x");
    put(&top.join("op/.wh..wh..opq"), "");
    put(&top.join("op/shown"), "x");
    put(&top.join(".wh.gone_wh"), "");
    nix::sys::stat::mknod(
        &top.join("gone_chr"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    let mut cfg = fsimpl::OverlayConfig::new(m.lowers.clone());
    cfg.threads = 2;
    m.mount(cfg);
    assert_eq!(m.sh("cat both"), "top");
    assert_eq!(m.sh("ls d | tr '\\n' ' '"), "only_bottom only_top ");
    assert_eq!(m.sh("ls -a | tr '\\n' ' '"), ". .. both d op ");
    assert_eq!(m.sh("ls op | tr '\\n' ' '"), "shown ");
    let (ok, _) = m.try_sh("test -e gone_chr || test -e gone_wh || test -e .wh.gone_wh");
    assert!(!ok, "whiteouts must hide names");
    let (ok, out) = m.try_sh("touch newfile");
    assert!(!ok && out.contains("Read-only"), "{out}");
    // d_ino from readdir equals st_ino from stat.
    let out = m.sh("for f in both d op d/only_bottom; do a=$(ls -id $f | cut -d' ' -f1); b=$(stat -c %i $f); [ $a = $b ] || echo MISMATCH $f $a $b; done; ls -i d");
    assert!(!out.contains("MISMATCH"), "{out}");
    // Inode numbers differ across layers.
    let i1 = m.sh("stat -c %i d/only_bottom");
    let i2 = m.sh("stat -c %i d/only_top");
    assert_ne!(i1, i2);
}

#[test]
fn create_unlink_whiteout_and_opaque_mkdir() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("a"), "lower a");
    put(&l.join("dir/x"), "x");
    put(&l.join("dir/y"), "y");
    let cfg = m.config();
    m.mount(cfg);
    m.sh("echo hi > new; cat new; rm a; test ! -e a");
    assert!(is_whiteout(&m.upper.join("a")), "whiteout char 0/0 for a");
    assert_eq!(
        std::fs::read_to_string(m.upper.join("new")).unwrap(),
        "hi\n"
    );
    // rmdir of a non-empty merged dir fails; emptied, it succeeds and leaves a whiteout.
    let (ok, _) = m.try_sh("rmdir dir");
    assert!(!ok);
    m.sh("rm dir/x dir/y; rmdir dir; test ! -e dir");
    assert!(is_whiteout(&m.upper.join("dir")));
    // mkdir over the whiteout: opaque, lower children hidden.
    m.sh("mkdir dir; test -z \"$(ls -A dir)\"; touch dir/z; ls dir");
    assert_eq!(
        get_xattr(&m.upper.join("dir"), "trusted.overlay.opaque"),
        Ok(b"y".to_vec())
    );
    // .wh. names cannot be created or seen.
    let (ok, _) = m.try_sh("touch .wh.foo");
    assert!(!ok);
    // Remount: state persists.
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(
        m.sh("ls -A dir | tr '\\n' ' '; test ! -e a; cat new"),
        "z hi\n"
    );
}

#[test]
fn copy_up_keeps_inode_and_metadata() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("sub/f"), "original");
    std::os::unix::fs::chown(l.join("sub/f"), Some(1234), Some(2345)).unwrap();
    std::os::unix::fs::chown(l.join("sub"), Some(1234), Some(2345)).unwrap();
    let cfg = m.config();
    m.mount(cfg);
    let before = m.sh("stat -c '%i %u %g %a' sub/f");
    m.sh("echo more >> sub/f");
    let after = m.sh("stat -c '%i %u %g %a' sub/f");
    assert_eq!(before, after);
    assert_eq!(m.sh("cat sub/f"), "originalmore\n");
    let md = std::fs::metadata(m.upper.join("sub/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 2345));
    let md = std::fs::metadata(m.upper.join("sub")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 2345));
    assert_eq!(
        std::fs::read_to_string(l.join("sub/f")).unwrap(),
        "original"
    );
    // Survives a remount.
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(m.sh("stat -c '%i %u %g %a' sub/f"), before);
}

#[test]
fn rename_lower_dir_uses_redirect() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("a/b/c"), "c");
    put(&l.join("a/d"), "d");
    put(&l.join("t/old"), "old");
    let cfg = m.config();
    m.mount(cfg);
    m.sh("mv a moved; test ! -e a; cat moved/b/c moved/d");
    assert!(is_whiteout(&m.upper.join("a")));
    assert_eq!(
        get_xattr(&m.upper.join("moved"), "trusted.overlay.redirect"),
        Ok(b"/a".to_vec())
    );
    // A directory renamed over an empty lower dir never shows the old target's children.
    m.sh("rm t/old; mkdir n; touch n/new; mv -T n t; ls t");
    assert_eq!(m.sh("ls t | tr '\\n' ' '"), "new ");
    // Files: rename leaves a whiteout at the source.
    put(&l.join("f"), "f");
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(m.sh("cat moved/b/c; ls t"), "cnew\n");
    m.sh("mv f g; test ! -e f; cat g");
    assert!(is_whiteout(&m.upper.join("f")));
}

#[test]
fn hard_links_stay_linked_after_copy_up() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("h1"), "data");
    std::fs::hard_link(l.join("h1"), l.join("h2")).unwrap();
    let cfg = m.config();
    m.mount(cfg);
    let i1 = m.sh("stat -c %i h1");
    assert_eq!(i1, m.sh("stat -c %i h2"));
    m.sh("echo new > h1");
    assert_eq!(m.sh("cat h2"), "new\n");
    assert_eq!(i1, m.sh("stat -c %i h2"));
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(m.sh("cat h2; cat h1"), "new\nnew\n");
    assert_eq!(m.sh("stat -c %h h1"), "2\n");
    // link() of a lower file
    put(&l.join("solo"), "s");
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    m.sh(
        "ln solo solo2; test $(stat -c %h solo) = 2; test $(stat -c %i solo) = $(stat -c %i solo2)",
    );
    // Removing the name the copy-up went to keeps the other link working.
    m.sh("echo more >> solo2; rm solo; test $(stat -c %h solo2) = 1");
    assert_eq!(m.sh("cat solo2"), "smore\n");
}

#[test]
fn metacopy_chmod_copies_no_data() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    std::fs::write(l.join("big"), vec![7u8; 4 << 20]).unwrap();
    let cfg = m.config();
    m.mount(cfg);
    m.sh("chmod 600 big; test $(stat -c %a big) = 600; cmp big ../l0/big");
    let md = std::fs::symlink_metadata(m.upper.join("big")).unwrap();
    assert_eq!(md.len(), 4 << 20);
    assert!(
        md.blocks() < 128,
        "metacopy must not copy data: {} blocks",
        md.blocks()
    );
    m.sh(
        "printf X | dd of=big bs=1 seek=10 conv=notrunc 2>/dev/null; test $(stat -c %a big) = 600",
    );
    let data = std::fs::read(m.upper.join("big")).unwrap();
    assert_eq!(data.len(), 4 << 20);
    assert_eq!(data[10], b'X');
    assert_eq!(data[11], 7);
    assert!(get_xattr(&m.upper.join("big"), "trusted.overlay.metacopy").is_err());
}

#[test]
fn kernel_overlayfs_reads_our_upper() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("keep"), "k");
    put(&l.join("del"), "d");
    put(&l.join("dir/child"), "c");
    let cfg = m.config();
    m.mount(cfg);
    m.sh("rm del; rm -r dir; mkdir dir; echo n > dir/n; echo up > keep");
    m.unmount();
    let kmnt = m.dir.path().join("kmnt");
    std::fs::create_dir(&kmnt).unwrap();
    let kwork = m.dir.path().join("kwork");
    std::fs::create_dir(&kwork).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        m.upper.display(),
        kwork.display()
    );
    let out = mount_kernel_overlay(&opts, &kmnt, std::time::Duration::from_secs(20));
    if !out.success() {
        testkit::skip!("kernel overlayfs mount failed: {}", out.stderr);
    }
    let _g = testkit::MountGuard::new(&kmnt);
    let out = testkit::sh(
        &format!(
            "cd {} && ls -A | tr '\\n' ' ' && ls dir && cat keep",
            kmnt.display()
        ),
        std::time::Duration::from_secs(20),
    );
    assert_eq!(out.stdout, "dir keep n\nup\n", "{out:#?}");
}

#[test]
fn rename_of_lower_file_is_metacopy_and_keeps_data() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    std::fs::create_dir(l.join("dir")).unwrap();
    std::fs::write(l.join("dir/big"), vec![3u8; 2 << 20]).unwrap();
    let cfg = m.config();
    m.mount(cfg);
    m.sh("mv dir/big moved; test ! -e dir/big; cmp moved ../l0/dir/big; mv dir dir2; mv moved dir2/back");
    let md = std::fs::symlink_metadata(m.upper.join("dir2/back")).unwrap();
    assert!(
        md.blocks() < 128,
        "rename copied data: {} blocks",
        md.blocks()
    );
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    m.sh(
        "cmp dir2/back ../l0/dir/big; echo x >> dir2/back; test $(stat -c %s dir2/back) = 2097154",
    );
}

#[test]
fn we_read_an_upper_written_by_kernel_overlayfs() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("keep"), "k");
    put(&l.join("del"), "d");
    put(&l.join("dir/child"), "c");
    put(&l.join("sub/f"), "f");
    let kmnt = m.dir.path().join("kmnt");
    std::fs::create_dir(&kmnt).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        m.upper.display(),
        m.work.display()
    );
    let out = mount_kernel_overlay(&opts, &kmnt, std::time::Duration::from_secs(20));
    if !out.success() {
        testkit::skip!("kernel overlayfs mount failed: {}", out.stderr);
    }
    {
        let _g = testkit::MountGuard::new(&kmnt);
        let out = testkit::sh(
            &format!(
                "cd {} && rm del && rm -r dir && mkdir dir && echo n > dir/n && echo up >> keep && chmod 600 sub/f",
                kmnt.display()
            ),
            std::time::Duration::from_secs(20),
        );
        out.assert_ok();
    }
    assert!(!testkit::is_mounted(&kmnt));
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(
        m.sh("ls -A | tr '\\n' ' '; ls dir; cat keep; stat -c %a sub/f; cat sub/f"),
        "dir keep sub n\nkup\n600\nf"
    );
}

#[test]
fn an_upper_we_wrote_works_as_a_lower_layer() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("chm"), "chmod data\n");
    put(&l.join("dir/ren"), "renamed data\n");
    put(&l.join("tree/sub/leaf"), "leaf\n");
    let cfg = m.config();
    m.mount(cfg);
    m.sh("chmod 600 chm; mv dir/ren moved; mv tree tree2");
    m.unmount();
    assert!(get_xattr(&m.upper.join("chm"), "trusted.overlay.metacopy").is_ok());
    // Stack: the old upper on top of the old lower, a fresh upper.
    let up2 = m.dir.path().join("upper2");
    let work2 = m.dir.path().join("work2");
    std::fs::create_dir(&up2).unwrap();
    std::fs::create_dir(&work2).unwrap();
    let cfg = config_for(vec![m.upper.clone(), l.clone()], up2.clone(), work2);
    m.mount(cfg);
    assert_eq!(
        m.sh(
            "cat chm moved; stat -c %a chm; test ! -e dir/ren; test ! -e tree; cat tree2/sub/leaf"
        ),
        "chmod data\nrenamed data\n600\nleaf\n"
    );
    m.sh("echo more >> moved; chmod 640 chm");
    assert_eq!(
        m.sh("cat moved; stat -c %a chm; cat chm"),
        "renamed data\nmore\n640\nchmod data\n"
    );
    assert_eq!(
        std::fs::read_to_string(up2.join("moved")).unwrap(),
        "renamed data\nmore\n"
    );
}
