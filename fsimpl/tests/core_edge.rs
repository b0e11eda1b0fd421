//! fscore integration tests: POSIX edge cases through the union mount.

#[macro_use]
mod union_mounts;
use std::os::unix::fs::MetadataExt;
use union_mounts::*;

#[test]
fn names_paths_and_special_files() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("f"), "f");
    let cfg = m.config();
    m.mount(cfg);
    // 255 bytes ok, 256 ENAMETOOLONG.
    let n255 = "a".repeat(255);
    let n256 = "a".repeat(256);
    m.sh(&format!("touch {n255}; test -e {n255}"));
    let (ok, out) = m.try_sh(&format!("touch {n256}"));
    assert!(!ok && out.contains("too long"), "{out}");
    // A path near PATH_MAX: nested 200-byte components.
    let comp = "d".repeat(200);
    m.sh(&format!(
        "i=0; while [ $i -lt 19 ]; do mkdir {comp}; cd {comp}; i=$((i+1)); done; echo deep > f; cat f"
    ));
    // Special files.
    m.sh("mkfifo fifo; test -p fifo; mknod cdev c 1 3; test -c cdev; ln -s f sl; test \"$(readlink sl)\" = f; cat sl");
    assert!(std::fs::symlink_metadata(m.upper.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    // nlink 0 on an open unlinked file (lower-only and upper).
    m.sh("exec 3<f; rm f; test $(stat -L -c %h /proc/self/fd/3) = 0; cat <&3");
    m.sh("echo x > u; exec 3<u; rm u; test $(stat -L -c %h /proc/self/fd/3) = 0");
    // fallocate / SEEK_DATA through the mount.
    m.sh("truncate -s 10M sparse; printf A | dd of=sparse bs=1 seek=5000000 conv=notrunc 2>/dev/null; test $(stat -c %s sparse) = 10485760");
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn xattrs_private_hidden_user_visible() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("d/f"), "f");
    set_xattr(&l.join("d/f"), "user.lower", b"low").unwrap();
    set_xattr(&l.join("d/f"), "trusted.overlay.foo", b"secret").unwrap();
    let cfg = m.config();
    m.mount(cfg);
    let mnt = m.mnt.clone();
    within(move || {
        let f = mnt.join("d/f");
        assert_eq!(get_xattr(&f, "user.lower"), Ok(b"low".to_vec()));
        assert!(
            get_xattr(&f, "trusted.overlay.foo").is_err(),
            "private xattr hidden"
        );
        assert!(!list_xattr(&f)
            .unwrap_or_default()
            .iter()
            .any(|n| n.contains("overlay")));
        set_xattr(&f, "user.test", b"hello").unwrap();
        assert_eq!(get_xattr(&f, "user.test"), Ok(b"hello".to_vec()));
        let e = set_xattr(&mnt.join("d"), "trusted.overlay.opaque", b"y").unwrap_err();
        assert_eq!(e, libc::EPERM);
        std::fs::rename(mnt.join("d"), mnt.join("d2")).unwrap();
        let names = list_xattr(&mnt.join("d2")).unwrap_or_default();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("overlay") || n.contains("rclfs")),
            "{names:?}"
        );
        assert_eq!(
            get_xattr(&mnt.join("d2/f"), "user.test"),
            Ok(b"hello".to_vec())
        );
    });
    assert!(get_xattr(&m.upper.join("d2"), "trusted.overlay.redirect").is_ok());
    // metacopy: setxattr on a lower file copied metadata only.
    assert!(get_xattr(&m.upper.join("d2/f"), "trusted.overlay.metacopy").is_ok());
    assert_eq!(
        get_xattr(&m.upper.join("d2/f"), "user.lower"),
        Ok(b"low".to_vec())
    );
    assert!(get_xattr(&m.upper.join("d2/f"), "trusted.overlay.foo").is_err());
    assert_eq!(m.sh("cat d2/f"), "f");
}

