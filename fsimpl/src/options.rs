//! The `rcl-fs` command line: fuse-overlayfs's syntax, turned into an [`OverlayConfig`] plus the
//! program's own settings.
//!
//! ```text
//! rcl-fs [SOURCE] MOUNTPOINT -o lowerdir=A:B[:C...][,upperdir=U,workdir=W][,OPTIONS] [-f] [-d]
//! ```
//!
//! Several `-o` are allowed and concatenated. Option values are split on `,` and `lowerdir` on
//! `:`; a backslash escapes either (`\,`, `\:`, `\\`). The optional SOURCE is what
//! `mount -t fuse.rcl-fs SOURCE MOUNTPOINT` (through `mount.fuse3`) passes; it is ignored.
//! Parsing is pure: it touches no file (paths are made absolute against the given directory).

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::config::{
    IdMapping, IdRange, OverlayConfig, Passthrough, WhiteoutFormat, XattrNamespace,
};

/// Largest `threads=` accepted.
pub const MAX_THREADS: usize = 256;

/// The `--help` text: every option, and how to use rcl-fs as podman's mount program.
pub const HELP: &str = "\
rcl-fs: a userspace union (overlay) filesystem over FUSE, with fuse-overlayfs's command line.

USAGE:
    rcl-fs [SOURCE] MOUNTPOINT -o lowerdir=A:B[:C...][,upperdir=U,workdir=W][,OPTION...] [-f] [-d]
    mount -t fuse.rcl-fs rcl-fs MOUNTPOINT -o lowerdir=...    (through mount.fuse3)

By default rcl-fs returns once the mount is live (exit 0) and keeps serving it in the
background; `umount MOUNTPOINT` or `fusermount3 -u MOUNTPOINT` ends it. SIGTERM or SIGINT to the
server unmounts (lazily) and exits. Runs as root, or rootless inside a user namespace that owns
a mount namespace (e.g. `unshare -Urm rcl-fs ...`).

FLAGS:
    -f               stay in the foreground (do not detach)
    -d, -o debug     log every request on stderr (implies -f)
    -o OPTIONS       comma-separated options (below); may be repeated
    -h, --help       print this help
    -V, --version    print the version

LAYERS:
    lowerdir=A:B:C   read-only layers, the first is the top one (required). `\\:` escapes ':'.
    upperdir=U       writable layer; without it the mount is read-only
    workdir=W        scratch directory on U's filesystem (required with upperdir)
    ro               read-only mount even with an upper (the upper is read as written, never
                     written to: the mount itself is read-only)

FUSE-OVERLAYFS OPTIONS:
    uidmapping=C:H:N[:C:H:N...]   show on-disk uid H..H+N-1 as C..C+N-1 (unmapped: 65534)
    gidmapping=C:H:N[:C:H:N...]   the same for gids
    squash_to_root                show every file as owned by 0:0
    squash_to_uid=N               show every file as owned by uid N
    squash_to_gid=N               show every file as owned by gid N
    static_nlink                  report nlink 1 for directories
    noacl                         do not expose POSIX ACL xattrs
    fsync=0|1                     0: skip fsync of copied-up files and fsync requests (default 1)
    xattr_permissions=N           accepted and ignored (warning)
    plugins=..., redirect_dir=... accepted and ignored (warning)
    rw, dev, suid, exec, relatime accepted (what rcl-fs does anyway; mount.fuse3 passes them)
    nodev, nosuid, noexec, noatime applied to the mount once it is live
    context=..., anything else    accepted and ignored, with a warning

RCL-FS OPTIONS:
    threads=N                     request-serving threads (1..256; default 2 x CPUs, 2..16)
    passthrough=auto|on|off       FUSE passthrough for file data (default auto)
    whiteout=chardev|wh           record deletions as 0/0 char devices (kernel overlayfs format,
                                  default) or as .wh.NAME files (OCI layer format)
    xattr=auto|trusted|user       namespace of the overlay.* markers written to the upper
    metacopy=on|off               chmod/chown of a lower file copies metadata only (default on)
    allow_other                   let other users use the mount
    fsname=NAME                   source name shown in /proc/self/mountinfo (default rcl-fs)

EXIT STATUS:
    0 mounted (or served and unmounted cleanly in the foreground), 1 mount failed (the path at
    fault is named), 2 bad command line.

