//! `rcl run`: what the container sees (PID 1, hostname, mounts, devices, masked paths,
//! network, capabilities, users), as root and rootless.

mod run_common;

use run_common::{As, Env};

fn pid1_and_ps(who: As) {
    need!(who);
    let env = Env::new(who, "pid1");
    let spec = env.spec(
        "echo pid=$$; ps -o pid,comm > /tmp/ps; tail -n +2 /tmp/ps | wc -l",
        "[lifecycle]\ninit = false\n",
    );
    let out = env.run(&spec);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out:#?}");
    // Only the shell and ps itself.
    assert_eq!(lines[1].trim(), "2", "{out:#?}");
    assert_eq!(out.stderr, "", "rcl must print nothing extra");
    env.assert_clean();
}

#[test]
fn pid1_root() {
    pid1_and_ps(As::Root);
}

#[test]
fn pid1_rootless() {
    pid1_and_ps(As::User);
}

fn hostname_layers_etc(who: As) {
    need!(who);
    let env = Env::new(who, "host");
    let spec = env.spec(
        "hostname; cat /etc/hostname; cat /app.txt; cat /etc/motd; grep -c localhost /etc/hosts; \
         ping -c1 -W2 localhost >/dev/null && echo resolved; echo HOSTNAME=$HOSTNAME HOME=$HOME; \
         umask",
        "",
    );
    let out = env.run(&spec);
    out.assert_ok();
    let name = &env.name;
    let want = format!(
        "{name}\n{name}\nhello from the app layer\napp motd\n2\nresolved\nHOSTNAME={name} HOME=/root\n0022\n"
    );
    assert_eq!(out.stdout, want, "{out:#?}");
    env.assert_clean();
}

#[test]
fn hostname_layers_etc_root() {
    hostname_layers_etc(As::Root);
}

#[test]
fn hostname_layers_etc_rootless() {
    hostname_layers_etc(As::User);
}

fn mounts_and_masks(who: As) {
    need!(who);
    let env = Env::new(who, "mounts");
    let script = r#"
ls /dev | tr '\n' ' '; echo
for d in null zero full random urandom tty; do [ -c /dev/$d ] && echo -n "$d "; done; echo
readlink /dev/ptmx; [ -d /dev/pts ] && echo pts
grep -E ' /(proc|sys|dev|dev/pts|dev/shm|dev/mqueue) ' /proc/self/mountinfo | awk '{print $5, $8}' | sort
touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro
echo -n kcore=; wc -c < /proc/kcore 2>/dev/null || echo none
echo -n keys=; cat /proc/keys | wc -c
echo -n firmware=; ls -A /sys/firmware | wc -l
echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo procsys-writable || echo procsys-ro
echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-ro
head -c 4 /dev/zero | wc -c
echo data > /dev/shm/f && cat /dev/shm/f
"#;
    let spec = env.spec(script, "");
    let out = env.run(&spec);
    out.assert_ok();
    let o = &out.stdout;
    for want in [
        "core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero",
        "null zero full random urandom tty \n",
        "pts/ptmx\npts\n",
        "/dev tmpfs",
        "/dev/pts devpts",
        "/dev/shm tmpfs",
        "/dev/mqueue mqueue",
        "/proc proc",
        "/sys sysfs",
        "sys-ro",
        "keys=0",
        "firmware=0",
        "procsys-ro",
        "sysrq-ro",
        "\n4\n",
        "data\n",
    ] {
        assert!(o.contains(want), "missing {want:?} in:\n{o}\n{out:#?}");
    }
    assert!(
        o.contains("kcore=0") || o.contains("kcore=none"),
        "/proc/kcore readable: {o}"
    );
    env.assert_clean();
}

#[test]
fn mounts_and_masks_root() {
    mounts_and_masks(As::Root);
}

#[test]
fn mounts_and_masks_rootless() {
    mounts_and_masks(As::User);
}

fn network_none(who: As) {
    need!(who);
    let env = Env::new(who, "net");
    let spec = env.spec("ls /sys/class/net; ip -o link | awk '{print $2, $3}'", "");
    let out = env.run(&spec);
    out.assert_ok();
    assert_eq!(out.stdout.lines().next(), Some("lo"), "{out:#?}");
    let link = out.stdout.lines().nth(1).unwrap_or_default();
    assert!(link.starts_with("lo: <LOOPBACK,UP"), "{out:#?}");
    assert_eq!(out.stdout.lines().count(), 2, "only lo: {out:#?}");
    env.assert_clean();
}