#[test]
fn renameat2_noreplace_exchange() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("p/pp"), "p");
    put(&l.join("q/qq"), "q");
    put(&l.join("f1"), "1");
    put(&l.join("f2"), "2");
    let cfg = m.config();
    m.mount(cfg);
    let mnt = m.mnt.clone();
    within(move || {
        let e = renameat2(&mnt.join("f1"), &mnt.join("f2"), libc::RENAME_NOREPLACE).unwrap_err();
        assert_eq!(e, libc::EEXIST);
        renameat2(&mnt.join("f1"), &mnt.join("f2"), libc::RENAME_EXCHANGE).unwrap();
        assert_eq!(std::fs::read_to_string(mnt.join("f1")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(mnt.join("f2")).unwrap(), "1");
        renameat2(&mnt.join("p"), &mnt.join("q"), libc::RENAME_EXCHANGE).unwrap();
        assert!(mnt.join("p/qq").exists() && mnt.join("q/pp").exists());
        assert!(!mnt.join("p/pp").exists() && !mnt.join("q/qq").exists());
        renameat2(&mnt.join("f1"), &mnt.join("f3"), libc::RENAME_NOREPLACE).unwrap();
        assert!(!mnt.join("f1").exists());
    });
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(m.sh("ls p q; cat f2 f3"), "p:\nqq\n\nq:\npp\n12");
}

#[test]
fn rename_flags_and_dir_replace() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("a/x"), "x");
    put(&l.join("b/y"), "y");
    put(&l.join("e/.keep"), "");
    let cfg = m.config();
    m.mount(cfg);
    // Replacing a non-empty dir fails; an emptied one works.
    let (ok, _) = m.try_sh("mv -T a b");
    assert!(!ok);
    m.sh("rm b/y; mv -T a b; test \"$(ls b)\" = x; test ! -e a");
    // Dir over a name with lower children gone: no resurrected children.
    m.sh("rm e/.keep; rmdir e; mkdir e; ls -A e | wc -l | grep -qx 0");
    // Moving a directory into a subdir and back.
    m.sh("mkdir -p z/inner; mv b z/inner/; cat z/inner/b/x; mv z/inner/b .; cat b/x");
    // Remount shows the same.
    m.unmount();
    let cfg = m.config();
    m.mount(cfg);
    assert_eq!(m.sh("cat b/x; ls -A e | wc -l"), "x0\n");
}

#[test]
fn ownership_setgid_and_id_mapping() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    std::fs::create_dir(l.join("sg")).unwrap();
    std::os::unix::fs::chown(l.join("sg"), Some(0), Some(4242)).unwrap();
    testkit::set_mode(&l.join("sg"), 0o2777);
    put(&l.join("owned"), "o");
    std::os::unix::fs::chown(l.join("owned"), Some(100_005), Some(100_005)).unwrap();
    let mut cfg = m.config();
    cfg.uid_mapping = fsimpl::IdMapping {
        ranges: vec![fsimpl::IdRange {
            container: 0,
            host: 100_000,
            count: 65536,
        }],
    };
    cfg.gid_mapping = cfg.uid_mapping.clone();
    m.mount(cfg);
    assert_eq!(m.sh("stat -c '%u %g' owned"), "5 5\n");
    m.sh("chown 7:8 owned");
    let md = std::fs::metadata(m.upper.join("owned")).unwrap();
    assert_eq!((md.uid(), md.gid()), (100_007, 100_008));
    // root (0) is host 100000 here.
    m.sh("touch newf; mkdir sg/sub; touch sg/file");
    let md = std::fs::metadata(m.upper.join("newf")).unwrap();
    assert_eq!(md.uid(), 100_000);
    let md = std::fs::metadata(m.upper.join("sg/sub")).unwrap();
    assert_eq!(md.gid(), 4242, "gid inherited from setgid dir");
    assert!(md.mode() & 0o2000 != 0, "setgid kept on subdir");
    let md = std::fs::metadata(m.upper.join("sg/file")).unwrap();
    assert_eq!(md.gid(), 4242);
}

#[test]
fn static_nlink_and_merged_dir_nlink() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    std::fs::create_dir_all(l.join("d/s1")).unwrap();
    std::fs::create_dir_all(l.join("d/s2")).unwrap();
    let mut cfg = m.config();
    cfg.static_nlink = true;
    m.mount(cfg);
    assert_eq!(m.sh("stat -c %h d"), "1\n");
}

