//! The example specs' host layers really run their commands (under chroot, as root): what
//! `rcl run` would show, minus the namespaces.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcl::spec::{self, Layer, Spec};
use testkit::{run_timeout, skip};

fn example(name: &str) -> Spec {
    spec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("specs")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the spec's single host layer and runs its process in it with chroot and `env -i`.
fn run_in_chroot(spec: &Spec, cache: &Path) -> testkit::Output {
    let [Layer::Host(progs)] = spec.rootfs.layers.as_slice() else {
        panic!("expected one host layer: {:?}", spec.rootfs.layers);
    };
    let layer = rcl::hostlayer::build(progs, cache).unwrap();
    let mut cmd = Command::new("chroot");
    cmd.arg(&layer).arg("/usr/bin/env").arg("-i");
    // env may not be in the layer: fall back to the host's env outside the chroot.
    if !layer.join("usr/bin/env").exists() {
        cmd = Command::new("env");
        cmd.arg("-i").arg("chroot").arg(&layer);
    }
    for (k, v) in &spec.process.env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.args(&spec.process.args);
    run_timeout(&mut cmd, Duration::from_secs(30))
}

#[test]
fn hello_greets_and_lists_its_root() {
    if !testkit::is_root() {
        skip!("chroot needs root");
    }
    let cache = tempfile::tempdir().unwrap();
    let out = run_in_chroot(&example("hello.toml"), cache.path());
    out.assert_ok();
    let host = run_timeout(Command::new("uname").arg("-n"), Duration::from_secs(10));
    assert!(
        out.stdout
            .starts_with(&format!("Hello from {}\n", host.stdout.trim())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("my root holds:\n"), "{}", out.stdout);
    for entry in ["bin", "proc", "tmp", "usr"] {
        assert!(
            out.stdout.lines().any(|l| l == entry),
            "/{entry} not listed: {}",
            out.stdout
        );
    }
}

#[test]
fn busybox_example_runs_applets() {
    if !Path::new("/bin/busybox").exists() {
        skip!("no /bin/busybox (apt-get install busybox-static)");
    }
    if !testkit::is_root() {
        skip!("chroot needs root");
    }
    let cache = tempfile::tempdir().unwrap();
    let mut spec = example("busybox.toml");
    // ps and df need /proc, which only the runtime mounts: run the applets that work bare.
    spec.process.args = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo hi | wc -c; ls /bin | grep -c .".into(),
    ];
    let out = run_in_chroot(&spec, cache.path());
    out.assert_ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("3"));
    let applets: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(applets > 100, "only {applets} applets linked");
}
