//! `rcl exec` for real, as root and rootless: stdin with and without `-i`, a terminal with
//! `-t` (under a pty this test opens, so rcl has a terminal of its own: raw mode, window size,
//! exit status, the terminal restored), `-u`, `-w`, `-e`, `-d`, signal forwarding, and the
//! errors (127 not found, 126 not executable, missing workdir or user, a stopped or unknown
//! container).

mod run_common;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use run_common::{As, Env, Output, TIMEOUT};

/// Removes this test's container (`rm -f`, then SIGKILL to a supervisor still alive) even
/// when the test fails.
struct ContainerGuard<'a>(&'a Env);

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let env = self.0;
        let ps = testkit::run_timeout(env.command().args(["ps", "--json"]), TIMEOUT);
        let sup = serde_json::from_str::<serde_json::Value>(&ps.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|r| r["name"] == env.name.as_str())
                    .and_then(|r| {
                        Some((
                            r["supervisor"]["pid"].as_i64()? as i32,
                            r["supervisor"]["start_time"].as_u64()?,
                        ))
                    })
            });
        let _ = testkit::run_timeout(env.command().args(["rm", "-f", &env.name]), TIMEOUT);
        if let Some((pid, start)) = sup {
            if rcl::state::ProcRef::of(pid).is_some_and(|p| p.start_time == start) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Starts the test's container (a shell that sleeps, with a nofile limit of 512/1024) and
/// returns its guard.
fn up(env: &Env) -> ContainerGuard<'_> {
    let spec = env.spec(
        "while true; do sleep 1; done",
        "rlimits = { nofile = [512, 1024] }\n",
    );
    let guard = ContainerGuard(env);
    env.rcl(&["up", spec.to_str().unwrap()]).assert_ok();
    guard
}

