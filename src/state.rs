//! Records of the containers `rcl up` started, shared safely between any number of concurrent
//! `rcl` commands.
//!
//! Layout under the state directory ([`crate::paths::state_dir`] + `/containers`):
//! `NAME.json` (the [`Record`], replaced atomically: written to a temporary file, synced, then
//! renamed over), `NAME.lock` (a `flock` held while a command changes that container) and
//! `.names.lock` (held while a name is claimed or released). Persistent data (the container's
//! upper layer, its logs, and a copy of the record that outlives a reboot, which empties the
//! state directory) lives under [`crate::paths::data_dir`] + `/containers/NAME`.
//!
//! A record names its supervisor by pid *and* start time (field 22 of `/proc/PID/stat`), so a
//! reused pid is never mistaken for a live supervisor; [`Store::list`] reports containers whose
//! supervisor is gone (killed, or lost in a reboot) as exited.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Errors of the state store, each naming the container or the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path at fault.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record could not be parsed.
    #[error("{}: corrupt container record: {source}", path.display())]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The name belongs to a container of another spec.
    #[error(
        "container name {name:?} is already used by the spec {} (run `rcl down` on that spec \
         or `rcl rm {name}` first)", owner.display()
    )]
    NameTaken {
        /// The name asked for.
        name: String,
        /// The spec that owns it.
        owner: PathBuf,
    },
    /// The name cannot be a file name.
    #[error("invalid container name {0:?}: use letters, digits, '.', '_' and '-'")]
    BadName(String),
    /// No record for the name.
    #[error("no such container: {0}")]
    NotFound(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Set up, command not started yet.
    Created,
    /// The command runs.
    Running,
    /// Waiting for the back-off delay before a restart.
    Restarting,
    /// Stopped or finished (or its supervisor is gone).
    Exited,
}

impl Status {
    /// Lower-case name, as `ps` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }
}

/// Result of the healthchecks so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The container has no healthcheck.
    #[default]
    None,
    /// In its start period, or no check has passed or failed enough yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` consecutive checks failed.
    Unhealthy,
}

