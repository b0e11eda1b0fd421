//! `rcl-fs`: mount program with fuse-overlayfs's command line (see `rcl-fs --help`).
//!
//! By default it forks a server that mounts and serves the union filesystem, and returns 0 only
//! once the mount is live, so podman's `mount_program` and scripts can use it at once. `-f`
//! serves in the foreground. Example podman `storage.conf`:
//!
//! ```toml
//! [storage]
//! driver = "overlay"
//!
//! [storage.options.overlay]
//! mount_program = "/usr/local/bin/rcl-fs"
//! mountopt = "nodev"
//! ```

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fsimpl::options::{parse_args, Action, Restrictions, Settings, HELP};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::ForkResult;

/// Exit status for a failed mount.
const EXIT_MOUNT: u8 = 1;
/// Exit status for a bad command line.
const EXIT_USAGE: u8 = 2;
/// Byte the server sends its parent once the mount is live.
const MOUNTED: &[u8] = b"\x06";

fn main() -> ExitCode {
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rcl-fs: cannot read the current directory: {e}");
            return ExitCode::from(EXIT_MOUNT);
        }
    };
    let settings = match parse_args(std::env::args_os().skip(1), &cwd) {
        Ok(Action::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("rcl-fs {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Action::Mount(s)) => s,
        Err(e) => {
            eprintln!("rcl-fs: {e}\nTry 'rcl-fs --help' for more information.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for w in &settings.warnings {
        eprintln!("rcl-fs: warning: {w}");
    }
    init_logger(settings.debug);
    // Blocked from the start (and inherited by the server and all its threads), so a signal
    // that arrives while mounting stays pending for the waiter thread started in serve()
    // instead of killing the process with the mount half set up.
    if let Err(e) = stop_signals().thread_block() {
        eprintln!("rcl-fs: blocking signals: {e}");
        return ExitCode::from(EXIT_MOUNT);
    }
    if let Err(msg) = check_mountpoint(&settings.mountpoint) {
        eprintln!("rcl-fs: {msg}");
        return ExitCode::from(EXIT_MOUNT);
    }
    if settings.foreground {
        match setup(&settings) {
            Ok(session) => serve(session, &settings.mountpoint),
            Err(msg) => {
                eprintln!("rcl-fs: {msg}");
                ExitCode::from(EXIT_MOUNT)
            }
        }
    } else {
        daemonize(&settings)
    }
}

/// The mountpoint must be an existing directory.
fn check_mountpoint(mp: &Path) -> Result<(), String> {
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("mountpoint {}: not a directory", mp.display())),
        Err(e) => Err(format!("mountpoint {}: {e}", mp.display())),
    }
}

/// Opens the layers and mounts: when this returns `Ok`, the mount is live (with the asked-for
/// restrictions already in force).
fn setup(s: &Settings) -> Result<fsimpl::Session, String> {
    let fs = fsimpl::UnionFs::new(s.config.clone()).map_err(|e| e.to_string())?;
    let session = fsimpl::mount(fs, &s.mountpoint)
        .map_err(|e| format!("mount on {}: {e}", s.mountpoint.display()))?;
    if let Err(e) = restrict(&s.mountpoint, s.restrict) {
        // Dropping the session unmounts.
        drop(session);
        return Err(format!(
            "applying ro/nodev/nosuid/noexec/noatime to {}: {e}",
            s.mountpoint.display()
        ));
    }
    Ok(session)
}

/// Adds per-mount flags to the live mount with a bind remount. The current flags come from
/// /proc/self/mountinfo: nothing here touches the mount's files (it is not served yet).
fn restrict(mp: &Path, r: Restrictions) -> nix::Result<()> {
    use nix::mount::MsFlags;
    if r.is_empty() {
        return Ok(());
    }
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mp.to_string_lossy();
    // The last line for the mountpoint is the mount on top: ours.
    if let Some(opts) = info
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| unescape_mountinfo(m) == want)
        })
        .filter_map(|l| l.split(' ').nth(5))
        .next_back()
    {
        for o in opts.split(',') {
            flags |= match o {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            };
        }
    }
    if r.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if r.nodev {
        flags |= MsFlags::MS_NODEV;
    }
    if r.nosuid {
        flags |= MsFlags::MS_NOSUID;
    }
    if r.noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    if r.noatime {
        flags.remove(MsFlags::MS_RELATIME);
        flags |= MsFlags::MS_NOATIME;
    }
    nix::mount::mount(None::<&str>, mp, None::<&str>, flags, None::<&str>)
}