#[test]
fn wh_files_format() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("a"), "a");
    put(&l.join("dir/x"), "x");
    let mut cfg = m.config();
    cfg.whiteout_format = fsimpl::WhiteoutFormat::WhFiles;
    m.mount(cfg);
    m.sh("rm a; test ! -e a; rm -r dir; mkdir dir; test -z \"$(ls -A dir)\"; ls -A");
    assert!(m.upper.join(".wh.a").exists());
    assert!(m.upper.join("dir/.wh..wh..opq").exists());
    assert_eq!(m.sh("ls -A | tr '\\n' ' '"), "dir ");
    m.sh("echo again > a; cat a");
    assert!(!m.upper.join(".wh.a").exists());
}

#[test]
fn io_without_passthrough_uses_writeback() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("low"), "0123456789");
    let mut cfg = m.config();
    cfg.passthrough = fsimpl::Passthrough::Off;
    m.mount(cfg);
    m.sh("echo a > f; echo b >> f; test \"$(cat f)\" = \"$(printf 'a\\nb')\"");
    m.sh("echo tail >> low; test \"$(cat low)\" = 0123456789tail");
    m.sh("printf XY | dd of=low bs=1 seek=2 conv=notrunc 2>/dev/null; test \"$(head -c 5 low)\" = 01XY4");
    m.sh("truncate -s 3 low; test \"$(cat low)\" = 01X; test $(stat -c %s low) = 3");
    m.sh("dd if=/dev/zero of=z bs=64k count=100 2>/dev/null; test $(stat -c %s z) = 6553600");
    m.unmount();
    assert_eq!(std::fs::read_to_string(m.upper.join("low")).unwrap(), "01X");
    assert_eq!(
        std::fs::read_to_string(m.upper.join("f")).unwrap(),
        "a\nb\n"
    );
    assert_eq!(
        std::fs::read_to_string(l.join("low")).unwrap(),
        "0123456789"
    );
}

#[test]
fn copy_up_keeps_suid_and_file_capabilities() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    put(&l.join("suid"), "s");
    std::os::unix::fs::chown(l.join("suid"), Some(1000), Some(1000)).unwrap();
    testkit::set_mode(&l.join("suid"), 0o6755);
    put(&l.join("cap"), "c");
    // security.capability v2 for cap_net_raw (bit 13), permitted+effective.
    let mut v = vec![0u8; 20];
    v[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    v[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    if set_xattr(&l.join("cap"), "security.capability", &v).is_err() {
        testkit::skip!("cannot set security.capability on the lower fs");
    }
    let mut cfg = m.config();
    cfg.metacopy = false;
    m.mount(cfg);
    m.sh("touch -m -d @1000000 suid cap");
    let md = std::fs::metadata(m.upper.join("suid")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o6755);
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert_eq!(
        get_xattr(&m.upper.join("cap"), "security.capability"),
        Ok(v.clone())
    );
}

#[test]
fn copy_file_range_inside_the_mount() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(l.join("src"), &data).unwrap();
    for pt in [fsimpl::Passthrough::Auto, fsimpl::Passthrough::Off] {
        let mut cfg = m.config();
        cfg.passthrough = pt;
        m.mount(cfg);
        let mnt = m.mnt.clone();
        within(move || {
            let src = std::fs::File::open(mnt.join("src")).unwrap();
            let dst = std::fs::File::create(mnt.join("dst")).unwrap();
            let mut done = 0usize;
            while done < 3 << 20 {
                let mut a = done as i64;
                let mut b = done as i64;
                // SAFETY: valid fds and offset pointers.
                let n = unsafe {
                    libc::copy_file_range(
                        std::os::fd::AsRawFd::as_raw_fd(&src),
                        &mut a,
                        std::os::fd::AsRawFd::as_raw_fd(&dst),
                        &mut b,
                        (3 << 20) - done,
                        0,
                    )
                };
                assert!(
                    n > 0,
                    "copy_file_range: {}",
                    std::io::Error::last_os_error()
                );
                done += n as usize;
            }
        });
        m.sh("cmp src dst; rm dst");
        m.unmount();
    }
}
