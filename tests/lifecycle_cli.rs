//! `rcl up`, `ps`, `logs`, `exec`, `stop`, `down`, `rm`, `stats`, `diff`, `commit` for real:
//! the rcl binary, real containers on the union filesystem, detached supervisors.
//!
//! Each test keeps its records apart with `RCL_STATE_DIR` / `RCL_DATA_DIR` and unique names,
//! and its guard kills any supervisor it left (which takes the container and mount along).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::Output;

const TIMEOUT: Duration = Duration::from_secs(90);

fn unavailable() -> Option<String> {
    if let Some(why) = testkit::fuse_unavailable() {
        return Some(why);
    }
    for p in [
        "/bin/sh",
        "/bin/sleep",
        "/bin/cat",
        "/usr/bin/test",
        "/bin/touch",
    ] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing"));
        }
    }
    None
}

macro_rules! need {
    () => {
        if let Some(why) = unavailable() {
            testkit::skip!("{why}");
        }
    };
}

struct Env {
    dir: tempfile::TempDir,
    tag: String,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = testkit::shared_tempdir();
        Env {
            dir,
            tag: format!("lc{}{tag}", std::process::id()),
        }
    }

    fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.tag)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn rcl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(testkit::workspace_bin("rcl"));
        cmd.args(args)
            .env("RCL_STATE_DIR", self.state())
            .env("RCL_DATA_DIR", self.path("data"));
        testkit::run_timeout(&mut cmd, TIMEOUT)
    }

    fn write_spec(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.rcl(&["ps", "--json"]);
        out.assert_ok();
        serde_json::from_str(&out.stdout).unwrap()
    }

    fn record(&self, name: &str) -> serde_json::Value {
        self.ps()
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in ps"))
    }

    fn wait_for(&self, what: &str, mut f: impl FnMut(&Env) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill every supervisor this test left: the holder then kills the container and its
        // mount goes with the holder's mount namespace.
        if let Ok(rd) = std::fs::read_dir(self.state()) {
            for e in rd.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if let Some(pid) = v["supervisor"]["pid"].as_i64() {
                    let start = v["supervisor"]["start_time"].as_u64();
                    if rcl::state::ProcRef::of(pid as i32).map(|p| p.start_time) == start {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
    }
}

fn layers() -> &'static str {
    r#"layers = [{ host = ["/bin/sh", "/bin/echo", "/bin/sleep", "/bin/cat", "/usr/bin/test", "/bin/touch", "/bin/rm"] }]"#
}

fn alive(pid: i64) -> bool {
    rcl::state::ProcRef::of(pid as i32).is_some()
}

fn no_mount_of(tag: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    !info.contains(tag)
}

#[test]
fn up_ps_logs_exec_diff_commit_stop_down() {
    need!();
    let env = Env::new("main");
    let web = env.name("web");
    let spec = env.write_spec(
        "web.toml",
        &format!(
            r#"
name = "{web}"
hostname = "webhost"
[rootfs]
{layers}
[process]
command = "echo hello; echo oops >&2; touch /made; rm /bin/rm; while true; do sleep 1; done"
[lifecycle]
stop_timeout = "3s"
[healthcheck]
command = "test -e /made"
interval = "200ms"
retries = 2
"#,
            layers = layers()
        ),
    );
    let spec_s = spec.to_str().unwrap();
    let out = env.rcl(&["up", spec_s]);
    out.assert_ok();
    assert!(out.stdout.contains(&format!("{web}: started")), "{out:?}");
    // Again: a no-op.
    let out = env.rcl(&["up", spec_s]);
    out.assert_ok();
    assert!(out.stdout.contains("up to date"), "{out:?}");

    let r = env.record(&web);
    assert_eq!(r["status"], "running");
    let pid = r["init_pid"].as_i64().unwrap();
    assert!(alive(pid));
    env.wait_for("healthy", |e| e.record(&web)["health"] == "healthy");
    let table = env.rcl(&["ps"]);
    let row = table.stdout.lines().find(|l| l.starts_with(&web)).unwrap();
    assert!(row.contains("running") && row.contains("healthy"), "{row}");
    assert!(
        row.contains(&pid.to_string()) && row.contains("echo hello"),
        "{row}"
    );

    // Logs: stdout lines on stdout, stderr lines on stderr, timestamps on request.
    env.wait_for("log lines", |e| {
        e.rcl(&["logs", &web]).stderr.contains("oops")
    });
    let l = env.rcl(&["logs", &web]);
    assert_eq!(l.stdout, "hello\n");
    assert_eq!(l.stderr, "oops\n");
    let l = env.rcl(&["logs", "--timestamps", "--since", "1h", &web]);
    assert!(
        l.stdout.starts_with("20") && l.stdout.ends_with(" hello\n"),
        "{l:?}"
    );
    let l = env.rcl(&["logs", "--since", "bogus", &web]);
    assert!(!l.success() && l.stderr.contains("bogus"), "{l:?}");

    // exec: inside the namespaces (hostname, pid namespace, root), exit codes pass through.
    let e = env.rcl(&[
        "exec",
        &web,
        "--",
        "sh",
        "-c",
        "cat /etc/hostname; echo $$; test -e /made && echo root-ok",
    ]);
    e.assert_ok();
    let lines: Vec<&str> = e.stdout.lines().collect();
    assert_eq!(lines[0], "webhost");
    let inner_pid: i64 = lines[1].parse().unwrap();
    assert!(
        inner_pid < 100,
        "pid {inner_pid} is not in the container's pid namespace"
    );
    assert_eq!(lines[2], "root-ok");
    let e = env.rcl(&["exec", &web, "--", "sh", "-c", "exit 7"]);
    assert_eq!(e.code(), Some(7), "{e:?}");
    let e = env.rcl(&["exec", &web, "--", "/no/such/prog"]);
    assert_eq!(e.code(), Some(127), "{e:?}");
    assert!(e.stderr.contains("/no/such/prog"), "{e:?}");
    // Capabilities are the container's (Docker's defaults), not root's full set.
    let e = env.rcl(&["exec", &web, "--", "sh", "-c", "cat /proc/self/status"]);
    let capeff = e.stdout.lines().find(|l| l.starts_with("CapEff")).unwrap();
    assert!(capeff.ends_with("00000000a80425fb"), "{capeff}");

    // stats from the container's cgroup.
    let s = env.rcl(&["stats", "--json", &web]);
    s.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert!(v[0]["pids_current"].as_u64().unwrap() >= 1, "{v}");

    // diff and commit.
    let d = env.rcl(&["diff", &web]);
    d.assert_ok();
    assert!(d.stdout.lines().any(|l| l == "A /made"), "{d:?}");
    // The mountpoints rcl made (/etc/hostname, /etc/hosts, /proc...) are not changes.
    assert!(
        !d.stdout
            .lines()
            .any(|l| ["/etc/hostname", "/etc/hosts", "/proc", "/dev"]
                .iter()
                .any(|s| l.ends_with(s))),
        "{d:?}"
    );
    // The host layer keeps programs at their resolved paths (/bin may be a link to usr/bin).
    assert!(
        d.stdout
            .lines()
            .any(|l| l.starts_with("D /") && l.ends_with("bin/rm")),
        "{d:?}"
    );
    let layer = env.path("layer");
    env.rcl(&["commit", &web, layer.to_str().unwrap()])
        .assert_ok();
    assert!(layer.join("made").exists());
    let tarball = env.path("layer.tar");
    env.rcl(&["commit", "--tar", &web, tarball.to_str().unwrap()])
        .assert_ok();
    assert!(std::fs::metadata(&tarball).unwrap().len() > 0);
    // A later spec can use the committed layer over the original ones: rcl-fs reads it,
    // whiteouts included.
    let reuse = env.write_spec(
        "reuse.toml",
        &format!(
            "name = \"{web}-reuse\"\n[rootfs]\nlayers = [{:?}, {{ host = [\"/bin/sh\", \"/bin/rm\", \"/usr/bin/test\"] }}]\n\
             [process]\ncommand = \"test -e /made && ! test -e /usr/bin/rm && ! test -e /bin/rm && echo reused\"\n",
            layer.display().to_string()
        ),
    );
    let run = env.rcl(&["run", reuse.to_str().unwrap()]);
    assert_eq!(run.stdout, "reused\n", "{run:?}");
    let again = env.rcl(&["commit", &web, layer.to_str().unwrap()]);
    assert!(!again.success() && again.stderr.contains("already exists"));

    // rm refuses a running container.
    let rm = env.rcl(&["rm", &web]);
    assert!(
        !rm.success() && rm.stderr.contains("stop it first"),
        "{rm:?}"
    );

    // stop: the stop signal (sh dies of SIGTERM), nothing restarted.
    let t0 = Instant::now();
    env.rcl(&["stop", &web]).assert_ok();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let r = env.record(&web);
    assert_eq!(r["status"], "exited");
    assert_eq!(r["exit_code"], 143);
    assert!(!alive(pid));
    assert!(no_mount_of(&web));
    // The upper layer survives a stop: diff still works.
    assert!(env.rcl(&["diff", &web]).stdout.contains("A /made"));

    env.rcl(&["down", spec_s]).assert_ok();
    assert!(env.ps().is_empty());
    assert!(!env.path("data").join(&web).exists());
}

#[test]
fn a_killed_supervisor_takes_its_container_and_mount_along() {
    need!();
    let env = Env::new("kill");
    let app = env.name("app");
    let spec = env.write_spec(
        "app.toml",
        &format!(
            "name = \"{app}\"\n[rootfs]\n{}\n[process]\ncommand = \"while true; do sleep 1; done\"\n",
            layers()
        ),
    );
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    let r = env.record(&app);
    let pid = r["init_pid"].as_i64().unwrap();
    let sup = r["supervisor"]["pid"].as_i64().unwrap();
    // The runtime's per-run state directory (it holds the union mount's mountpoint).
    let run_dir = rcl::paths::state_dir().join(r["container_id"].as_str().unwrap());
    assert!(run_dir.exists(), "{}", run_dir.display());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_for("the container to die", |_| !alive(pid));
    env.wait_for("the mount to go", |_| no_mount_of(&app));
    env.wait_for("the run's state to be cleaned", |_| !run_dir.exists());
    let r = env.record(&app);
    assert_eq!(r["status"], "exited");
    assert!(r["error"].as_str().unwrap().contains("supervisor is gone"));
    // rm cleans up after it; `up` would have started it again.
    env.rcl(&["rm", &app]).assert_ok();
    assert!(env.ps().is_empty());
}

#[test]
fn restart_policy_with_real_containers() {
    need!();
    let env = Env::new("restart");
    let job = env.name("job");
    let spec = env.write_spec(
        "job.toml",
        &format!(
            "name = \"{job}\"\n[rootfs]\n{}\n[process]\ncommand = \"echo run; exit 3\"\n\
             [lifecycle]\nrestart = \"on-failure:2\"\n",
            layers()
        ),
    );
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    env.wait_for("retries used up", |e| {
        let r = e.record(&job);
        r["status"] == "exited" && r["restart_count"] == 2
    });
    let r = env.record(&job);
    assert_eq!(r["exit_code"], 3);
    let l = env.rcl(&["logs", &job]);
    assert_eq!(l.stdout, "run\nrun\nrun\n");
    // down still finds the spec's containers once the spec file is gone.
    std::fs::remove_file(&spec).unwrap();
    let out = env.rcl(&["down", spec.to_str().unwrap()]);
    out.assert_ok();
    assert!(out.stdout.contains(&format!("{job}: removed")), "{out:?}");
    assert!(env.ps().is_empty());
}

#[test]
fn a_changed_spec_recreates_only_the_changed_container() {
    need!();
    let env = Env::new("stack");
    let (a, b) = (env.name("a"), env.name("b"));
    let stack = |cmd_b: &str| {
        format!(
            "[containers.{a}]\nrootfs.{l}\nprocess.command = \"while true; do sleep 1; done\"\n\
             [containers.{b}]\nrootfs.{l}\nprocess.command = \"{cmd_b}\"\ndepends_on = [\"{a}\"]\n",
            l = layers()
        )
    };
    let spec = env.write_spec("stack.toml", &stack("while true; do sleep 1; done"));
    let s = spec.to_str().unwrap();
    env.rcl(&["up", s]).assert_ok();
    let pid_a = env.record(&a)["init_pid"].as_i64().unwrap();
    let pid_b = env.record(&b)["init_pid"].as_i64().unwrap();

    env.write_spec("stack.toml", &stack("while true; do sleep 2; done"));
    let out = env.rcl(&["up", s]);
    out.assert_ok();
    assert!(out.stdout.contains(&format!("{a}: up to date")), "{out:?}");
    assert!(out.stdout.contains(&format!("{b}: started")), "{out:?}");
    assert_eq!(env.record(&a)["init_pid"].as_i64().unwrap(), pid_a);
    let new_b = env.record(&b)["init_pid"].as_i64().unwrap();
    assert_ne!(new_b, pid_b);
    assert!(!alive(pid_b));

    // Another spec may not take a name this one owns.
    let other = env.write_spec(
        "other.toml",
        &format!(
            "name = \"{a}\"\n[rootfs]\n{}\n[process]\ncommand = \"true\"\n",
            layers()
        ),
    );
    let out = env.rcl(&["up", other.to_str().unwrap()]);
    assert!(!out.success());
    assert!(
        out.stderr.contains(&a) && out.stderr.contains("stack.toml"),
        "{out:?}"
    );
    assert_eq!(env.record(&a)["init_pid"].as_i64().unwrap(), pid_a);

    env.rcl(&["down", s]).assert_ok();
    assert!(env.ps().is_empty());
    assert!(!alive(pid_a) && !alive(new_b));
}

#[test]
fn a_failed_dependency_leaves_nothing_half_started() {
    need!();
    let env = Env::new("dep");
    let (db, setup, app) = (env.name("db"), env.name("setup"), env.name("app"));
    let spec = env.write_spec(
        "dep.toml",
        &format!(
            "[containers.{db}]\nrootfs.{l}\nprocess.command = \"while true; do sleep 1; done\"\n\
             [containers.{setup}]\nrootfs.{l}\nprocess.command = \"echo failing; exit 4\"\n\
             depends_on = [\"{db}\"]\n\
             [containers.{app}]\nrootfs.{l}\nprocess.command = \"sleep 100\"\n\
             depends_on = {{ {setup} = \"completed\" }}\n",
            l = layers()
        ),
    );
    let out = env.rcl(&["up", spec.to_str().unwrap()]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("container {setup}")) && out.stderr.contains("status 4"),
        "{out:?}"
    );
    // db was started by this `up` and stopped again; app never started.
    let recs = env.ps();
    assert!(recs.iter().all(|r| r["status"] == "exited"), "{recs:?}");
    assert!(!recs.iter().any(|r| r["name"] == app.as_str()));
    assert!(no_mount_of(&env.tag));
    env.rcl(&["down", spec.to_str().unwrap()]).assert_ok();
}

