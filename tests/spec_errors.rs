//! Every kind of bad spec is rejected with `file:line:column: error: ...`, the source line with
//! a caret, and a hint where one helps. Each case is a real file on disk.

use std::path::{Path, PathBuf};

use rcl::spec::{self, SpecError};

/// A directory holding a spec plus the things specs refer to: `layers/base/` (a dir),
/// `file.txt` (a file), `data/` (a dir), `noexec` (a non-executable file).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("layers/base")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("file.txt"), "x").unwrap();
        std::fs::write(dir.path().join("noexec"), "x").unwrap();
        Fixture { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load(&self, text: &str) -> Result<spec::Spec, SpecError> {
        spec::load(&self.write("spec.toml", text))
    }
}

/// The minimal valid spec, to which cases append.
const BASE: &str = "[rootfs]\nlayers = [\"layers/base\"]\n\n[process]\ncommand = [\"/bin/true\"]\n";

struct Case {
    label: &'static str,
    text: String,
    line: usize,
    column: usize,
    needles: &'static [&'static str],
}

fn case(
    label: &'static str,
    text: impl Into<String>,
    line: usize,
    column: usize,
    needles: &'static [&'static str],
) -> Case {
    Case {
        label,
        text: text.into(),
        line,
        column,
        needles,
    }
}

/// `extra` (top-level keys, starting on line 1) followed by BASE.
fn top(extra: &str) -> String {
    format!("{extra}{BASE}")
}

