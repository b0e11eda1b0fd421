//! Launch latency of `rcl run` (create namespaces, mount the union root, run `true`, clean up)
//! on a two-layer busybox root, as root. Run with `cargo bench --bench launch`.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use criterion::{criterion_group, criterion_main, Criterion};

fn rootfs(dir: &Path) -> Option<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let base = dir.join("base");
    for d in ["bin", "proc", "dev", "sys", "etc", "tmp"] {
        std::fs::create_dir_all(base.join(d)).ok()?;
    }
    std::fs::copy(busybox, base.join("bin/busybox")).ok()?;
    let list = Command::new(busybox).arg("--list").output().ok()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", base.join("bin").join(applet));
        }
    }
    std::fs::write(base.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").ok()?;
    std::fs::create_dir_all(dir.join("app")).ok()?;
    std::fs::write(dir.join("app/app.txt"), "app\n").ok()?;
    for (name, init) in [("init", true), ("noinit", false)] {
        let spec = format!(
            "name = \"bench-{name}\"\n[rootfs]\nlayers = [\"app\", \"base\"]\n\
             [process]\ncommand = [\"/bin/true\"]\n[lifecycle]\ninit = {init}\n"
        );
        std::fs::write(dir.join(format!("{name}.toml")), spec).ok()?;
    }
    Some(())
}

fn launch(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("launch bench: needs root (FUSE mounts); skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    if rootfs(dir.path()).is_none() {
        eprintln!("launch bench: busybox-static is not installed; skipped");
        return;
    }
    let rcl = env!("CARGO_BIN_EXE_rcl");
    let mut group = c.benchmark_group("rcl run true");
    group.sample_size(30);
    for name in ["init", "noinit"] {
        let spec = dir.path().join(format!("{name}.toml"));
        group.bench_function(name, |b| {
            b.iter(|| {
                let st = Command::new(rcl)
                    .arg("run")
                    .arg(&spec)
                    .stdin(Stdio::null())
                    .status()
                    .expect("rcl");
                assert!(st.success());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, launch);
criterion_main!(benches);