#[test]
fn errors_name_the_container_or_the_file() {
    let env = Env::new("err");
    let bad = env.write_spec("bad.toml", "name = \"x\"\n[process]\ncommand = 5\n");
    let out = env.rcl(&["up", bad.to_str().unwrap()]);
    assert!(!out.success());
    assert!(out.stderr.contains("bad.toml:3"), "{out:?}");
    for args in [
        vec!["logs", "ghost"],
        vec!["stop", "ghost"],
        vec!["diff", "ghost"],
        vec!["exec", "ghost", "--", "true"],
        vec!["rm", "ghost"],
    ] {
        let out = env.rcl(&args);
        assert!(!out.success(), "{args:?}");
        assert!(out.stderr.contains("ghost"), "{args:?}: {out:?}");
    }
    assert!(env.ps().is_empty());
}

#[test]
fn concurrent_commands_start_a_container_once() {
    need!();
    let env = Env::new("conc");
    let c = env.name("c");
    let spec = env.write_spec(
        "c.toml",
        &format!(
            "name = \"{c}\"\n[rootfs]\n{}\n[process]\ncommand = \"while true; do sleep 1; done\"\n",
            layers()
        ),
    );
    let s = spec.to_str().unwrap().to_string();
    let env = std::sync::Arc::new(env);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let env = env.clone();
            let s = s.clone();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    env.rcl(&["up", &s])
                } else {
                    // Readers in between never see a torn record.
                    env.rcl(&["ps", "--json"])
                }
            })
        })
        .collect();
    let outs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for o in &outs {
        o.assert_ok();
    }
    let started = outs
        .iter()
        .filter(|o| o.stdout.contains(&format!("{c}: started")))
        .count();
    assert_eq!(started, 1, "{outs:?}");
    let sups = std::process::Command::new("pgrep")
        .args(["-f", &format!("__supervise {c}$")])
        .output()
        .unwrap();
    // The holder and the filesystem server are forks of the supervisor (same command line):
    // count the processes whose parent is not one of them.
    let pids: Vec<i32> = String::from_utf8_lossy(&sups.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let ppid = |p: i32| -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        rest.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let tops = pids.iter().filter(|&&p| !pids.contains(&ppid(p))).count();
    assert_eq!(tops, 1, "one supervisor: {pids:?}");
    env.rcl(&["down", &s]).assert_ok();
    assert!(env.ps().is_empty());
}

