//! Valid specs load into the expected `Spec` values: defaults, units, forms, resolved paths.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcl::spec::*;

fn load_in(dir: &Path, name: &str, text: &str) -> Spec {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    load(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("layers/app")).unwrap();
    std::fs::create_dir_all(d.path().join("layers/base")).unwrap();
    std::fs::create_dir_all(d.path().join("src")).unwrap();
    d
}

#[test]
fn minimal_spec_gets_every_default() {
    let d = fixture();
    let s = load_in(
        d.path(),
        "web-1.toml",
        "[rootfs]\nlayers = [\"layers/base\"]\n[process]\ncommand = [\"/bin/app\", \"--port\", \"80\"]\n",
    );
    let dir = std::fs::canonicalize(d.path()).unwrap();
    assert_eq!(s.source, d.path().join("web-1.toml"));
    assert_eq!(s.name, "web-1");
    assert_eq!(s.hostname, "web-1");
    assert_eq!(s.rootfs.layers, [Layer::Dir(d.path().join("layers/base"))]);
    assert!(dir.ends_with(d.path().file_name().unwrap()));
    assert_eq!(s.rootfs.upper, None);
    assert!(!s.rootfs.readonly);
    assert_eq!(s.process.args, ["/bin/app", "--port", "80"]);
    assert_eq!(
        s.process.env,
        [("PATH".to_string(), DEFAULT_PATH.to_string())]
    );
    assert_eq!(s.process.workdir, PathBuf::from("/"));
    assert_eq!(
        s.process.user,
        User::Ids {
            uid: 0,
            gid: Some(0)
        }
    );
    assert_eq!(s.process.umask, 0o022);
    assert!(s.process.rlimits.is_empty());
    assert_eq!(s.namespaces, Namespaces::default());
    assert_eq!(s.namespaces.network, NsMode::New);
    assert_eq!(s.resources, Resources::default());
    assert_eq!(s.security.cap_add, Vec::<String>::new());
    assert!(s.security.no_new_privileges);
    assert_eq!(s.security.seccomp, Seccomp::Default);
    assert!(s.mounts.is_empty());
    assert!(s.lifecycle.init);
    assert_eq!(s.lifecycle.stop_signal, libc::SIGTERM);
    assert_eq!(s.lifecycle.stop_timeout, Duration::from_secs(10));
}

#[test]
fn full_spec_converts_every_value() {
    let d = fixture();
    let s = load_in(
        d.path(),
        "full.toml",
        r#"
name = "hello"
hostname = "box"

[rootfs]
layers = ["layers/app", { host = ["/bin/sh", "env"] }, "./layers/../layers/base"]
upper = "state/hello/upper"

[process]
entrypoint = ["/usr/bin/env"]
command = "echo $GREETING"
env = { ZED = "last?", GREETING = "hi", PATH = "/bin", PORT = 8080, DEBUG = true }
workdir = "/srv/./app/"
user = "nobody:nogroup"
umask = 0o077
rlimits = { nofile = [1024, 4096], NPROC = "unlimited", RLIMIT_CORE = 0 }

[namespaces]
network = "host"
pid = "host"
ipc = "new"
cgroup = "host"

[resources]
memory = "256M"
cpus = 0.3
pids = 64
cpuset = "0"
io_weight = 100

[security]
cap_add = ["net_admin", "CAP_SYS_PTRACE", "NET_ADMIN"]
cap_drop = ["ALL"]
no_new_privileges = false
seccomp = "unconfined"

[[mounts]]
type = "bind"
source = "./src"
target = "/src"
readonly = true

[[mounts]]
type = "tmpfs"
target = "/tmp"
size = "64M"

[[mounts]]
type = "volume"
source = "cache"
target = "/cache/"

[lifecycle]
init = false
stop_signal = "int"
stop_timeout = "1m30s"
"#,
    );
    let dir = d.path();
    assert_eq!(s.name, "hello");
    assert_eq!(s.hostname, "box");
    let Layer::Host(progs) = &s.rootfs.layers[1] else {
        panic!("{:?}", s.rootfs.layers)
    };
    assert_eq!(progs[0], PathBuf::from("/bin/sh"));
    assert!(
        progs[1].is_absolute() && progs[1].ends_with("env"),
        "{progs:?}"
    );
    assert_eq!(s.rootfs.layers[0], Layer::Dir(dir.join("layers/app")));
    assert_eq!(s.rootfs.layers[2], Layer::Dir(dir.join("layers/base")));
    assert_eq!(s.rootfs.upper, Some(dir.join("state/hello/upper")));
    assert_eq!(
        s.process.args,
        ["/usr/bin/env", "/bin/sh", "-c", "echo $GREETING"]
    );
    // File order kept; the given PATH wins over the default.
    let env: Vec<(&str, &str)> = s
        .process
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("ZED", "last?"),
            ("GREETING", "hi"),
            ("PATH", "/bin"),
            ("PORT", "8080"),
            ("DEBUG", "true")
        ]
    );
    assert_eq!(s.process.workdir, PathBuf::from("/srv/app"));
    assert_eq!(
        s.process.user,
        User::Name {
            user: "nobody".into(),
            group: Some("nogroup".into())
        }
    );
    assert_eq!(s.process.umask, 0o077);
    let rl: Vec<(&str, u64, u64)> = s
        .process
        .rlimits
        .iter()
        .map(|r| (r.name.as_str(), r.soft, r.hard))
        .collect();
    assert_eq!(
        rl,
        [
            ("RLIMIT_NOFILE", 1024, 4096),
            ("RLIMIT_NPROC", u64::MAX, u64::MAX),
            ("RLIMIT_CORE", 0, 0)
        ]
    );
    assert_eq!(s.process.rlimits[0].resource, libc::RLIMIT_NOFILE as i32);
    assert_eq!(
        s.namespaces,
        Namespaces {
            network: NsMode::Host,
            pid: NsMode::Host,
            ipc: NsMode::New,
            uts: NsMode::New,
            cgroup: NsMode::Host,
        }
    );
    assert_eq!(
        s.resources,
        Resources {
            memory: Some(256 << 20),
            cpus: Some(0.3),
            pids: Some(64),
            cpuset: Some("0".into()),
            io_weight: Some(100),
        }
    );
    assert_eq!(s.security.cap_add, ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"]);
    assert_eq!(s.security.cap_drop, ["ALL"]);
    assert!(!s.security.no_new_privileges);
    assert_eq!(s.security.seccomp, Seccomp::Unconfined);
    assert_eq!(
        s.mounts,
        [
            Mount {
                kind: MountKind::Bind {
                    source: dir.join("src")
                },
                target: "/src".into(),
                readonly: true
            },
            Mount {
                kind: MountKind::Tmpfs {
                    size: Some(64 << 20)
                },
                target: "/tmp".into(),
                readonly: false
            },
            Mount {
                kind: MountKind::Volume {
                    name: "cache".into()
                },
                target: "/cache".into(),
                readonly: false
            },
        ]
    );
    assert!(!s.lifecycle.init);
    assert_eq!(s.lifecycle.stop_signal, libc::SIGINT);
    assert_eq!(s.lifecycle.stop_timeout, Duration::from_secs(90));
}