/// BASE with `extra` appended; `extra` starts on line 6.
fn base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn run_cases(cases: Vec<Case>) {
    let fx = Fixture::new();
    let mut failures = Vec::new();
    for c in cases {
        let path = fx.write("spec.toml", &c.text);
        let err = match spec::load(&path) {
            Ok(s) => {
                failures.push(format!("{}: accepted: {s:?}", c.label));
                continue;
            }
            Err(e) => e,
        };
        let first = &err.diagnostics[0];
        let msg = err.to_string();
        let header = format!("{}:{}:{}: error: ", path.display(), c.line, c.column);
        let mut bad = Vec::new();
        if (first.line, first.column) != (Some(c.line), Some(c.column)) {
            bad.push(format!(
                "place {:?}:{:?}, want {}:{}",
                first.line, first.column, c.line, c.column
            ));
        }
        if !msg.starts_with(&header) {
            bad.push(format!("message does not start with {header:?}"));
        }
        for n in c.needles {
            if !msg.contains(n) {
                bad.push(format!("missing {n:?}"));
            }
        }
        if !msg.contains('^') {
            bad.push("no caret".into());
        }
        if !bad.is_empty() {
            failures.push(format!("{}: {}\n{msg}\n", c.label, bad.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn toml_syntax_errors() {
    run_cases(vec![
        case("unclosed table", "[rootfs\n", 1, 8, &["expected `]`"]),
        case(
            "duplicate key",
            "[rootfs]\nlayers = [\"layers/base\"]\nlayers = []\n",
            3,
            1,
            &["duplicate key layers"],
        ),
        case(
            "bad string",
            base("[lifecycle]\nstop_signal = \"TERM\n"),
            7,
            20,
            &["invalid basic string"],
        ),
    ]);
}

#[test]
fn unknown_keys_get_suggestions() {
    run_cases(vec![
        case(
            "top level",
            top("nmae = \"x\"\n"),
            1,
            1,
            &["unknown key \"nmae\"", "help: did you mean \"name\"?"],
        ),
        case(
            "resources",
            base("[resources]\nmemroy = \"256M\"\n"),
            7,
            1,
            &[
                "unknown key \"memroy\" in [resources]",
                "help: did you mean \"memory\"?",
            ],
        ),
        case(
            "process",
            base("workdri = \"/\"\n"),
            6,
            1,
            &["did you mean \"workdir\"?"],
        ),
        case(
            "no close match lists the keys",
            base("[lifecycle]\nflavour = 1\n"),
            7,
            1,
            &["[lifecycle] accepts: init, stop_signal, stop_timeout"],
        ),
        case(
            "namespaces",
            base("[namespaces]\nnet = \"none\"\n"),
            7,
            1,
            &["unknown key \"net\" in [namespaces]"],
        ),
        case(
            "mount key",
            base("[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/t\"\nreadonyl = true\n"),
            9,
            1,
            &["in [[mounts]] #1", "did you mean \"readonly\"?"],
        ),
        case(
            "rlimit name",
            base("[process.rlimits]\nnofiel = 10\n"),
            7,
            1,
            &["unknown rlimit \"nofiel\"", "did you mean \"nofile\"?"],
        ),
        case(
            "containers not yet",
            base("[containers.web]\n"),
            6,
            2,
            &["multi-container specs"],
        ),
    ]);
}

#[test]
fn wrong_types() {
    run_cases(vec![
        case("name int", top("name = 5\n"), 1, 8, &["`name` must be a string, found the integer 5"]),
        case(
            "readonly string",
            "[rootfs]\nlayers = [\"layers/base\"]\nreadonly = \"yes\"\n[process]\ncommand = \"true\"\n",
            3,
            12,
            &["`readonly` must be true or false, found the string \"yes\""],
        ),
        case("layers string", "[rootfs]\nlayers = \"layers/base\"\n[process]\ncommand = \"x\"\n", 2, 10, &["`layers` must be an array"]),
        case("layer int", "[rootfs]\nlayers = [3]\n[process]\ncommand = \"x\"\n", 2, 11, &["a layer must be a directory path or { host = [...] }"]),
        case("command int", "[rootfs]\nlayers = [\"layers/base\"]\n[process]\ncommand = 3\n", 4, 11, &["array of strings (exec form) or a string (shell form)"]),
        case("command item", "[rootfs]\nlayers = [\"layers/base\"]\n[process]\ncommand = [\"a\", 1]\n", 4, 17, &["must contain only strings, found the integer 1"]),
        case("section not table", top("resources = 3\n"), 1, 13, &["[resources] must be a table"]),
        case("pids string", base("[resources]\npids = \"many\"\n"), 7, 8, &["`pids` must be a whole number"]),
        case("env array", base("[process.env]\nA = [1]\n"), 7, 5, &["environment variable A must be a string"]),
        case("cap_add string", base("[security]\ncap_add = \"NET_ADMIN\"\n"), 7, 11, &["`cap_add` must be an array of strings"]),
        case("mounts table", base("[mounts]\ntype = \"tmpfs\"\n"), 6, 1, &["`mounts` must be an array of tables", "[[mounts]]"]),
        case("stop_signal bool", base("[lifecycle]\nstop_signal = true\n"), 7, 15, &["`stop_signal` must be a signal name"]),
        case("init string", base("[lifecycle]\ninit = \"yes\"\n"), 7, 8, &["`init` must be true or false"]),
    ]);
}

#[test]
fn impossible_resource_values() {
    run_cases(vec![
        case(
            "memory lots",
            base("[resources]\nmemory = \"lots\"\n"),
            7,
            10,
            &[
                "invalid `memory` \"lots\"",
                "help: expected a size such as \"256M\"",
            ],
        ),
        case(
            "memory unit",
            base("[resources]\nmemory = \"12 parsecs\"\n"),
            7,
            10,
            &["unknown size unit \"parsecs\""],
        ),
        case(
            "memory negative",
            base("[resources]\nmemory = -5\n"),
            7,
            10,
            &["cannot be negative"],
        ),
        case(
            "memory tiny",
            base("[resources]\nmemory = \"4K\"\n"),
            7,
            10,
            &["too small", "1M"],
        ),
        case(
            "cpus negative",
            base("[resources]\ncpus = -1\n"),
            7,
            8,
            &["`cpus` = -1 is impossible"],
        ),
        case(
            "cpus zero",
            base("[resources]\ncpus = 0.0\n"),
            7,
            8,
            &["at least 0.01"],
        ),
        case(
            "cpus word",
            base("[resources]\ncpus = \"half\"\n"),
            7,
            8,
            &["`cpus` must be a number"],
        ),
        case(
            "pids zero",
            base("[resources]\npids = 0\n"),
            7,
            8,
            &["`pids` = 0 is impossible"],
        ),
        case(
            "io_weight",
            base("[resources]\nio_weight = 20000\n"),
            7,
            13,
            &["from 1 to 10000"],
        ),
        case(
            "cpuset syntax",
            base("[resources]\ncpuset = \"0-\"\n"),
            7,
            10,
            &["invalid `cpuset` \"0-\""],
        ),
        case(
            "cpuset backwards",
            base("[resources]\ncpuset = \"1-0\"\n"),
            7,
            10,
            &["goes backwards"],
        ),
        case(
            "cpuset offline",
            base("[resources]\ncpuset = \"0,4000\"\n"),
            7,
            10,
            &["CPU 4000 is not online"],
        ),
    ]);
}

#[test]
fn rootfs_problems() {
    run_cases(vec![
        case(
            "missing layer dir",
            "[rootfs]\nlayers = [\"layers/base\", \"layers/nope\"]\n[process]\ncommand = \"x\"\n",
            2,
            26,
            &["layers/nope cannot be used", "help: layer paths are relative to the spec file's directory"],
        ),
        case("layer is a file", "[rootfs]\nlayers = [\"file.txt\"]\n[process]\ncommand = \"x\"\n", 2, 11, &["is not a directory"]),
        case("layers empty", "[rootfs]\nlayers = []\n[process]\ncommand = \"x\"\n", 2, 10, &["`layers` is empty"]),
        case("layers missing", "[rootfs]\nreadonly = true\n[process]\ncommand = \"x\"\n", 1, 1, &["[rootfs] needs `layers`"]),
        case("host missing prog", "[rootfs]\nlayers = [{ host = [\"/nonexistent/sh\"] }]\n[process]\ncommand = \"x\"\n", 2, 21, &["host program /nonexistent/sh cannot be used"]),
        case("host not in PATH", "[rootfs]\nlayers = [{ host = [\"no-such-program-rcl\"] }]\n[process]\ncommand = \"x\"\n", 2, 21, &["not found in PATH"]),
        case("host not executable", "[rootfs]\nlayers = [{ host = [\"./noexec\"] }]\n[process]\ncommand = \"x\"\n", 2, 21, &["is not executable"]),
        case("host dir", "[rootfs]\nlayers = [{ host = [\"/bin/sh\", \"./data\"] }]\n[process]\ncommand = \"x\"\n", 2, 32, &["is not a regular file"]),
        case("host empty", "[rootfs]\nlayers = [{ host = [] }]\n[process]\ncommand = \"x\"\n", 2, 20, &["`host` is empty"]),
        case("host table typo", "[rootfs]\nlayers = [{ hots = [\"/bin/sh\"] }]\n[process]\ncommand = \"x\"\n", 2, 13, &["did you mean \"host\"?"]),
        case(
            "readonly with upper",
            "[rootfs]\nlayers = [\"layers/base\"]\nreadonly = true\nupper = \"state/up\"\n[process]\ncommand = \"x\"\n",
            4,
            9,
            &["a readonly rootfs has no upper layer"],
        ),
        case("upper is a file", "[rootfs]\nlayers = [\"layers/base\"]\nupper = \"file.txt\"\n[process]\ncommand = \"x\"\n", 3, 9, &["exists but is not a directory"]),
    ]);
}

#[test]
fn process_problems() {
    let spec =
        |process: &str| format!("[rootfs]\nlayers = [\"layers/base\"]\n[process]\n{process}");
    run_cases(vec![
        case(
            "empty exec command",
            spec("command = []\n"),
            4,
            11,
            &[
                "`command` is empty: nothing to run",
                "help: give the program",
            ],
        ),
        case(
            "empty shell command",
            spec("command = \"  \"\n"),
            4,
            11,
            &["`command` is empty"],
        ),
        case(
            "empty program",
            spec("command = [\"\", \"x\"]\n"),
            4,
            12,
            &["is an empty string"],
        ),
        case(
            "no command",
            spec("workdir = \"/\"\n"),
            3,
            1,
            &["[process] needs a `command`"],
        ),
        case(
            "shell entrypoint + command",
            spec("entrypoint = \"run\"\ncommand = [\"a\"]\n"),
            5,
            11,
            &["shell-form `entrypoint`"],
        ),
        case(
            "relative workdir",
            spec("command = \"x\"\nworkdir = \"app\"\n"),
            5,
            11,
            &["`workdir` must be an absolute path", "help: write \"/app\""],
        ),
        case(
            "user bad syntax",
            spec("command = \"x\"\nuser = \"1000:staff\"\n"),
            5,
            8,
            &["invalid `user` \"1000:staff\"", "numeric gid"],
        ),
        case(
            "user empty group",
            spec("command = \"x\"\nuser = \"bob:\"\n"),
            5,
            8,
            &["group part"],
        ),
        case(
            "user bad name",
            spec("command = \"x\"\nuser = \"bob smith\"\n"),
            5,
            8,
            &["not a valid user name"],
        ),
        case(
            "uid range",
            spec("command = \"x\"\nuser = 4294967295\n"),
            5,
            8,
            &["uid from 0 to 4294967294"],
        ),
        case(
            "env key",
            spec("command = \"x\"\nenv = { \"A=B\" = \"c\" }\n"),
            5,
            9,
            &["invalid environment variable name"],
        ),
        case(
            "umask decimal",
            spec("command = \"x\"\numask = 22\n"),
            5,
            9,
            &["ambiguous", "octal"],
        ),
        case(
            "umask range",
            spec("command = \"x\"\numask = \"1777\"\n"),
            5,
            9,
            &["from 0 to 0777"],
        ),
        case(
            "rlimit soft > hard",
            spec("command = \"x\"\nrlimits = { nofile = [10, 5] }\n"),
            5,
            22,
            &["soft limit is above the hard limit"],
        ),
        case(
            "rlimit negative",
            spec("command = \"x\"\nrlimits = { nofile = -1 }\n"),
            5,
            22,
            &[">= 0 or \"unlimited\""],
        ),
        case(
            "top-level key in a section",
            spec("command = \"x\"\nhostname = \"h\"\n"),
            5,
            1,
            &[
                "unknown key \"hostname\" in [process]",
                "move it above the first [table] header",
            ],
        ),
        case(
            "no [process]",
            "[rootfs]\nlayers = [\"layers/base\"]\n[resources]\nmemory = \"lots\"\n",
            4,
            10,
            &["invalid `memory`"],
        ),
    ]);
}

#[test]
fn namespace_security_lifecycle_problems() {
    run_cases(vec![
        case(
            "network mode",
            base("[namespaces]\nnetwork = \"bridge\"\n"),
            7,
            11,
            &["unknown network mode \"bridge\", expected \"none\" or \"host\""],
        ),
        case(
            "pid mode",
            base("[namespaces]\npid = \"shared\"\n"),
            7,
            7,
            &["expected \"new\" or \"host\""],
        ),
        case(
            "uts host + hostname",
            format!("hostname = \"box\"\n{BASE}[namespaces]\nuts = \"host\"\n"),
            1,
            12,
            &["cannot set a hostname while sharing the host's UTS"],
        ),
        case(
            "unknown cap",
            base("[security]\ncap_add = [\"NET_ADMN\"]\n"),
            7,
            12,
            &[
                "unknown capability \"NET_ADMN\"",
                "did you mean \"CAP_NET_ADMIN\"?",
            ],
        ),
        case(
            "cap in both",
            base("[security]\ncap_add = [\"chown\"]\ncap_drop = [\"CAP_CHOWN\"]\n"),
            7,
            12,
            &["CAP_CHOWN is in both"],
        ),
        case(
            "seccomp",
            base("[security]\nseccomp = \"unconfind\"\n"),
            7,
            11,
            &["unknown seccomp mode", "did you mean \"unconfined\"?"],
        ),
        case(
            "nnp type",
            base("[security]\nno_new_privileges = 1\n"),
            7,
            21,
            &["true or false"],
        ),
        case(
            "bad signal",
            base("[lifecycle]\nstop_signal = \"SIGTREM\"\n"),
            7,
            15,
            &[
                "\"SIGTREM\" is not a signal name",
                "did you mean \"SIGTERM\"?",
            ],
        ),
        case(
            "signal number",
            base("[lifecycle]\nstop_signal = 99\n"),
            7,
            15,
            &["signal numbers go from 1 to"],
        ),
        case(
            "stop_timeout word",
            base("[lifecycle]\nstop_timeout = \"soon\"\n"),
            7,
            16,
            &["invalid `stop_timeout`", "\"500ms\""],
        ),
        case(
            "stop_timeout unit",
            base("[lifecycle]\nstop_timeout = \"10 fortnights\"\n"),
            7,
            16,
            &["unknown time unit \"fortnights\""],
        ),
        case(
            "stop_timeout negative",
            base("[lifecycle]\nstop_timeout = -3\n"),
            7,
            16,
            &["cannot be negative"],
        ),
    ]);
}

#[test]
fn mount_problems() {
    run_cases(vec![
        case("relative target", base("[[mounts]]\ntype = \"bind\"\nsource = \"data\"\ntarget = \"src\"\n"), 9, 10, &["must be an absolute path", "help: write \"/src\""]),
        case("dotdot target", base("[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/a/../etc\"\n"), 8, 10, &["must not contain \"..\""]),
        case("root target", base("[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/\"\n"), 8, 10, &["cannot mount over the container's root"]),
        case(
            "duplicate target",
            base("[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/tmp\"\n\n[[mounts]]\ntype = \"volume\"\nsource = \"v\"\ntarget = \"/tmp/\"\n"),
            13,
            10,
            &["mount target /tmp is used twice", "help: [[mounts]] #1 already mounts there"],
        ),
        case("missing bind source", base("[[mounts]]\ntype = \"bind\"\nsource = \"nope\"\ntarget = \"/x\"\n"), 8, 10, &["bind source", "nope cannot be used"]),
        case("bind without source", base("[[mounts]]\ntype = \"bind\"\ntarget = \"/x\"\n"), 6, 1, &["a bind mount needs `source`"]),
        case("tmpfs with source", base("[[mounts]]\ntype = \"tmpfs\"\nsource = \"data\"\ntarget = \"/x\"\n"), 8, 10, &["a tmpfs mount takes no `source`"]),
        case("size on bind", base("[[mounts]]\ntype = \"bind\"\nsource = \"data\"\ntarget = \"/x\"\nsize = \"1M\"\n"), 10, 8, &["`size` only applies to tmpfs"]),
        case("tmpfs bad size", base("[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/x\"\nsize = \"big\"\n"), 9, 8, &["invalid `size` \"big\""]),
        case("unknown type", base("[[mounts]]\ntype = \"bnd\"\ntarget = \"/x\"\n"), 7, 8, &["unknown mount type \"bnd\"", "did you mean \"bind\"?"]),
        case("no type", base("[[mounts]]\ntarget = \"/x\"\n"), 6, 1, &["[[mounts]] #1 has no `type`"]),
        case("no target", base("[[mounts]]\ntype = \"tmpfs\"\n"), 6, 1, &["has no `target`"]),
        case("volume name", base("[[mounts]]\ntype = \"volume\"\nsource = \"../x\"\ntarget = \"/x\"\n"), 8, 10, &["invalid volume name"]),
    ]);
}

#[test]
fn names() {
    run_cases(vec![
        case(
            "bad name",
            top("name = \"my app\"\n"),
            1,
            8,
            &["invalid container name \"my app\""],
        ),
        case(
            "bad hostname",
            top("hostname = \"a/b\"\n"),
            1,
            12,
            &["invalid hostname"],
        ),
        case(
            "long name",
            top(&format!("name = \"{}\"\n", "a".repeat(65))),
            1,
            8,
            &["longer than 64"],
        ),
    ]);
}

#[test]
fn missing_sections_and_files_have_no_position() {
    let fx = Fixture::new();
    let err = fx.load("name = \"x\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("spec.toml: error: the spec has no [rootfs] table"),
        "{msg}"
    );
    assert!(msg.contains("the spec has no [process] table"), "{msg}");
    assert_eq!(err.diagnostics.len(), 2);

    let err = spec::load(&fx.dir.path().join("absent.toml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("absent.toml: error: cannot read the spec file"),
        "{err}"
    );

    // A file stem that is not a valid name, with no `name` key.
    let p = fx.write("my spec.toml", BASE);
    let err = spec::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("the file name gives the container name \"my spec\""),
        "{err}"
    );
    assert!(err.contains("help: set `name = \"...\"`"), "{err}");
}

#[test]
fn all_errors_are_reported_at_once_in_file_order() {
    let fx = Fixture::new();
    let err = fx
        .load(&base(
            "[resources]\nmemory = \"lots\"\ncpus = -1\n\n[lifecycle]\nstop_signal = \"NOPE\"\n",
        ))
        .unwrap_err();
    let lines: Vec<_> = err.diagnostics.iter().map(|d| d.line.unwrap()).collect();
    assert_eq!(lines, [7, 8, 11]);
    let tail = format!("3 errors in {}", fx.dir.path().join("spec.toml").display());
    assert!(err.to_string().ends_with(&tail), "{err}");
}

#[test]
fn the_message_shows_the_line_with_a_caret() {
    let fx = Fixture::new();
    let err = fx
        .load(&base("[resources]\nmemory = \"lots\"\n"))
        .unwrap_err();
    let msg = err.to_string();
    let want = "  |\n7 | memory = \"lots\"\n  |          ^^^^^^\nhelp: ";
    assert!(msg.contains(want), "{msg}");
}

#[test]
fn a_relative_spec_path_is_reported_as_given() {
    let fx = Fixture::new();
    fx.write("spec.toml", &base("[resources]\npids = 0\n"));
    let prev = std::env::current_dir().unwrap();
    // Loading through a relative path keeps that path in the message (no cwd change needed:
    // build one relative to the current dir).
    let rel = pathdiff(fx.dir.path().join("spec.toml"), &prev);
    let err = spec::load(&rel).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:7:8: error:", rel.display())),
        "{err}"
    );
}

/// `target` relative to `base` (both absolute), with `..` as needed.
fn pathdiff(target: PathBuf, base: &Path) -> PathBuf {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}