PODMAN:
    In /etc/containers/storage.conf (or ~/.config/containers/storage.conf):

        [storage]
        driver = \"overlay\"

        [storage.options.overlay]
        mount_program = \"/usr/local/bin/rcl-fs\"
        mountopt = \"nodev\"
";

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Action {
    /// Mount with these settings.
    Mount(Box<Settings>),
    /// Print [`HELP`] and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
}

/// A parsed mount request: the filesystem's configuration plus the program's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The union mount to build.
    pub config: OverlayConfig,
    /// Where to mount (absolute).
    pub mountpoint: PathBuf,
    /// The SOURCE argument, if one was given (ignored; shown by mount.fuse3 callers).
    pub source: Option<String>,
    /// Do not detach (`-f`, implied by `-d`).
    pub foreground: bool,
    /// Log requests on stderr (`-d`, `-o debug`).
    pub debug: bool,
    /// One line per option that was accepted but ignored, for the caller to print on stderr.
    pub warnings: Vec<String>,
    /// Per-mount restrictions to apply once mounted (`nodev`, `nosuid`, `noexec`, `noatime`,
    /// `ro`).
    pub restrict: Restrictions,
}

/// Generic VFS per-mount flags asked for with `-o` (podman's `mountopt = "nodev"`, `ro`),
/// applied by remounting the live mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// `nodev`: device nodes cannot be opened.
    pub nodev: bool,
    /// `nosuid`: set-user/group-id bits and file capabilities are ignored on exec.
    pub nosuid: bool,
    /// `noexec`: nothing can be executed.
    pub noexec: bool,
    /// `noatime`: access times are never updated.
    pub noatime: bool,
    /// `ro`: no writes at all, even with an upper layer.
    pub readonly: bool,
}

impl Restrictions {
    /// True when no flag is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Restrictions::default()
    }
}

/// A command line that cannot be used, with the argument or option at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// Wrong arguments (unknown flag, missing or extra operand).
    #[error("{0}")]
    Usage(String),
    /// An option's value is not valid.
    #[error("option {option}: invalid value '{value}': {reason}")]
    BadValue {
        /// The option's name.
        option: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required option is missing, or two options contradict each other.
    #[error("{0}")]
    Missing(String),
}

fn bad(option: &str, value: &str, reason: impl Into<String>) -> OptionsError {
    OptionsError::BadValue {
        option: option.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses the arguments after the program name. Relative paths are resolved against `cwd`.
pub fn parse_args<I, S>(args: I, cwd: &Path) -> Result<Action, OptionsError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut positional: Vec<String> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut foreground = false;
    let mut debug = false;
    let mut only_operands = false;
    let mut it = args.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| OptionsError::Usage(format!("argument {a:?} is not valid UTF-8")))?;
        if only_operands || !arg.starts_with('-') || arg == "-" {
            positional.push(arg);
            continue;
        }
        match arg.as_str() {
            "--" => only_operands = true,
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "-f" => foreground = true,
            "-d" | "--debug" => debug = true,
            "-o" => {
                let v = it
                    .next()
                    .ok_or_else(|| OptionsError::Usage("-o needs an argument".into()))?;
                let v = v.into_string().map_err(|a| {
                    OptionsError::Usage(format!("-o argument {a:?} is not valid UTF-8"))
                })?;
                opts.push(v);
            }
            s if s.starts_with("-o") => opts.push(s[2..].to_string()),
            s => return Err(OptionsError::Usage(format!("unknown argument '{s}'"))),
        }
    }
    let (source, mountpoint) = match positional.len() {
        0 => return Err(OptionsError::Usage("missing MOUNTPOINT".into())),
        1 => (None, positional.pop().unwrap_or_default()),
        2 => {
            let mp = positional.pop().unwrap_or_default();
            (positional.pop(), mp)
        }
        _ => {
            return Err(OptionsError::Usage(format!(
                "too many operands: {} (expected [SOURCE] MOUNTPOINT)",
                positional.join(" ")
            )))
        }
    };
    if mountpoint.is_empty() {
        return Err(OptionsError::Usage("empty MOUNTPOINT".into()));
    }
    let mut settings = parse_mount_options(&opts, cwd)?;
    settings.mountpoint = absolute(Path::new(&mountpoint), cwd);
    settings.source = source;
    settings.debug |= debug;
    settings.foreground |= foreground || settings.debug;
    Ok(Action::Mount(Box::new(settings)))
}