/// Kills the process group `pgid` (rcl and what it started that stayed in it).
fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(pgid as i32)),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Runs `cmd` with `input` on a pipe as stdin, stdout and stderr captured, killed (with its
/// process group) at the deadline.
fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn rcl");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            kill_group(pid);
            panic!("rcl timed out: {cmd:?}");
        }
    };
    let _ = writer.join();
    Output {
        status: Some(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What rcl did on a terminal of its own.
struct TtyRun {
    /// Exit code.
    code: Option<i32>,
    /// Everything it wrote to the terminal.
    output: String,
    /// The terminal's settings once rcl had exited.
    after: nix::sys::termios::Termios,
}

/// Runs `cmd` with a new pty (`rows` x `cols`) as its controlling terminal and stdin, stdout,
/// stderr; types `typed` into it once `wait_for` has appeared (when given); collects what it
/// shows until rcl exits (killed at the deadline).
fn run_on_pty(
    mut cmd: Command,
    rows: u16,
    cols: u16,
    wait_for: Option<&str>,
    typed: &[u8],
) -> TtyRun {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    let master: OwnedFd = pty.master;
    let slave: OwnedFd = pty.slave;
    for fd in [&master, &slave] {
        let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        let fl = nix::fcntl::FdFlag::from_bits_truncate(fl) | nix::fcntl::FdFlag::FD_CLOEXEC;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(fl)).unwrap();
    }
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe and only affect the child.
    unsafe {
        cmd.pre_exec(|| {
            // Already a session leader when the environment's command made it one.
            libc::setsid();
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn rcl");
    drop(cmd);
    let deadline = Instant::now() + TIMEOUT;
    let mut output = Vec::new();
    let mut typed_yet = typed.is_empty();
    let read_some = |output: &mut Vec<u8>, wait_ms: u8| -> bool {
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if !matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait_ms)), Ok(n) if n > 0)
        {
            return false;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&master, &mut buf) {
            Ok(n) if n > 0 => {
                output.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    };
    let status = loop {
        read_some(&mut output, 50);
        if !typed_yet && wait_for.is_none_or(|w| String::from_utf8_lossy(&output).contains(w)) {
            nix::unistd::write(&master, typed).unwrap();
            typed_yet = true;
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let _ = child.wait();
            panic!(
                "rcl on a pty timed out; it showed {:?}",
                String::from_utf8_lossy(&output)
            );
        }
    };
    while read_some(&mut output, 0) {}
    TtyRun {
        code: status.code(),
        output: String::from_utf8_lossy(&output).into_owned(),
        after: nix::sys::termios::tcgetattr(&slave).unwrap(),
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(|l| l.trim_end_matches('\r')).collect()
}

fn stdin_with_and_without_i(who: As) {
    need!(who);
    let env = Env::new(who, "exin");
    let _c = up(&env);
    let mut cmd = env.command();
    cmd.args(["exec", "-i", &env.name, "--", "cat"]);
    let out = run_with_input(cmd, b"hi\n");
    out.assert_ok();
    assert_eq!(out.stdout, "hi\n", "{out:?}");
    // Without -i the command's stdin is /dev/null: cat sees end of file at once and the
    // input offered to rcl goes nowhere.
    let mut cmd = env.command();
    cmd.args([
        "exec",
        &env.name,
        "--",
        "sh",
        "-c",
        "cat; echo eof; readlink /proc/self/fd/0",
    ]);
    let out = run_with_input(cmd, b"hi\n");
    out.assert_ok();
    assert_eq!(lines(&out.stdout), ["eof", "/dev/null"], "{out:?}");
    // -t with piped input (no terminal on our side): still a terminal inside; the input
    // arrives (echoed by the terminal) and its end is the terminal's end of file.
    let mut cmd = env.command();
    cmd.args(["exec", "-it", &env.name, "--", "sh", "-c", "cat; echo done"]);
    let out = run_with_input(cmd, b"alpha\nbeta");
    out.assert_ok();
    // Each word twice (the terminal's echo, then cat), the unfinished "beta" too.
    assert_eq!(out.stdout.matches("alpha").count(), 2, "{out:?}");
    assert_eq!(out.stdout.matches("beta").count(), 2, "{out:?}");
    assert!(out.stdout.ends_with("done\r\n"), "{out:?}");
}

#[test]
fn stdin_with_and_without_i_root() {
    stdin_with_and_without_i(As::Root);
}

#[test]
fn stdin_with_and_without_i_rootless() {
    stdin_with_and_without_i(As::User);
}

fn tty(who: As) {
    need!(who);
    let env = Env::new(who, "extty");
    let _c = up(&env);
    // A terminal on our side (33x77): raw mode while relaying, size and TERM passed in, the
    // exit status back, and our terminal restored afterwards.
    let mut cmd = env.command();
    cmd.env("TERM", "vt220").args([
        "exec",
        "-it",
        &env.name,
        "--",
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && echo stdio-is-tty; stty size; echo TERM=$TERM; \
         echo ready; read line; echo got=$line; exit 5",
    ]);
    let r = run_on_pty(cmd, 33, 77, Some("ready"), b"typed\r");
    let l = lines(&r.output);
    assert_eq!(r.code, Some(5), "{:?}", r.output);
    assert!(
        l.iter().any(|l| l.starts_with("/dev/pts/")),
        "{:?}",
        r.output
    );
    for want in ["stdio-is-tty", "33 77", "TERM=vt220", "got=typed"] {
        assert!(l.contains(&want), "{want:?} missing: {:?}", r.output);
    }
    let lf = r.after.local_flags;
    assert!(
        lf.contains(nix::sys::termios::LocalFlags::ICANON)
            && lf.contains(nix::sys::termios::LocalFlags::ECHO),
        "our terminal was left raw: {lf:?}"
    );
    // The terminal is the command's controlling terminal and its process group is in the
    // foreground: Ctrl-C typed on our side interrupts it (raw mode passes the byte on).
    let mut cmd = env.command();
    cmd.args([
        "exec",
        "-it",
        &env.name,
        "--",
        "sh",
        "-c",
        "echo ready; sleep 30; echo not-interrupted",
    ]);
    let r = run_on_pty(cmd, 24, 80, Some("ready"), b"\x03");
    assert_eq!(r.code, Some(130), "{:?}", r.output);
    assert!(!r.output.contains("not-interrupted"), "{:?}", r.output);
    // -t without a terminal on our side: a terminal inside all the same, 80x24.
    let out = env.rcl(&[
        "exec",
        "-t",
        &env.name,
        "--",
        "sh",
        "-c",
        "test -t 0 && echo is-tty; stty size; exit 3",
    ]);
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert_eq!(lines(&out.stdout), ["is-tty", "24 80"], "{out:?}");
    // The terminal belongs to the command's user.
    let out = env.rcl(&[
        "exec",
        "-t",
        "-u",
        "1000",
        &env.name,
        "--",
        "sh",
        "-c",
        "stat -c %u:%g $(tty)",
    ]);
    out.assert_ok();
    assert_eq!(lines(&out.stdout), ["1000:1000"], "{out:?}");
    // Without -t, no terminal.
    let out = env.rcl(&[
        "exec",
        &env.name,
        "--",
        "sh",
        "-c",
        "test -t 1 || echo no-tty",
    ]);
    assert_eq!(out.stdout, "no-tty\n", "{out:?}");
}

#[test]
fn tty_root() {
    tty(As::Root);
}

#[test]
fn tty_rootless() {
    tty(As::User);
}

fn user_workdir_env(who: As) {
    need!(who);
    let env = Env::new(who, "exuwe");
    let _c = up(&env);
    let id = |u: &str| {
        let out = env.rcl(&["exec", "-u", u, &env.name, "--", "id"]);
        out.assert_ok();
        out.stdout.trim().to_string()
    };
    assert_eq!(
        id("1000"),
        "uid=1000(user) gid=1000(user) groups=1000(user),2000(extra)"
    );
    assert_eq!(
        id("nobody"),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    );
    assert!(id("user:extra").starts_with("uid=1000(user) gid=2000(extra)"));
    // A number without an entry is taken as it is.
    assert!(id("4242").starts_with("uid=4242 gid=4242"));
    // The default is the spec's user (root here), workdir (/) and environment.
    let mut cmd = env.command();
    cmd.env("FROM_RCL", "passed").args([
        "exec",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        "-e",
        "FROM_RCL",
        "-e",
        "NOT_SET_ANYWHERE",
        "-e",
        "HOSTNAME=over",
        &env.name,
        "--",
        "sh",
        "-c",
        "pwd; id -u; env",
    ]);
    let out = testkit::run_timeout(&mut cmd, TIMEOUT);
    out.assert_ok();
    let l = lines(&out.stdout);
    assert_eq!(l[..2], ["/tmp", "0"], "{out:?}");
    for want in ["FOO=bar", "FROM_RCL=passed", "HOSTNAME=over", "HOME=/root"] {
        assert!(l.contains(&want), "{want} missing: {out:?}");
    }
    assert!(
        !out.stdout.contains("NOT_SET_ANYWHERE"),
        "an unset -e KEY is left out: {out:?}"
    );
    let out = env.rcl(&["exec", &env.name, "--", "pwd"]);
    assert_eq!(out.stdout, "/\n", "{out:?}");
    // The spec's rlimits, as `rcl run` sets them.
    let out = env.rcl(&[
        "exec",
        &env.name,
        "--",
        "sh",
        "-c",
        "ulimit -Sn; ulimit -Hn",
    ]);
    assert_eq!(lines(&out.stdout), ["512", "1024"], "{out:?}");
}

#[test]
fn user_workdir_env_root() {
    user_workdir_env(As::Root);
}

#[test]
fn user_workdir_env_rootless() {
    user_workdir_env(As::User);
}

fn errors(who: As) {
    need!(who);
    let env = Env::new(who, "exerr");
    let _c = up(&env);
    let spec = env.path(&format!("{}.toml", env.name));
    let n = &env.name;
    let check = |args: &[&str], code: i32, words: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        let out = env.rcl(&all);
        assert_eq!(out.code(), Some(code), "{all:?}: {out:?}");
        let err: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(err.len(), 1, "one line: {out:?}");
        for w in words {
            assert!(err[0].contains(w), "{w:?} not in {:?}", err[0]);
        }
    };
    check(
        &[n, "--", "no-such-cmd"],
        127,
        &[n, "no-such-cmd", "not found"],
    );
    check(
        &[n, "--", "/bin/nope"],
        127,
        &[n, "/bin/nope", "no such file"],
    );
    check(
        &[n, "--", "/etc/passwd"],
        126,
        &[n, "/etc/passwd", "permission"],
    );
    check(
        &["-w", "/nope", n, "--", "pwd"],
        126,
        &[n, "/nope", "does not exist"],
    );
    check(
        &["-u", "bob", n, "--", "id"],
        126,
        &[n, "bob", "/etc/passwd"],
    );
    check(
        &["-u", "user:staff", n, "--", "id"],
        126,
        &[n, "staff", "/etc/group"],
    );
    check(&["-u", "a:", n, "--", "id"], 1, &["USER[:GROUP]"]);
    check(&["-e", "=x", n, "--", "id"], 1, &["=x"]);
    check(&["ghost-container", "--", "true"], 1, &["ghost-container"]);
    // A command killed by a signal: 128 + N.
    let out = env.rcl(&["exec", n, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.code(), Some(137), "{out:?}");
    // A stopped container.
    env.rcl(&["stop", n]).assert_ok();
    check(&[n, "--", "true"], 1, &[n, "not running"]);
    env.rcl(&["down", spec.to_str().unwrap()]).assert_ok();
    env.assert_clean();
}

#[test]
fn errors_root() {
    errors(As::Root);
}

#[test]
fn errors_rootless() {
    errors(As::User);
}

/// Starts `rcl exec NAME -- sh -c SCRIPT`, sends rcl SIGTERM once the script printed `ready`,
/// and returns rcl's exit code and the lines printed (within the deadline: a process that
/// escaped and holds the pipe cannot hang the test).
fn sigterm_when_ready(env: &Env, script: &str) -> (Option<i32>, Vec<String>) {
    use std::io::BufRead;
    let mut cmd = env.command();
    cmd.args(["exec", &env.name, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn rcl");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut lines = Vec::new();
    let mut signalled = false;
    let status = loop {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            if l == "ready" && !signalled {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .unwrap();
                signalled = true;
            }
            lines.push(l);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let _ = child.wait();
            panic!("rcl exec did not end after SIGTERM: {lines:?}");
        }
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
        lines.push(l);
    }
    assert!(signalled, "never ready: {lines:?}");
    (status.code(), lines)
}

fn detach_and_signals(who: As) {
    need!(who);
    let env = Env::new(who, "exdet");
    let _c = up(&env);
    let n = &env.name;
    // -d: no output, status 0 at once; the command runs on in the container.
    let out = env.rcl(&[
        "exec",
        "-d",
        n,
        "--",
        "sh",
        "-c",
        "sleep 0.5; echo x > /tmp/d",
    ]);
    out.assert_ok();
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.rcl(&["exec", n, "--", "cat", "/tmp/d"]);
        if out.stdout == "x\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the detached command never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    // -d still reports a command it could not execute.
    let out = env.rcl(&["exec", "-d", n, "--", "no-such-cmd"]);
    assert_eq!(out.code(), Some(127), "{out:?}");
    // SIGTERM to rcl reaches the command.
    let (code, lines) = sigterm_when_ready(
        &env,
        "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
    );
    assert_eq!(code, Some(9), "{lines:?}");
    assert!(lines.contains(&"got-term".to_string()), "{lines:?}");
    // It reaches the command's whole process group: a child shell gets it too.
    let (code, lines) = sigterm_when_ready(
        &env,
        "sh -c 'trap \"echo child-got-term; exit 0\" TERM; echo ready; \
         while true; do sleep 0.1; done'; echo parent-done",
    );
    assert_eq!(code, Some(143), "{lines:?}");
    assert!(lines.contains(&"child-got-term".to_string()), "{lines:?}");
    assert!(!lines.contains(&"parent-done".to_string()), "{lines:?}");
}

#[test]
fn detach_and_signals_root() {
    detach_and_signals(As::Root);
}

#[test]
fn detach_and_signals_rootless() {
    detach_and_signals(As::User);
}