#[test]
fn logs_follow_ends_when_the_container_is_gone() {
    need!();
    let env = Env::new("follow");
    let t = env.name("t");
    let spec = env.write_spec(
        "t.toml",
        &format!(
            "name = \"{t}\"\n[rootfs]\n{}\n[process]\n\
             command = \"i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done\"\n\
             [lifecycle]\nstop_timeout = \"2s\"\n",
            layers()
        ),
    );
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    let mut follow = Command::new(testkit::workspace_bin("rcl"));
    follow
        .args(["logs", "-f", &t])
        .env("RCL_STATE_DIR", env.state())
        .env("RCL_DATA_DIR", env.path("data"));
    let env = std::sync::Arc::new(env);
    let follower = std::thread::spawn(move || testkit::run_timeout(&mut follow, TIMEOUT));
    std::thread::sleep(Duration::from_millis(800));
    env.rcl(&["stop", &t]).assert_ok();
    let out = follower.join().unwrap();
    assert!(out.status.is_some(), "logs -f did not end: {out:?}");
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 4, "{out:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line {i}"), "every line once, in order");
    }
    // Everything the container wrote is there: the same as a plain read.
    assert_eq!(env.rcl(&["logs", &t]).stdout, out.stdout);
    env.rcl(&["rm", &t]).assert_ok();
}