#[test]
fn command_forms_and_value_spellings() {
    let d = fixture();
    let head = "[rootfs]\nlayers = [\"layers/base\"]\n";
    let s = load_in(
        d.path(),
        "a.toml",
        &format!("{head}[process]\nentrypoint = \"exec sleep 5\"\n"),
    );
    assert_eq!(s.process.args, ["/bin/sh", "-c", "exec sleep 5"]);
    let s = load_in(
        d.path(),
        "b.toml",
        &format!(
            "{head}[process]\nentrypoint = []\ncommand = [\"/bin/true\"]\nuser = 1000\numask = \"027\"\n\
             [resources]\nmemory = 1073741824\ncpus = 2\n[lifecycle]\nstop_signal = 9\nstop_timeout = 2.5\n"
        ),
    );
    assert_eq!(s.process.args, ["/bin/true"]);
    assert_eq!(
        s.process.user,
        User::Ids {
            uid: 1000,
            gid: None
        }
    );
    assert_eq!(s.process.umask, 0o027);
    assert_eq!(s.resources.memory, Some(1 << 30));
    assert_eq!(s.resources.cpus, Some(2.0));
    assert_eq!(s.lifecycle.stop_signal, 9);
    assert_eq!(s.lifecycle.stop_timeout, Duration::from_millis(2500));
    let s = load_in(
        d.path(),
        "c.toml",
        &format!(
            "{head}[process]\ncommand = \"true\"\nuser = \"1000:1000\"\n[resources]\nmemory = \"1.5GiB\"\n\
             [lifecycle]\nstop_signal = \"SIGRTMIN+1\"\nstop_timeout = \"500ms\"\n[rootfs.x]\n"
        )
        .replace("[rootfs.x]\n", ""),
    );
    assert_eq!(
        s.process.user,
        User::Ids {
            uid: 1000,
            gid: Some(1000)
        }
    );
    assert_eq!(s.resources.memory, Some(3 << 29));
    assert_eq!(s.lifecycle.stop_signal, libc::SIGRTMIN() + 1);
    assert_eq!(s.lifecycle.stop_timeout, Duration::from_millis(500));
}

#[test]
fn readonly_rootfs_and_upper_paths() {
    let d = fixture();
    let s = load_in(
        d.path(),
        "ro.toml",
        "[rootfs]\nlayers = [\"layers/base\"]\nreadonly = true\n[process]\ncommand = \"true\"\n",
    );
    assert!(s.rootfs.readonly);
    assert_eq!(s.rootfs.upper, None);
    // An absolute upper that does not exist yet is fine: the runtime creates it.
    let s = load_in(
        d.path(),
        "up.toml",
        "[rootfs]\nlayers = [\"layers/base\"]\nupper = \"/var/tmp/rcl-never-created/upper\"\n[process]\ncommand = \"true\"\n",
    );
    assert_eq!(
        s.rootfs.upper,
        Some(PathBuf::from("/var/tmp/rcl-never-created/upper"))
    );
    assert!(
        !Path::new("/var/tmp/rcl-never-created").exists(),
        "load must not create anything"
    );
}
