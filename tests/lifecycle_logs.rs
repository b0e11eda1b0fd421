//! `rcl::logs`: timestamped, tagged entries from real pipes, size-based rotation, `--since`,
//! and following across rotations.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcl::logs::{self, LinePump, LogConfig, LogWriter, Stream};

#[test]
fn pipes_of_a_real_process_become_tagged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), LogConfig::default()).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("echo out1; echo err1 >&2; echo 'two words'; printf 'no newline'")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = SystemTime::now();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let mut err = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    assert!(child.wait().unwrap().success());
    let mut p_out = LinePump::new(Stream::Stdout);
    let mut p_err = LinePump::new(Stream::Stderr);
    // Fed in odd-sized chunks, as reads from a pipe come.
    for chunk in out.chunks(3) {
        p_out.feed(chunk, &mut w, SystemTime::now()).unwrap();
    }
    p_err.feed(&err, &mut w, SystemTime::now()).unwrap();
    p_out.finish(&mut w, SystemTime::now()).unwrap();
    p_err.finish(&mut w, SystemTime::now()).unwrap();

    let lines = logs::read(dir.path(), None).unwrap();
    let got: Vec<(Stream, &str)> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
    assert_eq!(
        got,
        [
            (Stream::Stdout, "out1"),
            (Stream::Stdout, "two words"),
            (Stream::Stderr, "err1"),
            (Stream::Stdout, "no newline"),
        ]
    );
    assert!(lines.iter().all(|l| l.time >= before));
    let shown = lines[0].display(true);
    assert!(shown.ends_with(" out1\n") && shown.contains('T'), "{shown}");
    assert_eq!(lines[0].display(false), "out1\n");
}

#[test]
fn rotation_keeps_at_most_n_files_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_size: 400,
        max_files: 3,
    };
    let mut w = LogWriter::open(dir.path(), cfg).unwrap();
    for i in 0..200 {
        w.write(
            Stream::Stdout,
            SystemTime::now(),
            format!("line {i}").as_bytes(),
        )
        .unwrap();
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    files.sort_by_key(|e| e.file_name());
    let names: Vec<_> = files
        .iter()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["container.log", "container.log.1", "container.log.2"]
    );
    for f in &files {
        assert!(f.metadata().unwrap().len() <= 400, "{:?} too big", f.path());
    }
    // What is kept is the newest, contiguous, in order.
    let lines = logs::read(dir.path(), None).unwrap();
    let nums: Vec<u32> = lines
        .iter()
        .map(|l| l.text.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert_eq!(*nums.last().unwrap(), 199);
    assert!(nums.len() > 10);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    // Reopening appends to the current file.
    drop(w);
    let mut w = LogWriter::open(dir.path(), cfg).unwrap();
    w.write(Stream::Stderr, SystemTime::now(), b"again")
        .unwrap();
    let lines = logs::read(dir.path(), None).unwrap();
    assert_eq!(lines.last().unwrap().text, "again");
}

#[test]
fn since_takes_durations_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::open(dir.path(), LogConfig::default()).unwrap();
    let now = SystemTime::now();
    w.write(Stream::Stdout, now - Duration::from_secs(3600), b"old")
        .unwrap();
    w.write(Stream::Stdout, now - Duration::from_secs(60), b"recent")
        .unwrap();
    w.write(Stream::Stdout, now, b"now").unwrap();
    let since = logs::parse_since("10m", now).unwrap();
    let got: Vec<_> = logs::read(dir.path(), Some(since))
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(got, ["recent", "now"]);
    let t = humantime::format_rfc3339(now - Duration::from_secs(2)).to_string();
    let since = logs::parse_since(&t, now).unwrap();
    let got: Vec<_> = logs::read(dir.path(), Some(since))
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(got, ["now"]);
    let err = logs::parse_since("yesterday-ish", now).unwrap_err();
    assert!(
        err.contains("yesterday-ish") && err.contains("10m"),
        "{err}"
    );
    // No log yet: nothing, no error.
    assert!(logs::read(&dir.path().join("none"), None)
        .unwrap()
        .is_empty());
}

#[test]
fn follow_sees_every_line_across_rotations_and_stops_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_size: 2000,
        max_files: 3,
    };
    let mut w = LogWriter::open(dir.path(), cfg).unwrap();
    w.write(Stream::Stdout, SystemTime::now(), b"line 0")
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let writer = std::thread::spawn(move || {
        for i in 1..300 {
            w.write(
                Stream::Stdout,
                SystemTime::now(),
                format!("line {i}").as_bytes(),
            )
            .unwrap();
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        d2.store(true, Ordering::SeqCst);
    });
    let mut seen = Vec::new();
    logs::follow(
        dir.path(),
        None,
        Duration::from_millis(1),
        || !done.load(Ordering::SeqCst),
        |l| {
            seen.push(l.text.clone());
            Ok(())
        },
    )
    .unwrap();
    writer.join().unwrap();
    let want: Vec<String> = (0..300).map(|i| format!("line {i}")).collect();
    assert_eq!(seen, want);
}
