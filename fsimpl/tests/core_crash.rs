//! fscore crash test: kill -9 of the server in the middle of a copy-up never leaves a partial
//! file visible after remount, and leftovers in the work dir are cleaned at mount.

#[macro_use]
mod union_mounts;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use union_mounts::{config_for, library_mount, only_test, wait_mounted, InProcessMount};

const ENV: &str = "RCLFS_CORE_CRASH_SERVER";

/// Not a test on its own: the server process the crash test starts (re-executing this test
/// binary with the layer paths in the environment). Without the variable it does nothing.
#[test]
fn crash_server_process() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let p: Vec<&str> = spec.split('|').collect();
    let cfg = config_for(vec![p[0].into()], p[1].into(), p[2].into());
    library_mount(cfg, Path::new(p[3])).run().expect("run");
}

#[test]
fn kill_during_copy_up_is_atomic() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    let l = m.lower(0).to_path_buf();
    let size = 192usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i / 4096) as u8).collect();
    std::fs::write(l.join("big"), &data).unwrap();
    for (round, delay_ms) in [5u64, 40, 120].into_iter().enumerate() {
        let mut server = spawn_server(&m, &[]);
        let guard = testkit::MountGuard::new(&m.mnt).with_server(server.id() as i32);
        assert!(
            wait_mounted(&m.mnt, Duration::from_secs(20)),
            "server did not mount"
        );
        let mut writer = Command::new("sh")
            .arg("-c")
            .arg(format!("echo appended >> {}/big", m.mnt.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = server.kill();
        let _ = server.wait();
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(20);
        while writer.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = writer.kill();
        let _ = writer.wait();
        // The upper holds either nothing or the whole copy (maybe with the append).
        let up = m.upper.join("big");
        if let Ok(mut f) = std::fs::File::open(&up) {
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            assert!(
                got.len() >= size && got[..size] == data[..],
                "round {round}: partial copy-up visible ({} bytes)",
                got.len()
            );
            std::fs::remove_file(&up).unwrap();
        }
        // Remount in-process: leftovers cleaned, content is old or new.
        let cfg = m.config();
        m.mount(cfg);
        let left: Vec<_> = std::fs::read_dir(m.work.join("rcl-fs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "index")
            .collect();
        assert!(left.is_empty(), "work leftovers: {left:?}");
        let out = m.sh("stat -c %s big");
        assert_eq!(out.trim(), size.to_string(), "round {round}");
        m.unmount();
    }
}

/// Starts [`crash_server_process`] over `m`'s layers in a new process, run through `wrapper`
/// (a command and its arguments, e.g. `prlimit ...`; empty: directly).
fn spawn_server(m: &InProcessMount, wrapper: &[&str]) -> std::process::Child {
    let spec = format!(
        "{}|{}|{}|{}",
        m.lower(0).display(),
        m.upper.display(),
        m.work.display(),
        m.mnt.display()
    );
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(only_test("crash_server_process"))
        .env(ENV, spec)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Serves `m`'s layers from a separate process limited to 1,024 fds (and unable to raise it)
/// and runs `script` in the mount; `None` (after a loud skip) when that process cannot mount.
fn sh_under_fd_limit(m: &InProcessMount, script: &str) -> Option<String> {
    let mut server = spawn_server(
        m,
        &[
            "setpriv",
            "--bounding-set=-sys_resource",
            "--",
            "prlimit",
            "--nofile=1024:1024",
            "--",
        ],
    );
    let _guard = testkit::MountGuard::new(&m.mnt).with_server(server.id() as i32);
    if !wait_mounted(&m.mnt, Duration::from_secs(20)) {
        let _ = server.kill();
        let _ = server.wait();
        testkit::record_skip(module_path!(), "server under setpriv/prlimit did not mount");
        return None;
    }
    let out = m.sh(script);
    let _ = nix::mount::umount2(&m.mnt, nix::mount::MntFlags::MNT_DETACH);
    let _ = server.kill();
    let _ = server.wait();
    Some(out)
}

fn lower_tree(m: &InProcessMount) {
    let l = m.lower(0).to_path_buf();
    for d in 0..40 {
        let dir = l.join(format!("tree/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}")), "x").unwrap();
        }
    }
}

/// Many files, few fds: the server runs with RLIMIT_NOFILE 1024 (and without
/// CAP_SYS_RESOURCE, so it cannot raise it) and still walks, chmods and removes a tree of
/// 4000 lower files that the kernel keeps cached.
#[test]
fn large_tree_within_a_small_fd_limit() {
    need_fuse!();
    let m = InProcessMount::layers(1);
    lower_tree(&m);
    let out = sh_under_fd_limit(
        &m,
        "ls -lR tree | grep -c '^-'; chmod -R g+w tree; stat -c %a tree/d39/f99; \
         find tree -type f | wc -l; rm -rf tree; ls -A | wc -l",
    );
    if let Some(out) = out {
        assert_eq!(out, "4000\n664\n4000\n0\n");
    }
}

/// Renamed lower files are metadata-only copies that find their data by path: after a
/// remount, 4,000 of them in 40 directories are read within 1,024 fds (one shared fd per lower
/// directory, not one per file).
#[test]
fn renamed_files_within_a_small_fd_limit() {
    need_fuse!();
    let mut m = InProcessMount::layers(1);
    lower_tree(&m);
    let cfg = m.config();
    m.mount(cfg);
    m.sh("for d in tree/d*; do for f in $d/f*; do mv $f $d/g${f##*/f}; done; done");
    m.unmount();
    let out = sh_under_fd_limit(
        &m,
        "ls -lR tree | grep -c '^-'; cat tree/d*/g* | wc -c; test ! -e tree/d0/f0 && echo gone",
    );
    if let Some(out) = out {
        assert_eq!(out, "4000\n4000\ngone\n");
    }
}
