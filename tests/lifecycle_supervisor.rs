//! `rcl::supervisor`: restart policy, back-off and health logic, and the supervisor loop run
//! for real over plain host processes (restarts, stop with signal then SIGKILL, healthchecks,
//! logs).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rcl::logs::{self, LogConfig};
use rcl::state::{Health, Record, Status, Store};
use rcl::supervisor::{
    self, Backoff, HealthConfig, HealthMonitor, HostCommand, HostProbe, RestartPolicy, Settings,
};

// ---- pure logic ----

#[test]
fn restart_policies_parse_and_decide() {
    use RestartPolicy::*;
    assert_eq!(RestartPolicy::parse("no").unwrap(), No);
    assert_eq!(RestartPolicy::parse("always").unwrap(), Always);
    assert_eq!(
        RestartPolicy::parse("unless-stopped").unwrap(),
        UnlessStopped
    );
    assert_eq!(
        RestartPolicy::parse("on-failure").unwrap(),
        OnFailure { max_retries: None }
    );
    assert_eq!(
        RestartPolicy::parse("on-failure:3").unwrap(),
        OnFailure {
            max_retries: Some(3)
        }
    );
    let e = RestartPolicy::parse("on-failure:x").unwrap_err();
    assert!(
        e.contains("on-failure:x") && e.contains("unless-stopped"),
        "{e}"
    );
    assert!(RestartPolicy::parse("sometimes").is_err());

    assert!(!No.should_restart(1, 0, false));
    let of = OnFailure {
        max_retries: Some(2),
    };
    assert!(!of.should_restart(0, 0, false), "success is not a failure");
    assert!(of.should_restart(1, 0, false));
    assert!(of.should_restart(137, 1, false));
    assert!(!of.should_restart(1, 2, false), "retries used up");
    assert!(OnFailure { max_retries: None }.should_restart(1, 1000, false));
    assert!(Always.should_restart(0, 99, false));
    assert!(UnlessStopped.should_restart(0, 99, false));
    for p in [Always, UnlessStopped, of] {
        assert!(!p.should_restart(1, 0, true), "a user stop wins");
    }
    assert!(Always.up_restarts_stopped());
    assert!(!UnlessStopped.up_restarts_stopped());
}

#[test]
fn backoff_doubles_caps_and_resets() {
    let ms = Duration::from_millis;
    let mut b = Backoff::default();
    let quick = ms(50);
    let seq: Vec<Duration> = (0..10).map(|_| b.delay(quick)).collect();
    assert_eq!(
        seq,
        [
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(3200),
            ms(6400),
            ms(10000),
            ms(10000),
            ms(10000)
        ]
    );
    assert_eq!(
        b.delay(Duration::from_secs(10)),
        ms(100),
        "reset after 10 s up"
    );
    assert_eq!(b.delay(quick), ms(200));
}

fn hc(interval_ms: u64, retries: u32, start_period_ms: u64) -> HealthConfig {
    HealthConfig {
        command: vec!["true".into()],
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(interval_ms),
        retries,
        start_period: Duration::from_millis(start_period_ms),
    }
}

#[test]
fn health_monitor_counts_failures_after_the_start_period() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut m = HealthMonitor::new(hc(1000, 3, 5000), t0);
    assert_eq!(m.health(), Health::Starting);
    assert!(!m.due(t0));
    assert!(m.due(t0 + s(1)));
    // Failures in the start period do not count.
    for i in 1..=4 {
        assert_eq!(m.record(t0 + s(i), false), Health::Starting);
    }
    assert_eq!(m.next_due(), t0 + s(5));
    assert_eq!(m.record(t0 + s(5), false), Health::Starting);
    assert_eq!(m.record(t0 + s(6), false), Health::Starting);
    assert_eq!(m.record(t0 + s(7), false), Health::Unhealthy);
    assert_eq!(m.record(t0 + s(8), true), Health::Healthy);
    assert_eq!(m.record(t0 + s(9), false), Health::Healthy, "one failure");
    // A pass during the start period makes it healthy at once.
    let mut m = HealthMonitor::new(hc(1000, 1, 60_000), t0);
    assert_eq!(m.record(t0 + s(1), true), Health::Healthy);
}

