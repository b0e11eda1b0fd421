//! Multi-container specs (`load_project`): start order, depends_on conditions, restart
//! policies, healthchecks, and their errors at the right line and column.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcl::spec::*;

fn write(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("base")).unwrap();
    let p = dir.join("stack.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A member table with the minimum a container needs.
fn member(name: &str, extra: &str) -> String {
    format!(
        "[containers.{name}]\nrootfs.layers = [\"base\"]\nprocess.command = \"true\"\n{extra}\n"
    )
}

fn names(p: &Project) -> Vec<&str> {
    p.containers.iter().map(|c| c.spec.name.as_str()).collect()
}

#[test]
fn start_order_follows_dependencies_then_file_order() {
    let d = tempfile::tempdir().unwrap();
    let text = [
        member("web", "depends_on = [\"api\", \"cache\"]"),
        member("api", "depends_on = { db = \"healthy\", migrate = \"completed\" }"),
        member("cache", ""),
        member("migrate", "depends_on = [\"db\"]"),
        member(
            "db",
            "[containers.db.healthcheck]\ncommand = [\"/bin/check\"]\n[containers.db.lifecycle]\nrestart = \"always\"\n",
        ),
    ]
    .concat();
    let p = load_project(&write(d.path(), &text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&p), ["cache", "db", "migrate", "api", "web"]);
    let api = &p.containers[3];
    assert_eq!(
        api.depends_on,
        [
            Dependency {
                name: "db".into(),
                condition: Condition::Healthy
            },
            Dependency {
                name: "migrate".into(),
                condition: Condition::Completed
            },
        ]
    );
    assert_eq!(api.restart, Restart::No);
    assert_eq!(api.healthcheck, None);
    let db = &p.containers[1];
    assert_eq!(db.restart, Restart::Always);
    assert_eq!(
        db.healthcheck,
        Some(Healthcheck {
            command: vec!["/bin/check".into()],
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
        })
    );
    assert_eq!(db.spec.hostname, "db");
    assert_eq!(p.containers[4].depends_on[0].condition, Condition::Started);
}

#[test]
fn a_single_container_file_is_a_project_of_one() {
    let d = tempfile::tempdir().unwrap();
    let p = load_project(&write(
        d.path(),
        "[rootfs]\nlayers = [\"base\"]\n[process]\ncommand = \"true\"\n[lifecycle]\nrestart = \"on-failure:5\"\n\
         [healthcheck]\ncommand = \"true\"\ninterval = \"2s\"\nretries = 1\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&p), ["stack"]);
    let c = &p.containers[0];
    assert_eq!(
        c.restart,
        Restart::OnFailure {
            max_retries: Some(5)
        }
    );
    let h = c.healthcheck.as_ref().unwrap();
    assert_eq!(h.command, ["/bin/sh", "-c", "true"]);
    assert_eq!(h.interval, Duration::from_secs(2));
    assert_eq!(h.retries, 1);
}

/// (label, text, line, column, needles)
type Case = (&'static str, String, usize, usize, &'static [&'static str]);

fn run(cases: Vec<Case>) {
    let d = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (label, text, line, col, needles) in cases {
        let path = write(d.path(), &text);
        let err = match load_project(&path) {
            Ok(p) => {
                failures.push(format!("{label}: accepted {:?}", names(&p)));
                continue;
            }
            Err(e) => e,
        };
        let msg = err.to_string();
        let first = &err.diagnostics[0];
        let mut bad = Vec::new();
        if (first.line, first.column) != (Some(line), Some(col)) {
            bad.push(format!(
                "at {:?}:{:?}, want {line}:{col}",
                first.line, first.column
            ));
        }
        for n in needles {
            if !msg.contains(n) {
                bad.push(format!("missing {n:?}"));
            }
        }
        if !bad.is_empty() {
            failures.push(format!("{label}: {}\n{msg}\n", bad.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn dependency_errors() {
    let two = |a: &str, b: &str| [member("a", a), member("b", b)].concat();
    run(vec![
        (
            "unknown name",
            two("depends_on = [\"bb\"]", ""),
            4,
            15,
            &["no container named \"bb\"", "did you mean \"b\"?"],
        ),
        (
            "self",
            two("depends_on = [\"a\"]", ""),
            4,
            15,
            &["a cannot depend on itself"],
        ),
        (
            "cycle",
            two("depends_on = [\"b\"]", "depends_on = [\"a\"]"),
            8,
            15,
            &["dependency cycle: a -> b -> a", "help: remove one"],
        ),
        (
            "healthy without healthcheck",
            two("depends_on = { b = \"healthy\" }", ""),
            4,
            16,
            &["but b has no [healthcheck]", "[containers.b.healthcheck]"],
        ),
        (
            "bad condition",
            two("depends_on = { b = \"ready\" }", ""),
            4,
            20,
            &["unknown condition \"ready\""],
        ),
        (
            "twice",
            two("depends_on = [\"b\", \"b\"]", ""),
            4,
            20,
            &["b is listed twice"],
        ),
        (
            "wrong type",
            two("depends_on = 3", ""),
            4,
            14,
            &["`depends_on` must be an array"],
        ),
    ]);
}

#[test]
fn project_shape_errors() {
    run(vec![
        (
            "name inside",
            member("a", "name = \"b\""),
            4,
            1,
            &["[containers.a] cannot set `name`"],
        ),
        (
            "key beside containers",
            format!("hostname = \"x\"\n{}", member("a", "")),
            1,
            1,
            &["\"hostname\" cannot sit beside [containers.NAME] tables"],
        ),
        (
            "bad member name",
            member("my_app!", "").replace("[containers.my_app!]", "[containers.\"my app\"]"),
            1,
            13,
            &["invalid container name \"my app\""],
        ),
        (
            "typo in member",
            member("a", "helthcheck = {}"),
            4,
            1,
            &[
                "unknown key \"helthcheck\" in [containers.a]",
                "did you mean \"healthcheck\"?",
            ],
        ),
        (
            "errors inside a member point into it",
            member("a", "resources.memory = \"lots\""),
            4,
            20,
            &["invalid `memory` \"lots\""],
        ),
        (
            "depends_on alone",
            "depends_on = [\"x\"]\n[rootfs]\nlayers = [\"base\"]\n[process]\ncommand = \"true\"\n"
                .into(),
            1,
            1,
            &["`depends_on` needs several containers"],
        ),
        (
            "empty containers",
            "[containers]\n".into(),
            1,
            1,
            &["[containers] is empty"],
        ),
    ]);
}

#[test]
fn restart_and_healthcheck_errors() {
    run(vec![
        (
            "restart policy",
            member("a", "lifecycle.restart = \"sometimes\""),
            4,
            21,
            &["invalid `restart` \"sometimes\"", "\"on-failure:N\""],
        ),
        (
            "restart retries",
            member("a", "lifecycle.restart = \"on-failure:x\""),
            4,
            21,
            &["\"x\" is not a number of retries"],
        ),
        (
            "healthcheck without command",
            member("a", "[containers.a.healthcheck]\ninterval = \"1s\""),
            4,
            1,
            &["[healthcheck] needs a `command`"],
        ),
        (
            "healthcheck interval",
            member(
                "a",
                "[containers.a.healthcheck]\ncommand = \"true\"\ninterval = \"often\"",
            ),
            6,
            12,
            &["invalid `interval`"],
        ),
        (
            "healthcheck zero timeout",
            member(
                "a",
                "[containers.a.healthcheck]\ncommand = \"true\"\ntimeout = 0",
            ),
            6,
            11,
            &["`timeout` must be longer than 0"],
        ),
        (
            "healthcheck retries",
            member(
                "a",
                "[containers.a.healthcheck]\ncommand = \"true\"\nretries = 0",
            ),
            6,
            11,
            &["`retries` = 0 is impossible"],
        ),
        (
            "healthcheck key typo",
            member(
                "a",
                "[containers.a.healthcheck]\ncommand = \"true\"\nintervall = \"1s\"",
            ),
            6,
            1,
            &["did you mean \"interval\"?"],
        ),
    ]);
}

#[test]
fn single_container_load_rejects_project_keys_with_a_hint() {
    let d = tempfile::tempdir().unwrap();
    let base = "[rootfs]\nlayers = [\"base\"]\n[process]\ncommand = \"true\"\n";
    let err = load(&write(
        d.path(),
        &format!("{base}[healthcheck]\ncommand = \"true\"\n"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(":5:2: error: unknown key \"healthcheck\""),
        "{err}"
    );
    assert!(err.contains("multi-container specs"), "{err}");
    let err = load(&write(
        d.path(),
        &format!("{base}[lifecycle]\nrestart = \"always\"\n"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(":6:1: error: unknown key \"restart\" in [lifecycle]"),
        "{err}"
    );
    let err = load(&write(d.path(), &member("a", "")))
        .unwrap_err()
        .to_string();
    assert!(err.contains(":1:2: error: multi-container specs"), "{err}");
}

#[test]
fn unless_stopped_is_a_restart_policy() {
    let d = tempfile::tempdir().unwrap();
    let p = load_project(&write(
        d.path(),
        "[rootfs]\nlayers = [\"base\"]\n[process]\ncommand = \"true\"\n[lifecycle]\nrestart = \"unless-stopped\"\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.containers[0].restart, Restart::UnlessStopped);
}