#[test]
fn network_none_root() {
    network_none(As::Root);
}

#[test]
fn network_none_rootless() {
    network_none(As::User);
}

fn capabilities(who: As) {
    need!(who);
    let env = Env::new(who, "caps");
    let spec = env.spec(
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; id",
        "",
    );
    let out = env.run(&spec);
    out.assert_ok();
    assert!(out.stdout.contains("CapEff:\t00000000a80425fb"), "{out:#?}");
    assert!(out.stdout.contains("Seccomp:\t2"), "{out:#?}");
    assert!(out.stdout.contains("uid=0(root) gid=0(root)"), "{out:#?}");

    let env2 = Env::new(who, "capsuser");
    let spec = env2.spec(
        "grep -E '^CapEff:' /proc/self/status; id -u; id -g",
        "user = \"user\"\n",
    );
    let out = env2.run(&spec);
    if who == As::Unmapped {
        // A single-id map cannot switch to uid 1000: a clear error, nothing ran.
        assert_eq!(out.code(), Some(127), "{out:#?}");
        assert!(
            out.stderr
                .contains("uid 1000 does not exist in this user namespace"),
            "{out:#?}"
        );
        assert!(out.stderr.contains("/etc/subuid"), "{out:#?}");
        env.assert_clean();
        env2.assert_clean();
        return;
    }
    out.assert_ok();
    assert_eq!(
        out.stdout, "CapEff:\t0000000000000000\n1000\n1000\n",
        "{out:#?}"
    );
    env.assert_clean();
    env2.assert_clean();
}

#[test]
fn capabilities_root() {
    capabilities(As::Root);
}

#[test]
fn capabilities_rootless() {
    capabilities(As::User);
}

fn shared_namespaces(who: As) {
    need!(who);
    let env = Env::new(who, "hostns");
    // Host network: the host's interfaces, and /sys is the host's, read-only all the way down.
    let spec = env.spec(
        "ls /sys/class/net | wc -l; touch /sys/x 2>/dev/null || echo sys-ro; \
         for m in $(awk '$5 ~ \"^/sys/\" {print $5}' /proc/self/mountinfo); do \
         touch $m/x 2>/dev/null && echo writable $m; done; echo end; hostname; echo $$; \
         cat /proc/keys | wc -c",
        "[namespaces]\nnetwork = \"host\"\npid = \"host\"\nuts = \"host\"\nipc = \"host\"\n\
         cgroup = \"host\"\n",
    );
    let out = env.run(&spec);
    out.assert_ok();
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(host_ifaces.to_string().as_str()),
        "{out:#?}"
    );
    assert_eq!(lines.next(), Some("sys-ro"), "{out:#?}");
    assert_eq!(
        lines.next(),
        Some("end"),
        "a /sys submount is writable: {out:#?}"
    );
    env.assert_clean();
}

#[test]
fn shared_namespaces_root() {
    shared_namespaces(As::Root);
}

#[test]
fn shared_namespaces_rootless() {
    shared_namespaces(As::User);
}

fn umask_and_rlimits(who: As) {
    need!(who);
    let env = Env::new(who, "rlimits");
    let spec = env.spec(
        "grep -E '^Sig(Ign|Blk)' /proc/self/status; ulimit -n; ulimit -Hn; umask",
        "umask = \"0027\"\nrlimits = { nofile = [512, 1000] }\n",
    );
    let out = env.run(&spec);
    out.assert_ok();
    // Nothing ignored or blocked reaches the command (rcl itself ignores SIGPIPE, and the test
    // harness may ignore others).
    assert_eq!(
        out.stdout, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n512\n1000\n0027\n",
        "{out:#?}"
    );
    // The default: soft 1024 (Docker's), hard as high as allowed.
    let out = env.run(&env.spec("ulimit -n", ""));
    assert_eq!(out.stdout, "1024\n", "{out:#?}");
    env.assert_clean();
}

#[test]
fn umask_and_rlimits_root() {
    umask_and_rlimits(As::Root);
}

#[test]
fn umask_and_rlimits_rootless() {
    umask_and_rlimits(As::User);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn pid1_single_map() {
    pid1_and_ps(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn mounts_and_masks_single_map() {
    mounts_and_masks(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn network_none_single_map() {
    network_none(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn hostname_layers_etc_single_map() {
    hostname_layers_etc(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn capabilities_single_map() {
    capabilities(As::Unmapped);
}