// ---- the supervisor loop over host processes ----

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    stop_r: OwnedFd,
    stop_w: Option<OwnedFd>,
}

fn harness(name: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("run"), &dir.path().join("data")).unwrap();
    store
        .save(&Record::new(name, Path::new("/spec.toml"), "h"))
        .unwrap();
    let (stop_r, stop_w) = nix::unistd::pipe().unwrap();
    Harness {
        _dir: dir,
        store,
        stop_r,
        stop_w: Some(stop_w),
    }
}

fn settings(name: &str, policy: RestartPolicy) -> Settings {
    Settings {
        name: name.into(),
        policy,
        backoff: Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(80),
            Duration::from_secs(10),
        ),
        health: None,
        stop_signal: libc::SIGTERM,
        stop_timeout: Duration::from_secs(5),
        log: LogConfig::default(),
    }
}

fn sh(script: &str) -> HostCommand {
    HostCommand {
        argv: vec!["sh".into(), "-c".into(), script.into()],
    }
}

/// Runs `supervise` on a thread; returns a handle giving its result.
fn spawn_supervisor(
    h: &Harness,
    s: Settings,
    mut w: HostCommand,
) -> std::thread::JoinHandle<anyhow::Result<i32>> {
    let store = h.store.clone();
    let stop = h.stop_r.try_clone().unwrap();
    std::thread::spawn(move || {
        supervisor::supervise(&store, &s, &mut w, &mut HostProbe, stop.as_fd())
    })
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn request_stop(h: &mut Harness) {
    let w = h.stop_w.take().unwrap();
    nix::unistd::write(&w, b"x").unwrap();
}

fn log_texts(h: &Harness, name: &str) -> Vec<String> {
    logs::read(&h.store.log_dir(name), None)
        .unwrap()
        .into_iter()
        .map(|l| format!("{} {}", l.stream.as_str(), l.text))
        .collect()
}

#[test]
fn on_failure_restarts_up_to_the_limit_and_logs_every_run() {
    let h = harness("job");
    let t = spawn_supervisor(
        &h,
        settings(
            "job",
            RestartPolicy::OnFailure {
                max_retries: Some(2),
            },
        ),
        sh("echo run; echo oops >&2; exit 3"),
    );
    assert_eq!(t.join().unwrap().unwrap(), 3);
    let r = h.store.get("job").unwrap();
    assert_eq!(r.status, Status::Exited);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.restart_count, 2);
    assert_eq!(r.init_pid, None);
    assert!(r.finished_ms >= r.started_ms);
    let l = log_texts(&h, "job");
    assert_eq!(l.iter().filter(|t| *t == "stdout run").count(), 3, "{l:?}");
    assert_eq!(l.iter().filter(|t| *t == "stderr oops").count(), 3, "{l:?}");
}

#[test]
fn no_restart_after_success_with_on_failure() {
    let h = harness("ok");
    let t = spawn_supervisor(
        &h,
        settings("ok", RestartPolicy::OnFailure { max_retries: None }),
        sh("exit 0"),
    );
    assert_eq!(t.join().unwrap().unwrap(), 0);
    assert_eq!(h.store.get("ok").unwrap().restart_count, 0);
}

#[test]
fn stop_sends_the_stop_signal_and_never_restarts() {
    let mut h = harness("svc");
    let t = spawn_supervisor(
        &h,
        settings("svc", RestartPolicy::Always),
        sh("echo up; exec sleep 30"),
    );
    wait_for("running", Duration::from_secs(10), || {
        h.store.get("svc").unwrap().status == Status::Running
            && log_texts(&h, "svc").contains(&"stdout up".to_string())
    });
    let pid = h.store.get("svc").unwrap().init_pid.unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let t0 = Instant::now();
    request_stop(&mut h);
    assert_eq!(t.join().unwrap().unwrap(), 128 + libc::SIGTERM);
    assert!(t0.elapsed() < Duration::from_secs(3));
    let r = h.store.get("svc").unwrap();
    assert_eq!(r.status, Status::Exited);
    assert!(r.stopped_by_user);
    assert_eq!(r.restart_count, 0);
}

