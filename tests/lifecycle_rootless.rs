//! `rcl up` and friends in the `rcl run` test environment (busybox layers), mostly as an
//! unprivileged user: records under `$XDG_RUNTIME_DIR/rcl`, data under `$XDG_DATA_HOME/rcl`,
//! exec into the container's user namespace with the spec's user, a killed supervisor noticed,
//! and nothing left behind.

mod run_common;

use std::time::{Duration, Instant};

use run_common::{As, Env};

/// Kills, by pid, the supervisors of container `name` a failed test left running (which takes
/// their containers along).
struct SupervisorGuard(String);

impl Drop for SupervisorGuard {
    fn drop(&mut self) {
        let out = std::process::Command::new("pgrep")
            .args(["-f", &format!("__supervise {}$", self.0)])
            .output();
        if let Ok(out) = out {
            for pid in String::from_utf8_lossy(&out.stdout).lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

fn ps(env: &Env) -> Vec<serde_json::Value> {
    let out = env.rcl(&["ps", "--json"]);
    out.assert_ok();
    serde_json::from_str(&out.stdout).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rootless_up_exec_logs_stop_down() {
    need!(As::User);
    let env = Env::new(As::User, "lcup");
    let _guard = SupervisorGuard(env.name.clone());
    let spec = env.spec(
        "echo started; touch /tmp/mark; while true; do sleep 1; done",
        "[healthcheck]\ncommand = \"test -e /tmp/mark\"\ninterval = \"200ms\"\n",
    );
    let s = spec.to_str().unwrap();
    let out = env.rcl(&["up", s]);
    out.assert_ok();
    let recs = ps(&env);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "running", "{recs:?}");
    // Records live in the user's runtime dir, data in the user's data dir.
    assert!(env
        .path(&format!("home/run/rcl/containers/{}.json", env.name))
        .exists());
    assert!(env
        .path(&format!(
            "home/data/rcl/containers/{}/logs/container.log",
            env.name
        ))
        .exists());

    wait_for("healthy (checks run through exec)", || {
        ps(&env)[0]["health"] == "healthy"
    });
    let l = env.rcl(&["logs", &env.name]);
    assert_eq!(l.stdout, "started\n");

    // exec lands in the container's user namespace as its root, in its pid namespace.
    let e = env.rcl(&[
        "exec",
        &env.name,
        "--",
        "sh",
        "-c",
        "echo uid=$(id -u); echo pid=$$; cat /app.txt; cat /proc/self/uid_map",
    ]);
    e.assert_ok();
    let lines: Vec<&str> = e.stdout.lines().collect();
    assert_eq!(lines[0], "uid=0", "{e:?}");
    let pid: u32 = lines[1].strip_prefix("pid=").unwrap().parse().unwrap();
    assert!(pid < 100, "not in the container's pid namespace: {e:?}");
    assert_eq!(lines[2], "hello from the app layer");
    let (uid, _) = testkit::test_user().unwrap();
    let map0: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        map0[..2],
        ["0", &uid.to_string()],
        "uid 0 maps to the test user: {e:?}"
    );

    let d = env.rcl(&["diff", &env.name]);
    assert!(d.stdout.lines().any(|l| l == "A /tmp/mark"), "{d:?}");

    env.rcl(&["stop", &env.name]).assert_ok();
    assert_eq!(ps(&env)[0]["status"], "exited");
    env.rcl(&["down", s]).assert_ok();
    assert!(ps(&env).is_empty());
    env.assert_clean();
}

#[test]
fn rootless_supervisor_killed() {
    need!(As::User);
    let env = Env::new(As::User, "lckill");
    let _guard = SupervisorGuard(env.name.clone());
    let spec = env.spec("while true; do sleep 1; done", "");
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    let r = &ps(&env)[0];
    let sup = r["supervisor"]["pid"].as_i64().unwrap() as i32;
    let init = r["init_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the container to die", || {
        rcl::state::ProcRef::of(init).is_none()
    });
    let r = &ps(&env)[0];
    assert_eq!(r["status"], "exited");
    env.rcl(&["rm", &env.name]).assert_ok();
    assert!(ps(&env).is_empty());
    env.assert_clean();
}

/// exec takes the spec's user, capabilities and seccomp filter, and joins the container's
/// cgroup (the same groups as its PID 1).
fn exec_as_the_spec_user(who: As) {
    need!(who);
    let env = Env::new(who, "lcexecuser");
    let _guard = SupervisorGuard(env.name.clone());
    let spec = env.spec("while true; do sleep 1; done", "user = \"user\"\n");
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    let e = env.rcl(&[
        "exec",
        &env.name,
        "--",
        "sh",
        "-c",
        "grep -E '^(SigBlk|CapEff|Seccomp):' /proc/self/status; id -u; id -g; \
         if cmp -s /proc/self/cgroup /proc/1/cgroup; then echo same-cgroup; fi",
    ]);
    e.assert_ok();
    let lines: Vec<&str> = e.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "SigBlk:\t0000000000000000",
            "CapEff:\t0000000000000000",
            "Seccomp:\t2",
            "1000",
            "1000",
            "same-cgroup"
        ],
        "{e:?}"
    );
    env.rcl(&["down", spec.to_str().unwrap()]).assert_ok();
    env.assert_clean();
}

#[test]
fn exec_as_the_spec_user_root() {
    exec_as_the_spec_user(As::Root);
}

#[test]
fn exec_as_the_spec_user_rootless() {
    exec_as_the_spec_user(As::User);
}