/// Parses the `-o` option strings (each comma-separated) into settings; `mountpoint` is left
/// empty for the caller to fill.
pub fn parse_mount_options(opts: &[String], cwd: &Path) -> Result<Settings, OptionsError> {
    let mut lowers: Option<Vec<PathBuf>> = None;
    let mut upper: Option<PathBuf> = None;
    let mut work: Option<PathBuf> = None;
    let mut readonly = false;
    let mut debug = false;
    let mut warnings = Vec::new();
    let mut restrict = Restrictions::default();
    let mut cfg = OverlayConfig::new(Vec::new());

    for opt in opts.iter().flat_map(|o| split_escaped(o, ',')) {
        if opt.is_empty() {
            continue;
        }
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let need = |v: Option<&str>| -> Result<String, OptionsError> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(OptionsError::Missing(format!(
                    "option {key} needs a value ({key}=...)"
                ))),
            }
        };
        let flag = |v: Option<&str>| -> Result<(), OptionsError> {
            match v {
                None => Ok(()),
                Some(v) => Err(bad(key, v, "this option takes no value")),
            }
        };
        match key {
            "lowerdir" => {
                let v = need(value)?;
                let mut dirs = Vec::new();
                for part in split_escaped(&v, ':') {
                    if part.is_empty() {
                        return Err(bad(key, &v, "empty layer in the list"));
                    }
                    dirs.push(absolute(Path::new(&unescape(&part)), cwd));
                }
                lowers = Some(dirs);
            }
            "upperdir" => upper = Some(absolute(Path::new(&unescape(&need(value)?)), cwd)),
            "workdir" => work = Some(absolute(Path::new(&unescape(&need(value)?)), cwd)),
            "uidmapping" => cfg.uid_mapping = parse_mapping(key, &need(value)?)?,
            "gidmapping" => cfg.gid_mapping = parse_mapping(key, &need(value)?)?,
            "squash_to_root" => {
                flag(value)?;
                cfg.squash_uid = Some(0);
                cfg.squash_gid = Some(0);
            }
            "squash_to_uid" => cfg.squash_uid = Some(parse_id(key, &need(value)?)?),
            "squash_to_gid" => cfg.squash_gid = Some(parse_id(key, &need(value)?)?),
            "static_nlink" => {
                flag(value)?;
                cfg.static_nlink = true;
            }
            "noacl" => {
                flag(value)?;
                cfg.noacl = true;
            }
            "fsync" => {
                cfg.fsync = match need(value)?.as_str() {
                    "1" => true,
                    "0" => false,
                    v => return Err(bad(key, v, "expected 0 or 1")),
                }
            }
            // What mount.fuse3 adds as root, and what rcl-fs does anyway.
            "rw" | "dev" | "suid" | "exec" | "async" | "atime" | "relatime" | "defaults" => {
                flag(value)?
            }
            "nodev" => {
                flag(value)?;
                restrict.nodev = true;
            }
            "nosuid" => {
                flag(value)?;
                restrict.nosuid = true;
            }
            "noexec" => {
                flag(value)?;
                restrict.noexec = true;
            }
            "noatime" => {
                flag(value)?;
                restrict.noatime = true;
            }
            "ro" => {
                flag(value)?;
                readonly = true;
            }
            "debug" => {
                flag(value)?;
                debug = true;
            }
            "threads" => {
                let v = need(value)?;
                cfg.threads = match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_THREADS).contains(&n) => n,
                    _ => {
                        return Err(bad(
                            key,
                            &v,
                            format!("expected a number from 1 to {MAX_THREADS}"),
                        ))
                    }
                }
            }
            "passthrough" => {
                let v = need(value)?;
                cfg.passthrough = match v.as_str() {
                    "auto" => Passthrough::Auto,
                    "on" => Passthrough::On,
                    "off" => Passthrough::Off,
                    _ => return Err(bad(key, &v, "expected auto, on or off")),
                }
            }
            "whiteout" => {
                let v = need(value)?;
                cfg.whiteout_format = match v.as_str() {
                    "chardev" => WhiteoutFormat::CharDevice,
                    "wh" => WhiteoutFormat::WhFiles,
                    _ => return Err(bad(key, &v, "expected chardev or wh")),
                }
            }
            "xattr" => {
                let v = need(value)?;
                cfg.xattr_namespace = match v.as_str() {
                    "auto" => XattrNamespace::Auto,
                    "trusted" => XattrNamespace::Trusted,
                    "user" => XattrNamespace::User,
                    _ => return Err(bad(key, &v, "expected auto, trusted or user")),
                }
            }
            "metacopy" => {
                let v = need(value)?;
                cfg.metacopy = match v.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad(key, &v, "expected on or off")),
                }
            }
            "allow_other" => {
                flag(value)?;
                cfg.allow_other = true;
            }
            "fsname" => cfg.fsname = need(value)?,
            "xattr_permissions" => {
                let v = need(value)?;
                if v.parse::<u32>().is_err() {
                    return Err(bad(key, &v, "expected a number"));
                }
                warnings.push(format!(
                    "option xattr_permissions={v} is not supported and is ignored"
                ));
            }
            "plugins" | "redirect_dir" => {
                warnings.push(format!("option {opt} is not supported and is ignored"));
            }
            _ => warnings.push(format!("unknown option {opt} ignored")),
        }
    }

    let lowers = match lowers {
        Some(l) => l,
        None => {
            return Err(OptionsError::Missing(
                "missing option lowerdir= (-o lowerdir=DIR[:DIR...])".into(),
            ))
        }
    };
    match (&upper, &work) {
        (Some(_), None) => {
            return Err(OptionsError::Missing(
                "option upperdir needs workdir too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(OptionsError::Missing(
                "option workdir needs upperdir too".into(),
            ))
        }
        _ => {}
    }
    if let (Some(u), Some(w)) = (&upper, &work) {
        if u == w {
            return Err(bad(
                "workdir",
                &w.display().to_string(),
                "must differ from upperdir",
            ));
        }
        // `ro` keeps the upper as the upper (its whiteouts, redirects and metacopy files
        // read as written) and makes the mount itself read-only: the kernel then refuses
        // every write with EROFS before it reaches the filesystem.
        cfg = cfg.with_upper(u.clone(), w.clone());
    }
    restrict.readonly = readonly;
    cfg.lowerdirs = lowers;
    Ok(Settings {
        config: cfg,
        mountpoint: PathBuf::new(),
        source: None,
        foreground: false,
        debug,
        warnings,
        restrict,
    })
}