#[test]
fn a_process_ignoring_the_stop_signal_is_killed_after_the_timeout() {
    let mut h = harness("stubborn");
    let mut s = settings("stubborn", RestartPolicy::Always);
    s.stop_timeout = Duration::from_millis(300);
    let t = spawn_supervisor(
        &h,
        s,
        sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
    );
    wait_for("ready", Duration::from_secs(10), || {
        log_texts(&h, "stubborn").contains(&"stdout ready".to_string())
    });
    let t0 = Instant::now();
    request_stop(&mut h);
    assert_eq!(t.join().unwrap().unwrap(), 128 + libc::SIGKILL);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn crash_loops_back_off_and_a_crash_never_takes_the_supervisor_down() {
    let mut h = harness("crashy");
    let t = spawn_supervisor(
        &h,
        settings("crashy", RestartPolicy::Always),
        sh("kill -SEGV $$"),
    );
    std::thread::sleep(Duration::from_millis(800));
    request_stop(&mut h);
    assert_eq!(t.join().unwrap().unwrap(), 128 + libc::SIGSEGV);
    let r = h.store.get("crashy").unwrap();
    // Delays 10, 20, 40, 80, 80, ... ms: a handful of restarts in 800 ms (about 11), not
    // hundreds (a slow machine may manage fewer).
    assert!(
        (2..=16).contains(&r.restart_count),
        "restarts: {}",
        r.restart_count
    );
    assert_eq!(r.status, Status::Exited);
}

#[test]
fn a_command_that_cannot_start_is_reported() {
    let h = harness("bad");
    let t = spawn_supervisor(
        &h,
        settings("bad", RestartPolicy::No),
        HostCommand {
            argv: vec!["/nonexistent/prog".into()],
        },
    );
    assert_eq!(t.join().unwrap().unwrap(), 127);
    let r = h.store.get("bad").unwrap();
    assert_eq!(r.exit_code, Some(127));
    let e = r.error.unwrap();
    assert!(e.contains("/nonexistent/prog"), "{e}");
}

#[test]
fn healthchecks_move_between_healthy_and_unhealthy() {
    let mut h = harness("web");
    let flag = h._dir.path().join("healthy");
    let mut s = settings("web", RestartPolicy::No);
    s.health = Some(HealthConfig {
        command: vec!["test".into(), "-e".into(), flag.display().to_string()],
        interval: Duration::from_millis(40),
        timeout: Duration::from_secs(2),
        retries: 2,
        start_period: Duration::ZERO,
    });
    let t = spawn_supervisor(&h, s, sh("exec sleep 30"));
    let health = |h: &Harness| h.store.get("web").unwrap().health;
    wait_for("unhealthy", Duration::from_secs(10), || {
        health(&h) == Health::Unhealthy
    });
    std::fs::write(&flag, "").unwrap();
    wait_for("healthy", Duration::from_secs(10), || {
        health(&h) == Health::Healthy
    });
    std::fs::remove_file(&flag).unwrap();
    wait_for("unhealthy again", Duration::from_secs(10), || {
        health(&h) == Health::Unhealthy
    });
    request_stop(&mut h);
    t.join().unwrap().unwrap();
}

#[test]
fn a_healthcheck_past_its_timeout_fails_without_blocking_the_logs() {
    let mut h = harness("slow");
    let mut s = settings("slow", RestartPolicy::No);
    s.health = Some(HealthConfig {
        command: vec!["sleep".into(), "30".into()],
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(100),
        retries: 1,
        start_period: Duration::ZERO,
    });
    let t = spawn_supervisor(
        &h,
        s,
        sh("i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.02; done"),
    );
    let t0 = Instant::now();
    wait_for("unhealthy", Duration::from_secs(10), || {
        h.store.get("slow").unwrap().health == Health::Unhealthy
    });
    assert!(t0.elapsed() >= Duration::from_millis(100));
    // The log kept flowing while the check hung.
    wait_for("ticks", Duration::from_secs(10), || {
        log_texts(&h, "slow").len() >= 10
    });
    request_stop(&mut h);
    t.join().unwrap().unwrap();
}
