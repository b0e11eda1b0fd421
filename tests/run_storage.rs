//! `rcl run`: the root filesystem's upper layer (throwaway, persistent, none), named volumes,
//! bind and tmpfs mounts, as root and rootless.

mod run_common;

use run_common::{As, Env};

fn readonly_rootfs(who: As) {
    need!(who);
    let env = Env::new(who, "ro");
    let spec = env.spec_with(
        "readonly = true",
        "touch /newfile 2>&1; echo rc=$?; cat /app.txt",
        "",
    );
    let out = env.run(&spec);
    out.assert_ok();
    assert!(out.stdout.contains("Read-only file system"), "{out:#?}");
    assert!(
        out.stdout.contains("rc=1\nhello from the app layer\n"),
        "{out:#?}"
    );
    env.assert_clean();
}

#[test]
fn readonly_rootfs_root() {
    readonly_rootfs(As::Root);
}

#[test]
fn readonly_rootfs_rootless() {
    readonly_rootfs(As::User);
}

fn uppers(who: As) {
    need!(who);
    let env = Env::new(who, "upper");
    // Throwaway upper: writes work, and are gone next time.
    let spec = env.spec(
        "cat /scratch 2>/dev/null || echo fresh; ls /app.txt; echo x > /scratch; rm /app.txt; \
         ls /app.txt 2>/dev/null || echo removed",
        "",
    );
    for _ in 0..2 {
        let out = env.run(&spec);
        out.assert_ok();
        assert_eq!(out.stdout, "fresh\n/app.txt\nremoved\n", "{out:#?}");
    }
    env.assert_clean();

    // Persistent upper: changes land there and are seen by the next run.
    env.owned_dir("state");
    let upper = env.owned_dir("state/upper");
    let spec = env.spec_with(
        &format!("upper = {:?}", upper.display().to_string()),
        "cat /data 2>/dev/null || echo first; echo kept > /data; mkdir -p /srv/d; \
         echo more >> /app.txt",
        "",
    );
    let out = env.run(&spec);
    out.assert_ok();
    assert_eq!(out.stdout, "first\n", "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(upper.join("data")).unwrap(),
        "kept\n"
    );
    assert!(upper.join("srv/d").is_dir());
    assert_eq!(
        std::fs::read_to_string(upper.join("app.txt")).unwrap(),
        "hello from the app layer\nmore\n"
    );
    // The lower layer is untouched.
    assert_eq!(
        std::fs::read_to_string(env.path("layers/app/app.txt")).unwrap(),
        "hello from the app layer\n"
    );
    let out = env.run(&spec);
    out.assert_ok();
    assert_eq!(out.stdout, "kept\n", "{out:#?}");
    env.assert_clean();
}

#[test]
fn uppers_root() {
    uppers(As::Root);
}

#[test]
fn uppers_rootless() {
    uppers(As::User);
}

fn volumes_binds_tmpfs(who: As) {
    need!(who);
    let env = Env::new(who, "vol");
    let src = env.owned_dir("hostsrc");
    std::fs::write(src.join("in.txt"), "from the host\n").unwrap();
    run_common::open_up(&src);
    let body = format!(
        "[[mounts]]\ntype = \"volume\"\nsource = \"cache-{name}\"\ntarget = \"/cache\"\n\
         [[mounts]]\ntype = \"bind\"\nsource = {src:?}\ntarget = \"/src\"\nreadonly = true\n\
         [[mounts]]\ntype = \"tmpfs\"\ntarget = \"/scratch\"\nsize = \"1M\"\n",
        name = env.name,
        src = src.display().to_string(),
    );
    let script = "cat /cache/count 2>/dev/null || echo none; echo run >> /cache/count; \
                  cat /src/in.txt; echo no > /src/w 2>/dev/null || echo bind-ro; \
                  grep ' /scratch ' /proc/self/mountinfo | grep -c tmpfs; \
                  head -c 2000000 /dev/zero > /scratch/big 2>/dev/null || echo tmpfs-full";
    let spec = env.spec(script, &body);
    let out = env.run(&spec);
    out.assert_ok();
    assert_eq!(
        out.stdout, "none\nfrom the host\nbind-ro\n1\ntmpfs-full\n",
        "{out:#?}"
    );
    let out = env.run(&spec);
    out.assert_ok();
    assert!(out.stdout.starts_with("run\nfrom the host\n"), "{out:#?}");
    let vol = env.path(&format!("home/data/rcl/volumes/cache-{}", env.name));
    let vol = if who == As::Root {
        std::path::PathBuf::from(format!("/var/lib/rcl/volumes/cache-{}", env.name))
    } else {
        vol
    };
    assert_eq!(
        std::fs::read_to_string(vol.join("count")).unwrap(),
        "run\nrun\n"
    );
    assert!(!src.join("w").exists());
    if who == As::Root {
        let _ = std::fs::remove_dir_all(&vol);
    }
    env.assert_clean();
}

#[test]
fn volumes_binds_tmpfs_root() {
    volumes_binds_tmpfs(As::Root);
}

#[test]
fn volumes_binds_tmpfs_rootless() {
    volumes_binds_tmpfs(As::User);
}

#[test]
fn root_with_userns() {
    need!(As::Root);
    let env = Env::new(As::Root, "userns");
    let spec = env.spec("cat /proc/self/uid_map | wc -l; echo hi > /f; cat /f", "");
    let out = env.rcl(&["run", "--userns", spec.to_str().unwrap()]);
    out.assert_ok();
    // A user namespace has a real map (the initial namespace's is 0 0 4294967295).
    let uid_map = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(uid_map == "1" || uid_map == "2", "{out:#?}");
    assert!(out.stdout.ends_with("hi\n"), "{out:#?}");
    env.assert_clean();
}

#[test]
fn hello_example() {
    need!(As::Root);
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/hello.toml");
    let env = Env::new(As::Root, "hello");
    let out = env.rcl(&["run", spec.to_str().unwrap()]);
    out.assert_ok();
    assert!(
        out.stdout.starts_with("Hello from hello\nI am pid 2\n"),
        "{out:#?}"
    );
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn uppers_single_map() {
    uppers(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn volumes_binds_tmpfs_single_map() {
    volumes_binds_tmpfs(As::Unmapped);
}