/// Decodes mountinfo's octal escapes (`\040` for a space...).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Forks the server; the parent waits for its word that the mount is live.
fn daemonize(s: &Settings) -> ExitCode {
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rcl-fs: pipe: {e}");
            return ExitCode::from(EXIT_MOUNT);
        }
    };
    // SAFETY: no thread has been started yet (the session starts its threads in run()), so the
    // child may do anything a single-threaded process can.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("rcl-fs: fork: {e}");
            ExitCode::from(EXIT_MOUNT)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            // The waiting parent may be interrupted as usual.
            let _ = stop_signals().thread_unblock();
            let mut msg = Vec::new();
            let _ = std::fs::File::from(rd).read_to_end(&mut msg);
            if msg == MOUNTED {
                return ExitCode::SUCCESS;
            }
            let status = nix::sys::wait::waitpid(child, None);
            if msg.is_empty() {
                eprintln!("rcl-fs: the server exited before the mount was live ({status:?})");
            } else {
                eprintln!("rcl-fs: {}", String::from_utf8_lossy(&msg));
            }
            ExitCode::from(EXIT_MOUNT)
        }
        Ok(ForkResult::Child) => {
            drop(rd);
            let mut report = std::fs::File::from(wr);
            match setup(s) {
                Err(msg) => {
                    let _ = report.write_all(msg.as_bytes());
                    ExitCode::from(EXIT_MOUNT)
                }
                Ok(session) => {
                    if let Err(e) = detach() {
                        let _ = report.write_all(format!("detaching the server: {e}").as_bytes());
                        return ExitCode::from(EXIT_MOUNT);
                    }
                    let _ = report.write_all(MOUNTED);
                    drop(report);
                    serve(session, &s.mountpoint)
                }
            }
        }
    }
}

/// New session, `/` as working directory, stdio on /dev/null (so callers reading our output see
/// it end when the parent exits).
fn detach() -> std::io::Result<()> {
    nix::unistd::setsid()?;
    std::env::set_current_dir("/")?;
    let null: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into();
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns; `null` stays
        // valid for the call.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Serves until unmounted. SIGTERM, SIGINT and SIGHUP unmount lazily and end the process.
fn serve(session: fsimpl::Session, mountpoint: &Path) -> ExitCode {
    // Blocked in main() before any thread exists: every serving thread inherits the mask, and
    // only the waiter below receives these signals.
    let set = stop_signals();
    let mp: PathBuf = mountpoint.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("rcl-fs-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                log::info!("{sig}: unmounting {}", mp.display());
                if let Err(e) = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH) {
                    log::warn!("unmount {}: {e}", mp.display());
                }
                // The serving loop normally ends at once; do not wait on busy users forever.
                std::thread::sleep(Duration::from_secs(2));
                std::process::exit(0);
            }
        });
    if let Err(e) = spawned {
        eprintln!("rcl-fs: starting the signal thread: {e}");
        return ExitCode::from(EXIT_MOUNT);
    }
    match session.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcl-fs: serving {}: {e}", mountpoint.display());
            ExitCode::from(EXIT_MOUNT)
        }
    }
}

/// The signals that unmount and stop the server.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Logs on stderr: warnings and errors, everything with `-d`.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("rcl-fs: {} {}: {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

fn init_logger(debug: bool) {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        });
    }
}