impl Health {
    /// Lower-case name ("" for none), as `ps` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::None => "",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A process named by pid and start time, so that pid reuse is noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// The kernel's boot id when it was recorded (a pid and start time from before a reboot
    /// name nothing now).
    #[serde(default)]
    pub boot_id: String,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), empty when unreadable.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl ProcRef {
    /// The process `pid` as it is now, or `None` when there is no such process.
    pub fn of(pid: i32) -> Option<ProcRef> {
        Some(ProcRef {
            pid,
            start_time: proc_start_time(pid)?,
            boot_id: boot_id(),
        })
    }

    /// This process.
    pub fn current() -> ProcRef {
        ProcRef::of(std::process::id() as i32).expect("/proc/self/stat is readable")
    }

    /// True when the very same process still exists (not a zombie, not a reused pid).
    pub fn alive(&self) -> bool {
        (self.boot_id.is_empty() || self.boot_id == boot_id())
            && proc_start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 (starttime) of `/proc/PID/stat`; `None` for a missing or zombie process.
fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Milliseconds since the Unix epoch (how times are stored).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A stored time as a `SystemTime`.
pub fn ms_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Everything rcl knows about one container started by `rcl up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique (per user) container name.
    pub name: String,
    /// The spec file it came from (absolute).
    pub spec_path: PathBuf,
    /// Hash of the container's settings, to notice a changed spec.
    pub spec_hash: String,
    /// The supervisor process, while there is one.
    pub supervisor: Option<ProcRef>,
    /// Host pid of the container's first process, while it runs.
    pub init_pid: Option<i32>,
    /// Life-cycle state.
    pub status: Status,
    /// Exit status of the last run (128+N when killed by signal N).
    pub exit_code: Option<i32>,
    /// When the current (or last) run started, ms since the epoch.
    pub started_ms: Option<u64>,
    /// When the last run ended, ms since the epoch.
    pub finished_ms: Option<u64>,
    /// How many times the supervisor restarted it.
    pub restart_count: u32,
    /// Healthcheck result.
    pub health: Health,
    /// The command line, for `ps`.
    pub command: Vec<String>,
    /// True once a user stopped it (so `unless-stopped` and `always` leave it down).
    pub stopped_by_user: bool,
    /// Why the last run failed to start or the supervisor gave up, if it did.
    pub error: Option<String>,
    /// The container's upper layer (for diff and commit).
    pub upper: Option<PathBuf>,
    /// The container's lower layers, top first (for diff and commit).
    pub lowers: Vec<PathBuf>,
    /// The runtime's id of the current run (its cgroup's name), while it runs.
    #[serde(default)]
    pub container_id: Option<String>,
}

impl Record {
    /// A fresh record in state `Created`.
    pub fn new(name: &str, spec_path: &Path, spec_hash: &str) -> Record {
        Record {
            name: name.to_string(),
            spec_path: spec_path.to_path_buf(),
            spec_hash: spec_hash.to_string(),
            supervisor: None,
            init_pid: None,
            status: Status::Created,
            exit_code: None,
            started_ms: None,
            finished_ms: None,
            restart_count: 0,
            health: Health::None,
            command: Vec::new(),
            stopped_by_user: false,
            error: None,
            upper: None,
            lowers: Vec::new(),
            container_id: None,
        }
    }

    /// True when the record says a supervisor looks after it and that supervisor still lives.
    pub fn supervisor_alive(&self) -> bool {
        self.supervisor.as_ref().is_some_and(|s| s.alive())
    }

    /// The record as it truly is: a container whose supervisor is gone is exited, whatever the
    /// file says (its supervisor was killed, or the machine rebooted).
    pub fn observed(mut self) -> Record {
        if self.status != Status::Exited && !self.supervisor_alive() {
            self.status = Status::Exited;
            self.init_pid = None;
            self.container_id = None;
            if self.error.is_none() {
                self.error = Some("its supervisor is gone".into());
            }
            if self.health != Health::None {
                self.health = Health::Unhealthy;
            }
        }
        self
    }
}

/// An exclusive `flock` held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<fs::File>,
}

/// The store of container records (see the module docs).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    data: PathBuf,
}

/// Checks that `name` is usable as a container name (and a file name).
pub fn check_name(name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadName(name.to_string()))
    }
}

impl Store {
    /// The store in the caller's default places (`/run/rcl`, `/var/lib/rcl` as root;
    /// `$XDG_RUNTIME_DIR/rcl`, `$XDG_DATA_HOME/rcl` rootless), each + `/containers`.
    /// `RCL_STATE_DIR` and `RCL_DATA_DIR` (absolute paths) replace them, e.g. to keep a test's
    /// containers apart.
    pub fn open_default() -> Result<Store, StateError> {
        let env = |var: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let dir =
            env("RCL_STATE_DIR").unwrap_or_else(|| crate::paths::state_dir().join("containers"));
        let data =
            env("RCL_DATA_DIR").unwrap_or_else(|| crate::paths::data_dir().join("containers"));
        Store::open(&dir, &data)
    }

    /// A store with records in `dir` and persistent data in `data`.
    pub fn open(dir: &Path, data: &Path) -> Result<Store, StateError> {
        for d in [dir, data] {
            fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            data: data.to_path_buf(),
        })
    }

    /// Directory of the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Persistent data directory of container `name` (upper layer, logs).
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    /// Log directory of container `name`.
    pub fn log_dir(&self, name: &str) -> PathBuf {
        self.data_dir(name).join("logs")
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn lock_file(&self, path: &Path) -> Result<Lock, StateError> {
        loop {
            let f = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(io_err("opening lock", path))?;
            let f = Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| io_err("locking", path)(e.into()))?;
            // The file may have been removed (and maybe recreated) while we waited: then our
            // lock guards nothing, so take the lock again on the file now at that path.
            let held = f.metadata().map_err(io_err("stat", path))?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Lock { _file: f });
                }
                _ => continue,
            }
        }
    }

    /// Takes the global lock (held while names are claimed or released).
    pub fn lock_names(&self) -> Result<Lock, StateError> {
        self.lock_file(&self.dir.join(".names.lock"))
    }

    /// Takes the lock of container `name` (held while a command changes it).
    pub fn lock(&self, name: &str) -> Result<Lock, StateError> {
        check_name(name)?;
        self.lock_file(&self.dir.join(format!("{name}.lock")))
    }

    /// The persistent copy of the record (survives a reboot, which empties the state dir).
    fn data_record_path(&self, name: &str) -> PathBuf {
        self.data_dir(name).join("record.json")
    }

    fn read_record(path: PathBuf) -> Result<Option<Record>, StateError> {
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// The stored record of `name`, as stored (see [`Record::observed`]); after a reboot, the
    /// persistent copy.
    pub fn load(&self, name: &str) -> Result<Option<Record>, StateError> {
        check_name(name)?;
        match Store::read_record(self.record_path(name))? {
            Some(r) => Ok(Some(r)),
            None => Store::read_record(self.data_record_path(name)),
        }
    }

    /// The record of `name`, or [`StateError::NotFound`].
    pub fn get(&self, name: &str) -> Result<Record, StateError> {
        self.load(name)?
            .ok_or_else(|| StateError::NotFound(name.to_string()))
    }

    /// Stores `rec` atomically (temporary file, fsync, rename). Call with the container's
    /// lock held.
    pub fn save(&self, rec: &Record) -> Result<(), StateError> {
        check_name(&rec.name)?;
        let text = serde_json::to_vec_pretty(rec).expect("records serialize");
        let data = self.data_dir(&rec.name);
        fs::create_dir_all(&data).map_err(io_err("creating", &data))?;
        write_atomic(&self.record_path(&rec.name), &text)?;
        write_atomic(&self.data_record_path(&rec.name), &text)
    }

    /// Changes the record of `name` under its lock: `f` gets the current record (an error
    /// when there is none) and its result is stored.
    pub fn update<T>(&self, name: &str, f: impl FnOnce(&mut Record) -> T) -> Result<T, StateError> {
        let _l = self.lock(name)?;
        let mut rec = self.get(name)?;
        let out = f(&mut rec);
        self.save(&rec)?;
        Ok(out)
    }

    /// Claims `name` for the spec `spec_path`: returns the existing record when that spec
    /// already owns it (`None` when the name is free; the caller then saves a new record), or
    /// [`StateError::NameTaken`] when another spec does. Call with [`Store::lock_names`] held.
    pub fn claim(&self, name: &str, spec_path: &Path) -> Result<Option<Record>, StateError> {
        match self.load(name)? {
            None => Ok(None),
            Some(r) if r.spec_path == spec_path => Ok(Some(r)),
            Some(r) => Err(StateError::NameTaken {
                name: name.to_string(),
                owner: r.spec_path,
            }),
        }
    }

    /// Removes the record and lock of `name` (its data directory too when `data` is true).
    /// Call with the container's lock held.
    pub fn remove(&self, name: &str, data: bool) -> Result<(), StateError> {
        check_name(name)?;
        for path in [self.record_path(name), self.data_record_path(name)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path)(e)),
            }
        }
        let _ = fs::remove_file(self.dir.join(format!("{name}.lock")));
        if data {
            let d = self.data_dir(name);
            if d.exists() {
                fs::remove_dir_all(&d).map_err(io_err("removing", &d))?;
            }
        }
        Ok(())
    }

    /// All records, sorted by name, as observed (dead supervisors reported as exited).
    pub fn list(&self) -> Result<Vec<Record>, StateError> {
        let mut names = std::collections::BTreeSet::new();
        for e in fs::read_dir(&self.dir).map_err(io_err("reading", &self.dir))? {
            let e = e.map_err(io_err("reading", &self.dir))?;
            if let Some(n) = e.file_name().to_str().and_then(|f| f.strip_suffix(".json")) {
                names.insert(n.to_string());
            }
        }
        // Containers of an earlier boot: only their persistent copy is left.
        for e in fs::read_dir(&self.data).map_err(io_err("reading", &self.data))? {
            let e = e.map_err(io_err("reading", &self.data))?;
            if e.path().join("record.json").exists() {
                if let Some(n) = e.file_name().to_str() {
                    names.insert(n.to_string());
                }
            }
        }
        let mut out = Vec::new();
        for name in names {
            if check_name(&name).is_err() {
                continue;
            }
            if let Some(r) = self.load(&name)? {
                out.push(r.observed());
            }
        }
        Ok(out)
    }
}

/// Replaces `path` with `text` atomically: a temporary file beside it, synced, renamed over.
fn write_atomic(path: &Path, text: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    tmp.write_all(text)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(io_err("writing", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| io_err("replacing", path)(e.error))?;
    Ok(())
}

/// A stable hash (SHA-256, hex) of any debug-printable settings, to notice a changed spec.
pub fn settings_hash(settings: &impl std::fmt::Debug) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{settings:?}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