#[test]
fn down_with_volumes_removes_the_named_volumes() {
    need!();
    let env = Env::new("vol");
    let (w, r) = (env.name("writer"), env.name("reader"));
    let vol = format!("{}-data", env.tag);
    let spec = env.write_spec(
        "vol.toml",
        &format!(
            "[containers.{w}]\nrootfs.{l}\nprocess.command = \"echo shared > /data/f\"\n\
             mounts = [{{ type = \"volume\", source = \"{vol}\", target = \"/data\" }}]\n\
             [containers.{r}]\nrootfs.{l}\n\
             process.command = \"cat /data/f; while true; do sleep 1; done\"\n\
             mounts = [{{ type = \"volume\", source = \"{vol}\", target = \"/data\" }}]\n\
             depends_on = {{ {w} = \"completed\" }}\n",
            l = layers()
        ),
    );
    let s = spec.to_str().unwrap();
    env.rcl(&["up", s]).assert_ok();
    env.wait_for("the reader's output", |e| {
        e.rcl(&["logs", &r]).stdout == "shared\n"
    });
    let ps = env.rcl(&["ps"]);
    let row = ps.stdout.lines().find(|l| l.starts_with(&w)).unwrap();
    assert!(row.contains("exited (0)"), "{row}");
    let vdir = rcl::paths::volume_dir(&vol);
    assert!(vdir.join("f").exists());
    env.rcl(&["down", s]).assert_ok();
    assert!(vdir.exists(), "plain down keeps volumes");
    env.rcl(&["up", s]).assert_ok();
    let out = env.rcl(&["down", "--volumes", s]);
    out.assert_ok();
    assert!(
        out.stdout.contains(&format!("volume {vol}: removed")),
        "{out:?}"
    );
    assert!(!vdir.exists());
    assert!(env.ps().is_empty());
}