/// Splits `s` on `sep` where it is not escaped by a backslash nor inside double quotes (podman
/// passes SELinux labels as `context="...:s0:c1,c2"`); escapes and quotes are kept (see
/// [`unescape`]).
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if c == sep && !quoted {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Removes the backslashes of `\,`, `\:` and `\\`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `p` made absolute against `cwd`, with `.` components dropped (symlinks are not resolved).
fn absolute(p: &Path, cwd: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn parse_id(option: &str, v: &str) -> Result<u32, OptionsError> {
    v.parse::<u32>()
        .map_err(|_| bad(option, v, "expected a numeric id"))
}

/// `C:H:N[:C:H:N...]` into ranges; each count positive, no range overflowing u32.
fn parse_mapping(option: &str, v: &str) -> Result<IdMapping, OptionsError> {
    let fields: Vec<&str> = v.split(':').collect();
    if fields.len() % 3 != 0 {
        return Err(bad(
            option,
            v,
            "expected CONTAINER:HOST:COUNT triples separated by ':'",
        ));
    }
    let mut ranges = Vec::new();
    for t in fields.chunks(3) {
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| bad(option, v, format!("'{s}' is not a number")))
        };
        let (container, host, count) = (num(t[0])?, num(t[1])?, num(t[2])?);
        if count == 0 {
            return Err(bad(option, v, "a range's count must be positive"));
        }
        if container.checked_add(count - 1).is_none() || host.checked_add(count - 1).is_none() {
            return Err(bad(option, v, "a range goes past the largest id"));
        }
        ranges.push(IdRange {
            container,
            host,
            count,
        });
    }
    Ok(IdMapping { ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(args: &[&str]) -> Result<Settings, OptionsError> {
        match parse_args(args.iter().copied(), Path::new("/cwd"))? {
            Action::Mount(s) => Ok(*s),
            a => panic!("expected a mount, got {a:?}"),
        }
    }

    #[test]
    fn basic_fuse_overlayfs_line() {
        let s = mount(&["-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/mnt"]).unwrap();
        assert_eq!(s.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(
            s.config.lowerdirs,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(s.config.upperdir, Some(PathBuf::from("/u")));
        assert_eq!(s.config.workdir, Some(PathBuf::from("/w")));
        assert!(!s.foreground && !s.debug && s.source.is_none());
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn mount_fuse3_style_with_source_and_rw() {
        let s = mount(&["rcl-fs", "/mnt", "-o", "rw,lowerdir=/a,dev,suid"]).unwrap();
        assert_eq!(s.source.as_deref(), Some("rcl-fs"));
        assert_eq!(s.mountpoint, PathBuf::from("/mnt"));
        assert!(s.config.is_readonly());
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = mount(&["-o", "lowerdir=/a,nodev,noexec,nosuid,noatime", "/mnt"]).unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            s.restrict,
            Restrictions {
                nodev: true,
                nosuid: true,
                noexec: true,
                noatime: true,
                readonly: false,
            }
        );
        assert!(mount(&["-o", "lowerdir=/a", "/m"])
            .unwrap()
            .restrict
            .is_empty());
        assert!(mount(&["-o", "lowerdir=/a,nodev=1", "/m"]).is_err());
    }

    #[test]
    fn repeated_o_and_attached_form_concatenate() {
        let s = mount(&[
            "/mnt",
            "-olowerdir=/a",
            "-o",
            "upperdir=u",
            "-o",
            "workdir=./w,threads=3",
        ])
        .unwrap();
        assert_eq!(s.config.upperdir, Some(PathBuf::from("/cwd/u")));
        assert_eq!(s.config.workdir, Some(PathBuf::from("/cwd/w")));
        assert_eq!(s.config.threads, 3);
    }

    #[test]
    fn relative_paths_resolved() {
        let s = mount(&["-o", "lowerdir=l1:./l2", "m"]).unwrap();
        assert_eq!(
            s.config.lowerdirs,
            vec![PathBuf::from("/cwd/l1"), PathBuf::from("/cwd/l2")]
        );
        assert_eq!(s.mountpoint, PathBuf::from("/cwd/m"));
    }

    #[test]
    fn escapes() {
        let s = mount(&["-o", r"lowerdir=/a\:b:/c\,d:/e\\f", "/m"]).unwrap();
        assert_eq!(
            s.config.lowerdirs,
            vec![
                PathBuf::from("/a:b"),
                PathBuf::from("/c,d"),
                PathBuf::from(r"/e\f")
            ]
        );
    }

    #[test]
    fn upper_needs_work_and_reverse() {
        let e = mount(&["-o", "lowerdir=/a,upperdir=/u", "/m"]).unwrap_err();
        assert!(e.to_string().contains("workdir"), "{e}");
        let e = mount(&["-o", "lowerdir=/a,workdir=/w", "/m"]).unwrap_err();
        assert!(e.to_string().contains("upperdir"), "{e}");
        let e = mount(&["-o", "lowerdir=/a,workdir=/w,upperdir=/w", "/m"]).unwrap_err();
        assert!(e.to_string().contains("workdir"), "{e}");
    }

    #[test]
    fn lowerdir_required_and_nonempty() {
        assert!(mount(&["/m"]).unwrap_err().to_string().contains("lowerdir"));
        assert!(mount(&["-o", "lowerdir=", "/m"])
            .unwrap_err()
            .to_string()
            .contains("lowerdir"));
        assert!(mount(&["-o", "lowerdir=/a::/b", "/m"])
            .unwrap_err()
            .to_string()
            .contains("lowerdir"));
    }

    #[test]
    fn operands() {
        assert!(matches!(
            parse_args(["-o", "lowerdir=/a"], Path::new("/")),
            Err(OptionsError::Usage(_))
        ));
        assert!(matches!(
            parse_args(["a", "b", "c", "-o", "lowerdir=/a"], Path::new("/")),
            Err(OptionsError::Usage(_))
        ));
        assert!(matches!(
            parse_args(["-x", "/m"], Path::new("/")),
            Err(OptionsError::Usage(_))
        ));
        assert!(matches!(
            parse_args(["-h"], Path::new("/")),
            Ok(Action::Help)
        ));
        assert!(matches!(
            parse_args(["--version"], Path::new("/")),
            Ok(Action::Version)
        ));
    }

    #[test]
    fn mappings() {
        let s = mount(&[
            "-o",
            "lowerdir=/a,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:10:5",
            "/m",
        ])
        .unwrap();
        assert_eq!(
            s.config.uid_mapping.ranges,
            vec![
                IdRange {
                    container: 0,
                    host: 1000,
                    count: 1
                },
                IdRange {
                    container: 1,
                    host: 100000,
                    count: 65536
                }
            ]
        );
        assert_eq!(
            s.config.gid_mapping.ranges,
            vec![IdRange {
                container: 0,
                host: 10,
                count: 5
            }]
        );
        for bad in ["0:1000", "0:x:1", "0:0:0", "4294967295:0:2", "-1:0:1"] {
            let e = mount(&["-o", &format!("lowerdir=/a,uidmapping={bad}"), "/m"]).unwrap_err();
            assert!(e.to_string().contains("uidmapping"), "{bad}: {e}");
        }
    }

    #[test]
    fn squash_and_flags() {
        let s = mount(&[
            "-o",
            "lowerdir=/a,squash_to_root,static_nlink,noacl,fsync=0,allow_other",
            "/m",
        ])
        .unwrap();
        assert_eq!(
            (s.config.squash_uid, s.config.squash_gid),
            (Some(0), Some(0))
        );
        assert!(s.config.static_nlink && s.config.noacl && !s.config.fsync && s.config.allow_other);
        let s = mount(&["-o", "lowerdir=/a,squash_to_uid=5,squash_to_gid=6", "/m"]).unwrap();
        assert_eq!(
            (s.config.squash_uid, s.config.squash_gid),
            (Some(5), Some(6))
        );
        assert!(mount(&["-o", "lowerdir=/a,squash_to_uid=x", "/m"]).is_err());
        assert!(mount(&["-o", "lowerdir=/a,static_nlink=1", "/m"]).is_err());
    }

    #[test]
    fn enumerated_values() {
        let s = mount(&[
            "-o",
            "lowerdir=/a,passthrough=off,whiteout=wh,xattr=user,metacopy=off,fsname=foo",
            "/m",
        ])
        .unwrap();
        assert_eq!(s.config.passthrough, Passthrough::Off);
        assert_eq!(s.config.whiteout_format, WhiteoutFormat::WhFiles);
        assert_eq!(s.config.xattr_namespace, XattrNamespace::User);
        assert!(!s.config.metacopy);
        assert_eq!(s.config.fsname, "foo");
        for (o, v) in [
            ("passthrough", "maybe"),
            ("whiteout", "x"),
            ("xattr", "security"),
            ("metacopy", "1"),
            ("fsync", "2"),
            ("threads", "0"),
            ("threads", "1000"),
            ("threads", "many"),
            ("xattr_permissions", "x"),
        ] {
            let e = mount(&["-o", &format!("lowerdir=/a,{o}={v}"), "/m"]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(o) && msg.contains(v), "{o}={v}: {msg}");
        }
    }

    #[test]
    fn ignored_options_warn() {
        let s = mount(&[
            "-o",
            "lowerdir=/a,context=\"system_u:object_r:container_file_t:s0\",xattr_permissions=2,plugins=x,redirect_dir=on,frob",
            "/m",
        ])
        .unwrap();
        assert_eq!(s.warnings.len(), 5, "{:?}", s.warnings);
        assert!(s.warnings.iter().any(|w| w.contains("frob")));
        // A quoted label with a comma is one option.
        let s = mount(&[
            "-o",
            "lowerdir=/a,context=\"system_u:object_r:container_file_t:s0:c1,c2\",upperdir=/u,workdir=/w",
            "/m",
        ])
        .unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert_eq!(s.config.upperdir, Some(PathBuf::from("/u")));
    }

    #[test]
    fn ro_keeps_the_upper_and_makes_the_mount_read_only() {
        let s = mount(&["-o", "lowerdir=/a,upperdir=/u,workdir=/w,ro", "/m"]).unwrap();
        assert_eq!(s.config.upperdir, Some(PathBuf::from("/u")));
        assert_eq!(s.config.lowerdirs, vec![PathBuf::from("/a")]);
        assert!(s.restrict.readonly);
        let s = mount(&["-o", "lowerdir=/a,ro", "/m"]).unwrap();
        assert!(s.config.is_readonly() && s.restrict.readonly);
        assert!(
            !mount(&["-o", "lowerdir=/a", "/m"])
                .unwrap()
                .restrict
                .readonly
        );
    }

    #[test]
    fn debug_implies_foreground() {
        let s = mount(&["-d", "-o", "lowerdir=/a", "/m"]).unwrap();
        assert!(s.debug && s.foreground);
        let s = mount(&["-o", "lowerdir=/a,debug", "/m"]).unwrap();
        assert!(s.debug && s.foreground);
        let s = mount(&["-f", "-o", "lowerdir=/a", "/m"]).unwrap();
        assert!(!s.debug && s.foreground);
    }
}
