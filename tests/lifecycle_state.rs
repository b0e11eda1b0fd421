//! `rcl::state`: atomic records, locks under real concurrency, names owned by one spec, dead
//! supervisors noticed through pid + start time.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rcl::state::{self, Health, ProcRef, Record, StateError, Status, Store};

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("run"), &dir.join("data")).unwrap()
}

#[test]
fn records_round_trip_and_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut r = Record::new("web", Path::new("/specs/a.toml"), "h1");
    r.command = vec!["sh".into(), "-c".into(), "sleep 1".into()];
    r.health = Health::Starting;
    s.save(&r).unwrap();
    assert_eq!(s.load("web").unwrap(), Some(r.clone()));
    assert_eq!(s.load("other").unwrap(), None);
    let files: Vec<_> = std::fs::read_dir(s.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["web.json"], "only the record");
    let err = s.get("nope").unwrap_err().to_string();
    assert_eq!(err, "no such container: nope");
}

#[test]
fn concurrent_updates_never_lose_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.save(&Record::new("c", Path::new("/s.toml"), "h"))
        .unwrap();
    let threads = 8;
    let per = 40;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = s.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                for _ in 0..per {
                    s.update("c", |r| {
                        let n = r.restart_count;
                        // Widen the window a lost update would need.
                        std::thread::yield_now();
                        r.restart_count = n + 1;
                    })
                    .unwrap();
                    // Readers never see a torn file.
                    s.get("c").unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.get("c").unwrap().restart_count, (threads * per) as u32);
}

#[test]
fn concurrent_processes_share_the_lock() {
    // Separate processes (flock is per open file): each `flock -x` holder appends a start and
    // an end mark; held exclusively, marks never interleave.
    if Command::new("flock").arg("--version").output().is_err() {
        testkit::skip!("flock(1) not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let log = dir.path().join("log");
    let lock_path = s.dir().join("c.lock");
    let script = format!(
        "for i in 1 2 3 4 5; do flock -x {lock} sh -c 'echo s >> {log}; sleep 0.01; echo e >> {log}'; done",
        lock = lock_path.display(),
        log = log.display()
    );
    let mut kids: Vec<_> = (0..3)
        .map(|_| Command::new("sh").arg("-c").arg(&script).spawn().unwrap())
        .collect();
    for _ in 0..5 {
        let _l = s.lock("c").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(b"s\n")?;
                std::thread::sleep(Duration::from_millis(10));
                f.write_all(b"e\n")
            })
            .unwrap();
    }
    for k in &mut kids {
        assert!(k.wait().unwrap().success());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let marks: Vec<&str> = text.lines().collect();
    assert_eq!(marks.len(), 40);
    for pair in marks.chunks(2) {
        assert_eq!(pair, ["s", "e"], "interleaved critical sections: {text}");
    }
}

#[test]
fn a_name_belongs_to_one_spec() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let _g = s.lock_names().unwrap();
    assert_eq!(s.claim("db", Path::new("/p/one.toml")).unwrap(), None);
    s.save(&Record::new("db", Path::new("/p/one.toml"), "h"))
        .unwrap();
    assert!(s.claim("db", Path::new("/p/one.toml")).unwrap().is_some());
    let err = s.claim("db", Path::new("/p/two.toml")).unwrap_err();
    assert!(matches!(err, StateError::NameTaken { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("\"db\"") && msg.contains("/p/one.toml"),
        "{msg}"
    );
}

#[test]
fn bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
        let e = s.lock(bad).unwrap_err().to_string();
        assert!(e.contains("invalid container name"), "{bad}: {e}");
    }
}

#[test]
fn pid_reuse_and_dead_supervisors_are_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let sup = ProcRef::of(child.id() as i32).unwrap();
    assert!(sup.alive());
    // Same pid, another start time: a reused pid is not our supervisor.
    let reused = ProcRef {
        start_time: sup.start_time + 1,
        ..sup.clone()
    };
    assert!(!reused.alive());
    // Same pid and start time, but recorded in another boot.
    let other_boot = ProcRef {
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        ..sup.clone()
    };
    assert!(!other_boot.alive());

    let mut r = Record::new("app", Path::new("/s.toml"), "h");
    r.status = Status::Running;
    r.supervisor = Some(sup.clone());
    r.init_pid = Some(12345);
    r.health = Health::Healthy;
    s.save(&r).unwrap();
    let mut other = Record::new("done", Path::new("/s.toml"), "h");
    other.status = Status::Exited;
    other.exit_code = Some(3);
    s.save(&other).unwrap();

    let l = s.list().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].name, "app");
    assert_eq!(l[0].status, Status::Running);

    child.kill().unwrap();
    // A zombie is not alive either.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!sup.alive(), "zombie counted as alive");
    child.wait().unwrap();
    assert!(!sup.alive());
    let l = s.list().unwrap();
    assert_eq!(l[0].status, Status::Exited);
    assert_eq!(l[0].init_pid, None);
    assert!(l[0]
        .error
        .as_deref()
        .unwrap()
        .contains("supervisor is gone"));
    assert_eq!(l[1].exit_code, Some(3));
    // The file itself was not changed by a read.
    assert_eq!(s.get("app").unwrap().status, Status::Running);
}

#[test]
fn removal_while_another_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.save(&Record::new("x", Path::new("/s.toml"), "h"))
        .unwrap();
    let held = s.lock("x").unwrap();
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || {
        let _l = s2.lock("x").unwrap();
        // We hold the lock on the file now at the path, not on the removed one.
        assert!(s2.dir().join("x.lock").exists());
        s2.load("x").unwrap()
    });
    std::thread::sleep(Duration::from_millis(50));
    s.remove("x", true).unwrap();
    drop(held);
    assert_eq!(waiter.join().unwrap(), None);
}

#[test]
fn settings_hash_is_stable_and_sensitive() {
    let a = state::settings_hash(&("x", 1));
    assert_eq!(a, state::settings_hash(&("x", 1)));
    assert_ne!(a, state::settings_hash(&("x", 2)));
    assert_eq!(a.len(), 64);
}

#[test]
fn after_a_reboot_containers_show_as_exited_and_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut r = Record::new("db", Path::new("/s.toml"), "h");
    r.status = Status::Running;
    r.supervisor = Some(ProcRef::current());
    r.init_pid = Some(4242);
    s.save(&r).unwrap();
    std::fs::write(s.data_dir("db").join("keep"), "upper and logs").unwrap();
    // A reboot empties the runtime state directory (a tmpfs) and ends every process.
    std::fs::remove_dir_all(s.dir()).unwrap();
    let s = store(dir.path());
    let mut rec = s.get("db").unwrap();
    rec.supervisor.as_mut().unwrap().boot_id = "an-earlier-boot".into();
    s.save(&rec).unwrap();
    std::fs::remove_dir_all(s.dir()).unwrap();
    let s = store(dir.path());
    let l = s.list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].name, "db");
    assert_eq!(l[0].status, Status::Exited);
    assert_eq!(l[0].init_pid, None);
    {
        let _l = s.lock("db").unwrap();
        s.remove("db", true).unwrap();
    }
    assert!(s.list().unwrap().is_empty());
    assert!(!s.data_dir("db").exists());
}