#[test]
fn depends_on_healthy_waits_for_the_healthcheck() {
    need!();
    let env = Env::new("healthy");
    let (db, app) = (env.name("db"), env.name("app"));
    let spec = env.write_spec(
        "h.toml",
        &format!(
            "[containers.{db}]\nrootfs.{l}\n\
             process.command = \"sleep 1; touch /tmp-ready; while true; do sleep 1; done\"\n\
             [containers.{db}.healthcheck]\ncommand = \"test -e /tmp-ready\"\ninterval = \"100ms\"\n\
             retries = 100\n\
             [containers.{app}]\nrootfs.{l}\nprocess.command = \"while true; do sleep 1; done\"\n\
             depends_on = {{ {db} = \"healthy\" }}\n",
            l = layers()
        ),
    );
    let t0 = Instant::now();
    let out = env.rcl(&["up", spec.to_str().unwrap()]);
    out.assert_ok();
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "up waited for health"
    );
    // app was started only after db was healthy.
    let db_rec = env.record(&db);
    let app_rec = env.record(&app);
    assert_eq!(db_rec["health"], "healthy");
    assert!(
        app_rec["started_ms"].as_u64().unwrap() >= db_rec["started_ms"].as_u64().unwrap() + 1000
    );
    env.rcl(&["down", spec.to_str().unwrap()]).assert_ok();
    assert!(env.ps().is_empty());
}

