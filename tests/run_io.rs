//! `rcl run`: stdin (`-i`, terminals), users and groups, and errors that leave nothing behind.

mod run_common;

use std::process::Command;

use run_common::{As, Env};

fn stdin_passing(who: As) {
    need!(who);
    let env = Env::new(who, "stdin");
    let spec = env.spec("cat; echo end", "");
    // Without -i (and no terminal) the container's stdin is /dev/null.
    let out = env.run(&spec);
    assert_eq!(out.stdout, "end\n", "{out:#?}");
    // With -i it gets rcl's stdin.
    let mut cmd = env.command();
    cmd.args(["run", "-i", spec.to_str().unwrap()]);
    let script = format!("printf 'line one\\nline two\\n' | {}", shell_words(&cmd));
    let out = testkit::sh(&script, run_common::TIMEOUT);
    assert_eq!(out.stdout, "line one\nline two\nend\n", "{out:#?}");
    env.assert_clean();
}

/// The command line of `cmd` (program, args, env) as a shell string.
fn shell_words(cmd: &Command) -> String {
    let q = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let mut parts = vec!["env".to_string(), "-i".to_string()];
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let kv = format!("{}={}", k.to_string_lossy(), v.to_string_lossy());
            parts.push(q(std::ffi::OsStr::new(&kv)));
        }
    }
    parts.push(q(cmd.get_program()));
    parts.extend(cmd.get_args().map(q));
    format!(
        "(cd {} && exec {})",
        q(cmd.get_current_dir().unwrap().as_os_str()),
        parts.join(" ")
    )
}

#[test]
fn stdin_passing_root() {
    stdin_passing(As::Root);
}

#[test]
fn stdin_passing_rootless() {
    stdin_passing(As::User);
}

#[test]
fn terminal() {
    need!(As::Root);
    if !std::path::Path::new("/usr/bin/script").exists() {
        testkit::skip!("util-linux `script` is not installed");
    }
    let env = Env::new(As::Root, "tty");
    let spec = env.spec(
        "test -t 0 && test -t 1 && echo both-tty; tty; test -c /dev/console && echo console; \
         read -r l; echo got=$l; exit 4",
        "",
    );
    let mut cmd = env.command();
    cmd.args(["run", spec.to_str().unwrap()]);
    // `script` gives rcl a terminal; the input line arrives through the container's terminal.
    let script = format!(
        "(sleep 1; echo hello) | script -qec {} /dev/null",
        shell_words_quoted(&shell_words(&cmd))
    );
    let out = testkit::sh(&script, run_common::TIMEOUT);
    assert!(out.stdout.contains("both-tty"), "{out:#?}");
    assert!(out.stdout.contains("got=hello"), "{out:#?}");
    // The terminal lives in the container's own /dev/pts.
    assert!(out.stdout.contains("/dev/pts/0"), "{out:#?}");
    assert!(out.stdout.contains("console"), "{out:#?}");
    assert_eq!(out.code(), Some(4), "{out:#?}");
    env.assert_clean();
}

fn shell_words_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn users(who: As) {
    need!(who);
    let env = Env::new(who, "users");
    let spec = env.spec(
        "id; echo HOME=$HOME; pwd",
        "user = \"user:extra\"\nworkdir = \"/home/user\"\n",
    );
    let out = env.run(&spec);
    out.assert_ok();
    assert!(
        out.stdout.starts_with("uid=1000(user) gid=2000(extra)"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("HOME=/home/user\n/home/user\n"),
        "{out:#?}"
    );
    let spec = env.spec("id -u; id -g", "user = \"1000\"\n");
    let out = env.run(&spec);
    assert_eq!(out.stdout, "1000\n1000\n", "{out:#?}");
    let spec = env.spec("true", "user = \"ghost\"\n");
    let out = env.run(&spec);
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("user \"ghost\" not found"), "{out:#?}");
    env.assert_clean();
}

#[test]
fn users_root() {
    users(As::Root);
}

#[test]
fn users_rootless() {
    users(As::User);
}

fn errors_leave_nothing(who: As) {
    need!(who);
    let env = Env::new(who, "errs");
    // A bind source that vanished after validation: the error names it, nothing ran.
    let gone = env.owned_dir("gone");
    let spec = env.spec(
        "echo ran",
        &format!(
            "[[mounts]]\ntype = \"bind\"\nsource = {:?}\ntarget = \"/x\"\n",
            gone.display().to_string()
        ),
    );
    std::fs::remove_dir(&gone).unwrap();
    let out = env.run(&spec);
    assert!(matches!(out.code(), Some(1) | Some(2)), "{out:#?}");
    assert!(out.stderr.contains(&gone.display().to_string()), "{out:#?}");
    assert_eq!(out.stdout, "");
    // A layer that is not a directory: a spec error, exit 2.
    let text = format!(
        "name = {:?}\n[rootfs]\nlayers = [\"nope\"]\n[process]\ncommand = [\"true\"]\n",
        env.name
    );
    let out = env.run(&env.spec_text(&text));
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("nope"), "{out:#?}");
    env.assert_clean();
}

#[test]
fn errors_leave_nothing_root() {
    errors_leave_nothing(As::Root);
}

#[test]
fn errors_leave_nothing_rootless() {
    errors_leave_nothing(As::User);
}
