//! `rcl run`: exit statuses, PID 1 duties (reaping, signal forwarding), Ctrl-C, rcl being
//! killed, and that nothing is left behind, as root and rootless.

mod run_common;

use std::time::Duration;

use nix::sys::signal::Signal;
use run_common::{As, Env};

fn exit_codes(who: As) {
    need!(who);
    let env = Env::new(who, "exit");
    let out = env.run(&env.spec("exit 3", ""));
    assert_eq!(out.code(), Some(3), "{out:#?}");
    // Killed by a signal: 128 + N, through rcl's init.
    let out = env.run(&env.spec("kill -9 $$", ""));
    assert_eq!(out.code(), Some(137), "{out:#?}");
    // Same without init: the shell is PID 1, killed by a child's signal to it is ignored,
    // so use a child that kills itself.
    let out = env.run(&env.spec(
        "sh -c 'kill -TERM $$'; echo $?",
        "[lifecycle]\ninit = false\n",
    ));
    assert_eq!(out.stdout, "143\n", "{out:#?}");
    // A missing command: 127 and a clear message.
    let out = env.rcl(&["run", env.spec("true", "").to_str().unwrap(), "--", "/nope"]);
    assert_eq!(out.code(), Some(127), "{out:#?}");
    assert!(
        out.stderr.starts_with("rcl: error: exec /nope: ENOENT"),
        "{out:#?}"
    );
    let spec = env.spec("true", "[lifecycle]\ninit = false\n");
    let out = env.rcl(&["run", spec.to_str().unwrap(), "--", "/nope"]);
    assert_eq!(out.code(), Some(127), "without init too: {out:#?}");
    assert!(
        out.stderr.starts_with("rcl: error: exec /nope: ENOENT"),
        "{out:#?}"
    );
    // `--` replaces the command.
    let out = env.rcl(&[
        "run",
        env.spec("exit 9", "").to_str().unwrap(),
        "--",
        "echo",
        "over",
    ]);
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "over\n"),
        "{out:#?}"
    );
    env.assert_clean();
}

#[test]
fn exit_codes_root() {
    exit_codes(As::Root);
}

#[test]
fn exit_codes_rootless() {
    exit_codes(As::User);
}

fn reaps_zombies(who: As) {
    need!(who);
    let env = Env::new(who, "zombie");
    // The orphaned sleeps are reparented to PID 1 (rcl's init), which must reap them.
    let script = "sh -c 'sleep 0.2 & sleep 0.2 & exit 0'; sleep 1; \
                  grep -l zombie /proc/[0-9]*/status 2>/dev/null | wc -l; \
                  grep -c '' /proc/1/cmdline >/dev/null; echo done";
    let out = env.run(&env.spec(script, ""));
    out.assert_ok();
    assert_eq!(out.stdout, "0\ndone\n", "{out:#?}");
    env.assert_clean();
}

#[test]
fn reaps_zombies_root() {
    reaps_zombies(As::Root);
}

#[test]
fn reaps_zombies_rootless() {
    reaps_zombies(As::User);
}

fn forwards_sigterm(who: As) {
    need!(who);
    let env = Env::new(who, "sigterm");
    let spec = env.spec(
        "trap 'echo got-TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        "",
    );
    let run = env.spawn_until(&["run", spec.to_str().unwrap()], "ready");
    run.signal(Signal::SIGTERM);
    let (code, lines, err) = run.wait();
    assert_eq!(code, Some(7), "{lines:?} {err}");
    assert_eq!(lines, ["ready", "got-TERM"], "{err}");
    env.assert_clean();
}

#[test]
fn forwards_sigterm_root() {
    forwards_sigterm(As::Root);
}

#[test]
fn forwards_sigterm_rootless() {
    forwards_sigterm(As::User);
}

fn ctrl_c_stops(who: As) {
    need!(who);
    let env = Env::new(who, "ctrlc");
    // Ctrl-C: the stop signal (SIGTERM by default) goes to the command, which dies of it.
    let spec = env.spec("echo ready; sleep 100", "");
    let run = env.spawn_until(&["run", spec.to_str().unwrap()], "ready");
    run.signal(Signal::SIGINT);
    let (code, _, err) = run.wait();
    assert_eq!(code, Some(143), "{err}");
    env.assert_clean();

    // A command ignoring the stop signal is killed after stop_timeout.
    let spec = env.spec(
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        "[lifecycle]\nstop_timeout = \"500ms\"\n",
    );
    let run = env.spawn_until(&["run", spec.to_str().unwrap()], "ready");
    let t = std::time::Instant::now();
    run.signal(Signal::SIGINT);
    let (code, _, err) = run.wait();
    assert_eq!(code, Some(137), "{err}");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    env.assert_clean();
}

#[test]
fn ctrl_c_stops_root() {
    ctrl_c_stops(As::Root);
}

#[test]
fn ctrl_c_stops_rootless() {
    ctrl_c_stops(As::User);
}

fn rcl_killed(who: As) {
    need!(who);
    let env = Env::new(who, "sigkill");
    let spec = env.spec("sleep 1000 & echo ready; wait", "[resources]\npids = 50\n");
    let run = env.spawn_until(&["run", spec.to_str().unwrap()], "ready");
    let rcl_pid = run.child.id() as i32;
    assert!(!run_common::processes_with(&env.name).is_empty());
    run.signal(Signal::SIGKILL);
    let (code, _, _) = run.wait();
    assert_eq!(code, Some(137));
    // The holder notices, kills the container, unmounts, removes the state and the cgroup.
    env.assert_clean();
    assert!(run_common::processes_with(&env.name)
        .iter()
        .all(|p| *p != rcl_pid));
}

#[test]
fn rcl_killed_root() {
    rcl_killed(As::Root);
}

#[test]
fn rcl_killed_rootless() {
    rcl_killed(As::User);
}

#[test]
fn check_and_cli() {
    need!(As::Root);
    let env = Env::new(As::Root, "check");
    let good = env.spec("true", "");
    let out = env.rcl(&["check", good.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let bad = env.spec("true", "[resources]\nmemroy = \"1G\"\n");
    let out = env.rcl(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(":8:1: error: unknown key"),
        "names the place: {out:#?}"
    );
    let out = env.rcl(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.code(), Some(2), "{out:#?}");
    let out = env.rcl(&["--version"]);
    assert!(out.stdout.starts_with("rcl "), "{out:#?}");
    let out = env.rcl(&["frobnicate"]);
    assert_eq!(out.code(), Some(2), "{out:#?}");
    env.assert_clean();
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn exit_codes_single_map() {
    exit_codes(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn forwards_sigterm_single_map() {
    forwards_sigterm(As::Unmapped);
}

/// Rootless without a /etc/subuid range: a single-id map.
#[test]
fn rcl_killed_single_map() {
    rcl_killed(As::Unmapped);
}