#[test]
fn up_reports_a_command_that_cannot_run_and_leaves_it_stopped() {
    need!();
    let env = Env::new("noexec");
    let bad = env.name("bad");
    let spec = env.write_spec(
        "bad.toml",
        &format!(
            "name = \"{bad}\"\n[rootfs]\n{}\n[process]\ncommand = [\"/no/such/program\"]\n\
             [lifecycle]\nrestart = \"always\"\n",
            layers()
        ),
    );
    let out = env.rcl(&["up", spec.to_str().unwrap()]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("container {bad}")) && out.stderr.contains("/no/such/program"),
        "{out:?}"
    );
    let r = env.record(&bad);
    assert_eq!(r["status"], "exited");
    assert!(r["supervisor"].is_null(), "{r}");
    assert!(env.rcl(&["logs", &bad]).stderr.contains("/no/such/program"));
    env.rcl(&["rm", &bad]).assert_ok();
}

#[test]
fn commit_of_an_rcl_fs_upper_with_metacopy_and_a_renamed_dir() {
    need!();
    let env = Env::new("rclfs");
    let job = env.name("job");
    let data = env.path("datalayer");
    std::fs::create_dir_all(data.join("data/a")).unwrap();
    std::fs::create_dir_all(data.join("data/b")).unwrap();
    std::fs::write(data.join("data/a/file"), "payload").unwrap();
    std::fs::write(data.join("data/b/x"), "bx").unwrap();
    let host = r#"{ host = ["/bin/sh", "/bin/cat", "/bin/chmod", "/bin/mv", "/usr/bin/test"] }"#;
    let spec = env.write_spec(
        "job.toml",
        &format!(
            "name = \"{job}\"\n[rootfs]\nlayers = [{:?}, {host}]\n[process]\n\
             command = \"chmod 600 /data/a/file && mv /data/b /data/c\"\n",
            data.display().to_string()
        ),
    );
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    env.wait_for("the job to finish", |e| {
        e.record(&job)["status"] == "exited"
    });
    assert_eq!(
        env.record(&job)["exit_code"],
        0,
        "{:?}",
        env.rcl(&["logs", &job])
    );
    let d = env.rcl(&["diff", &job]);
    d.assert_ok();
    let lines: Vec<&str> = d.stdout.lines().filter(|l| l.contains("/data")).collect();
    assert_eq!(
        lines,
        ["C /data/a/file", "D /data/b", "A /data/c", "A /data/c/x"],
        "{d:?}"
    );
    let layer = env.path("committed");
    env.rcl(&["commit", &job, layer.to_str().unwrap()])
        .assert_ok();
    let check = env.write_spec(
        "check.toml",
        &format!(
            "name = \"{job}-check\"\n[rootfs]\nlayers = [{:?}, {:?}, {host}]\n[process]\n\
             command = \"cat /data/a/file /data/c/x; test -e /data/b || echo ' no-b'\"\n",
            layer.display().to_string(),
            data.display().to_string()
        ),
    );
    let run = env.rcl(&["run", check.to_str().unwrap()]);
    assert_eq!(run.stdout, "payloadbx no-b\n", "{run:?}");
    env.rcl(&["rm", &job]).assert_ok();
}

#[test]
fn a_supervisor_that_cannot_work_is_reported_by_up() {
    need!();
    let env = Env::new("nolog");
    let c = env.name("c");
    let spec = env.write_spec(
        "c.toml",
        &format!(
            "name = \"{c}\"\n[rootfs]\n{}\n[process]\ncommand = \"sleep 100\"\n",
            layers()
        ),
    );
    // The log directory cannot be made: a file stands in its way.
    let data = env.path("data").join(&c);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("logs"), "in the way").unwrap();
    let out = env.rcl(&["up", spec.to_str().unwrap()]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("container {c}")) && out.stderr.contains("log"),
        "{out:?}"
    );
    let r = env.record(&c);
    assert_eq!(r["status"], "exited");
    assert!(r["supervisor"].is_null());
}

#[test]
fn a_dead_holder_is_a_failed_run_and_is_restarted() {
    need!();
    let env = Env::new("holder");
    let c = env.name("c");
    let spec = env.write_spec(
        "c.toml",
        &format!(
            "name = \"{c}\"\n[rootfs]\n{}\n[process]\ncommand = \"while true; do sleep 1; done\"\n\
             [lifecycle]\nrestart = \"on-failure\"\n",
            layers()
        ),
    );
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    let r = env.record(&c);
    let (sup, pid) = (
        r["supervisor"]["pid"].as_i64().unwrap(),
        r["init_pid"].as_i64().unwrap(),
    );
    let children = std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap();
    let holder: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_for("a restart", |e| {
        let r = e.record(&c);
        r["restart_count"] == 1 && r["status"] == "running"
    });
    assert!(!alive(pid));
    let r = env.record(&c);
    assert_ne!(r["init_pid"].as_i64().unwrap(), pid);
    assert_eq!(
        r["supervisor"]["pid"].as_i64().unwrap(),
        sup,
        "same supervisor"
    );
    assert!(env.rcl(&["logs", &c]).stderr.contains("rcl: error"));
    env.rcl(&["down", spec.to_str().unwrap()]).assert_ok();
}
