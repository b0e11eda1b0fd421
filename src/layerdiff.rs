//! What a container changed in its root filesystem (`rcl diff`) and how to keep it as a new
//! layer (`rcl commit`).
//!
//! An upper layer may be in kernel overlayfs format (whiteouts are character devices 0/0, opaque
//! directories carry `trusted.overlay.opaque` or `user.overlay.opaque` = `y`) or in OCI format
//! (`.wh.NAME` files, `.wh..wh..opq` markers); both are read, mixed freely.
//!
//! [`commit_dir`] writes a layer directory in kernel format (char 0/0 whiteouts; opaque
//! directories marked with `trusted.overlay.opaque` as root, `user.overlay.opaque` otherwise),
//! which both kernel overlayfs (as a lowerdir) and rcl-fs read, so a spec's `layers` entry can
//! name it. [`commit_tar`] writes an OCI-style tarball (`.wh.` whiteouts). Neither leaks the
//! union filesystem's private xattrs (`*.overlay.*`, `*.rclfs.*`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of OCI whiteout names.
const WH_PREFIX: &str = ".wh.";
/// OCI opaque directory marker.
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Errors of [`diff`] and the commit functions, naming the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An I/O operation on `path` failed.
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
    /// The output already exists.
    #[error("{}: already exists (refusing to overwrite)", .0.display())]
    Exists(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LayerError + 'a {
    move |source| LayerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ChangeKind {
    /// New path (not in any lower layer).
    Added,
    /// Path present in a lower layer, replaced or modified in the upper layer.
    Changed,
    /// Path present in a lower layer, deleted.
    Deleted,
}

impl ChangeKind {
    /// One-letter tag as `docker diff` prints it (A, C, D).
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path, relative to the root (`/etc/hosts` is `etc/hosts`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Path relative to the container's root.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// True for xattrs private to a union filesystem, never copied into a committed layer.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    [
        &b"trusted.overlay."[..],
        b"user.overlay.",
        b"trusted.rclfs.",
        b"user.rclfs.",
    ]
    .iter()
    .any(|p| b.starts_with(p))
}

fn is_whiteout_meta(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn xattr_is_y(path: &Path, name: &str) -> bool {
    matches!(xattr::get(path, name), Ok(Some(v)) if v == b"y")
}

/// True when the directory `dir` is opaque in any format.
fn is_opaque(dir: &Path) -> bool {
    xattr_is_y(dir, "trusted.overlay.opaque")
        || xattr_is_y(dir, "user.overlay.opaque")
        || dir.join(WH_OPAQUE).symlink_metadata().is_ok()
}

/// The value of the overlay xattr `what` in either namespace (`trusted.` or `user.`).
fn ovl_xattr(path: &Path, what: &str) -> Option<Vec<u8>> {
    ["trusted", "user"].iter().find_map(|ns| {
        xattr::get(path, format!("{ns}.overlay.{what}"))
            .ok()
            .flatten()
    })
}

/// A lower path as written in a redirect xattr: absolute from the layer root, or relative to
/// the parent of `rel`.
fn lower_rel(value: &[u8], rel: &Path) -> PathBuf {
    let v = Path::new(OsStr::from_bytes(value));
    match v.strip_prefix("/") {
        Ok(abs) => abs.to_path_buf(),
        Err(_) => rel.parent().unwrap_or(Path::new("")).join(v),
    }
}

/// Where a directory's lower content comes from when it was renamed (`overlay.redirect`).
fn redirect_of(dir: &Path, rel: &Path) -> Option<PathBuf> {
    ovl_xattr(dir, "redirect").map(|v| lower_rel(&v, rel))
}

/// For a metacopy upper file (metadata copied up, data still in a lower), the lower file
/// holding its data.
fn metacopy_data(file: &Path, rel: &Path, lowers: &Lowers) -> Option<PathBuf> {
    ovl_xattr(file, "metacopy")?;
    let from = ["trusted", "user"]
        .iter()
        .find_map(|ns| xattr::get(file, format!("{ns}.rclfs.lower")).ok().flatten())
        .or_else(|| ovl_xattr(file, "redirect"))
        .map(|v| lower_rel(&v, rel))
        .unwrap_or_else(|| rel.to_path_buf());
    lowers.lookup(&from).map(|(p, _)| p)
}

/// Sorted entries of a directory.
fn read_sorted(dir: &Path) -> Result<Vec<(OsString, fs::Metadata)>, LayerError> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("reading directory", dir))? {
        let e = e.map_err(io_err("reading directory", dir))?;
        let p = e.path();
        let m = p.symlink_metadata().map_err(io_err("stat", &p))?;
        v.push((e.file_name(), m));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// One entry of an upper layer, classified.
enum Entry {
    /// A whiteout for `name` (either format).
    Whiteout(OsString),
    /// The OCI opaque marker (handled with its directory).
    OpaqueMarker,
    /// A real entry.
    Real(OsString, fs::Metadata),
}

fn classify(name: OsString, meta: fs::Metadata) -> Entry {
    if name == WH_OPAQUE {
        return Entry::OpaqueMarker;
    }
    if let Some(rest) = name.as_bytes().strip_prefix(WH_PREFIX.as_bytes()) {
        return Entry::Whiteout(OsStr::from_bytes(rest).to_os_string());
    }
    if is_whiteout_meta(&meta) {
        return Entry::Whiteout(name);
    }
    Entry::Real(name, meta)
}

/// A read-only view of the lower layers (first = top), answering "what is at this path".
struct Lowers<'a> {
    layers: &'a [PathBuf],
    /// Mountpoints the runtime made in the upper (relative paths): left out of a commit.
    stubs: &'a [PathBuf],
}

impl Lowers<'_> {
    /// True for a mountpoint stub: new in the upper and either an empty file listed in `stubs`
    /// or a directory at or above a listed path that holds nothing but stubs.
    fn is_stub(&self, rel: &Path, src: &Path, meta: &fs::Metadata) -> bool {
        if self.stubs.is_empty() || self.lookup(rel).is_some() {
            return false;
        }
        if meta.is_dir() {
            self.stubs.iter().any(|s| s.starts_with(rel))
                && fs::read_dir(src).is_ok_and(|d| {
                    d.into_iter().all(|e| {
                        e.ok()
                            .and_then(|e| Some((e.file_name(), e.metadata().ok()?)))
                            .is_some_and(|(n, m)| self.is_stub(&rel.join(&n), &src.join(&n), &m))
                    })
                })
        } else {
            meta.is_file() && meta.len() == 0 && self.stubs.iter().any(|s| s == rel)
        }
    }
    /// Where the merged lower view has `rel` (the topmost layer's entry) and its metadata, or
    /// `None` when absent (whiteouts and opaque directories of the lowers honoured).
    fn lookup(&self, rel: &Path) -> Option<(PathBuf, fs::Metadata)> {
        'layers: for layer in self.layers {
            // Walk down the components: a whiteout hides the rest; an opaque ancestor stops the
            // search at this layer.
            let mut cur = layer.clone();
            let comps: Vec<_> = rel.components().collect();
            let mut stop_here = false;
            for (i, c) in comps.iter().enumerate() {
                let name = c.as_os_str();
                if cur.join(wh_name(name)).symlink_metadata().is_ok() {
                    return None;
                }
                cur.push(name);
                match cur.symlink_metadata() {
                    Ok(m) if is_whiteout_meta(&m) => return None,
                    Ok(m) => {
                        if i + 1 == comps.len() {
                            return Some((cur, m));
                        }
                        if !m.is_dir() {
                            return None;
                        }
                        if is_opaque(&cur) {
                            stop_here = true;
                        }
                    }
                    Err(_) => {
                        if stop_here {
                            return None;
                        }
                        continue 'layers;
                    }
                }
            }
            if stop_here {
                return None;
            }
        }
        None
    }

    /// Names visible in the merged lower directory `rel`.
    fn list(&self, rel: &Path) -> Vec<OsString> {
        let mut seen: Vec<OsString> = Vec::new();
        let mut hidden: Vec<OsString> = Vec::new();
        for layer in self.layers {
            let dir = layer.join(rel);
            let Ok(m) = dir.symlink_metadata() else {
                continue;
            };
            if !m.is_dir() {
                break;
            }
            if let Ok(entries) = read_sorted(&dir) {
                for (name, meta) in entries {
                    match classify(name, meta) {
                        Entry::Whiteout(n) => hidden.push(n),
                        Entry::OpaqueMarker => {}
                        Entry::Real(n, _) => {
                            if !hidden.contains(&n) && !seen.contains(&n) {
                                seen.push(n);
                            }
                        }
                    }
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        seen.sort();
        seen
    }
}

fn wh_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(WH_PREFIX);
    s.push(name);
    s
}

/// Lists what the upper layer `upper` changes relative to `lowers` (first = top), sorted by
/// path. Files present in the upper are `Changed` when the path exists in the lowers, else
/// `Added`; directories are listed only when new; whiteouts (and lower entries hidden by an
/// opaque directory) are `Deleted`.
pub fn diff(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, LayerError> {
    let lowers = Lowers {
        layers: lowers,
        stubs: &[],
    };
    let mut out = Vec::new();
    diff_dir(upper, Path::new(""), None, &lowers, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `changes` without the mountpoint stubs a runtime created: `Added` entries at a path of
/// `stubs` (relative to the root), and `Added` directories left with nothing changed below them
/// that only existed to hold such a stub.
pub fn without_stubs(changes: Vec<Change>, stubs: &[PathBuf]) -> Vec<Change> {
    let is_stub = |c: &Change| c.kind == ChangeKind::Added && stubs.contains(&c.path);
    let holds_stub = |c: &Change| {
        c.kind == ChangeKind::Added && stubs.iter().any(|s| s.starts_with(&c.path) && *s != c.path)
    };
    let below = |c: &Change, all: &[Change]| {
        all.iter()
            .any(|o| o.path != c.path && o.path.starts_with(&c.path))
    };
    let kept: Vec<Change> = changes
        .iter()
        .filter(|c| !is_stub(c) || below(c, &changes))
        .cloned()
        .collect();
    kept.iter()
        .filter(|c| {
            !holds_stub(c)
                || kept
                    .iter()
                    .any(|o| o.path != c.path && o.path.starts_with(&c.path) && !holds_stub(o))
        })
        .cloned()
        .collect()
}

/// Every path of the merged lower tree at `lower` as `Added` under `rel` (a renamed
/// directory's content, new at its new place).
fn diff_added_tree(lower: &Path, rel: &Path, lowers: &Lowers, out: &mut Vec<Change>) {
    for n in lowers.list(lower) {
        let (l, r) = (lower.join(&n), rel.join(&n));
        let is_dir = lowers.lookup(&l).is_some_and(|(_, m)| m.is_dir());
        out.push(Change {
            path: r.clone(),
            kind: ChangeKind::Added,
        });
        if is_dir {
            diff_added_tree(&l, &r, lowers, out);
        }
    }
}

/// `lower_src`: inside a renamed directory, where this directory's lower content comes from.
fn diff_dir(
    upper: &Path,
    rel: &Path,
    lower_src: Option<&Path>,
    lowers: &Lowers,
    out: &mut Vec<Change>,
) -> Result<(), LayerError> {
    let dir = upper.join(rel);
    let entries = read_sorted(&dir)?;
    let mut present: Vec<OsString> = Vec::new();
    for (name, meta) in entries {
        match classify(name, meta) {
            Entry::OpaqueMarker => {}
            Entry::Whiteout(n) => {
                let p = rel.join(&n);
                present.push(n);
                if lowers.layers.is_empty() || lowers.lookup(&p).is_some() {
                    out.push(Change {
                        path: p,
                        kind: ChangeKind::Deleted,
                    });
                }
            }
            Entry::Real(n, meta) => {
                let p = rel.join(&n);
                present.push(n.clone());
                let lower = lowers.lookup(&p);
                if meta.is_dir() {
                    let src = upper.join(&p);
                    let child_src = if is_opaque(&src) {
                        None
                    } else {
                        redirect_of(&src, &p).or_else(|| lower_src.map(|l| l.join(&n)))
                    };
                    let renamed = child_src.as_ref().is_some_and(|c| c != &p);
                    match lower {
                        Some((_, l)) if l.is_dir() && !renamed => {}
                        Some(_) => out.push(Change {
                            path: p.clone(),
                            kind: ChangeKind::Changed,
                        }),
                        None => out.push(Change {
                            path: p.clone(),
                            kind: ChangeKind::Added,
                        }),
                    }
                    diff_dir(upper, &p, child_src.as_deref(), lowers, out)?;
                } else {
                    out.push(Change {
                        path: p,
                        kind: if lower.is_some() {
                            ChangeKind::Changed
                        } else {
                            ChangeKind::Added
                        },
                    });
                }
            }
        }
    }
    // A renamed directory brings its old content along: new at this path.
    let renamed = lower_src.filter(|l| *l != rel);
    if let Some(src) = renamed {
        for n in lowers.list(src) {
            if !present.contains(&n) {
                let (l, r) = (src.join(&n), rel.join(&n));
                out.push(Change {
                    path: r.clone(),
                    kind: ChangeKind::Added,
                });
                if lowers.lookup(&l).is_some_and(|(_, m)| m.is_dir()) {
                    diff_added_tree(&l, &r, lowers, out);
                }
            }
        }
    }
    // An opaque (or renamed) directory hides everything of the lowers at its own path that it
    // does not itself hold.
    if !rel.as_os_str().is_empty() && (is_opaque(&dir) || renamed.is_some()) {
        if let Some((_, l)) = lowers.lookup(rel) {
            if l.is_dir() {
                for n in lowers.list(rel) {
                    let moved_here = renamed.is_some_and(|src| lowers.list(src).contains(&n));
                    if !present.contains(&n) && !moved_here {
                        out.push(Change {
                            path: rel.join(n),
                            kind: ChangeKind::Deleted,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// What a commit wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Regular files, symlinks, devices and fifos written.
    pub files: usize,
    /// Directories written.
    pub dirs: usize,
    /// Whiteouts written.
    pub whiteouts: usize,
    /// Opaque directories marked.
    pub opaque: usize,
    /// Hard links to files written earlier.
    pub hardlinks: usize,
}

/// One node of an upper layer in a format-neutral form, visited in pre-order.
enum Node<'a> {
    Dir {
        rel: &'a Path,
        src: &'a Path,
        meta: &'a fs::Metadata,
        opaque: bool,
    },
    Whiteout {
        rel: &'a Path,
    },
    Other {
        rel: &'a Path,
        /// Where metadata and xattrs come from.
        src: &'a Path,
        /// Where the data comes from (a lower file for a metacopy upper).
        data: &'a Path,
        meta: &'a fs::Metadata,
    },
    /// End of a directory (post-order, to restore its times).
    DirEnd {
        rel: &'a Path,
        meta: &'a fs::Metadata,
    },
}

/// Visits the upper layer in pre-order. A renamed directory (`overlay.redirect`) cannot stay a
/// redirect in a layer that may sit over other lowers: it is written opaque, with its lower
/// content (`lower_src`) copied in. Metacopy files get their data from the lower.
fn walk(
    upper: &Path,
    rel: &Path,
    lower_src: Option<&Path>,
    lowers: &Lowers,
    f: &mut dyn FnMut(Node) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let dir = upper.join(rel);
    let mut present: Vec<OsString> = Vec::new();
    for (name, meta) in read_sorted(&dir)? {
        match classify(name, meta) {
            Entry::OpaqueMarker => {}
            Entry::Whiteout(n) => {
                f(Node::Whiteout { rel: &rel.join(&n) })?;
                present.push(n);
            }
            Entry::Real(n, meta) => {
                let r = rel.join(&n);
                let src = upper.join(&r);
                if lowers.is_stub(&r, &src, &meta) {
                    present.push(n);
                    continue;
                }
                if meta.is_dir() {
                    let opaque = is_opaque(&src);
                    let redirect = redirect_of(&src, &r);
                    let child_src = if opaque {
                        None
                    } else {
                        redirect.clone().or_else(|| lower_src.map(|l| l.join(&n)))
                    };
                    f(Node::Dir {
                        rel: &r,
                        src: &src,
                        meta: &meta,
                        opaque: opaque || redirect.is_some(),
                    })?;
                    walk(upper, &r, child_src.as_deref(), lowers, f)?;
                    f(Node::DirEnd {
                        rel: &r,
                        meta: &meta,
                    })?;
                } else {
                    let data = metacopy_data(&src, &r, lowers).unwrap_or_else(|| src.clone());
                    f(Node::Other {
                        rel: &r,
                        src: &src,
                        data: &data,
                        meta: &meta,
                    })?;
                }
                present.push(n);
            }
        }
    }
    if let Some(ls) = lower_src {
        for n in lowers.list(ls) {
            if !present.contains(&n) {
                walk_lower(&ls.join(&n), &rel.join(&n), lowers, f)?;
            }
        }
    }
    Ok(())
}

/// Visits the merged lower tree at `lower` as if it were upper content at `rel`.
fn walk_lower(
    lower: &Path,
    rel: &Path,
    lowers: &Lowers,
    f: &mut dyn FnMut(Node) -> Result<(), LayerError>,
) -> Result<(), LayerError> {
    let Some((src, meta)) = lowers.lookup(lower) else {
        return Ok(());
    };
    if meta.is_dir() {
        f(Node::Dir {
            rel,
            src: &src,
            meta: &meta,
            opaque: false,
        })?;
        for n in lowers.list(lower) {
            walk_lower(&lower.join(&n), &rel.join(&n), lowers, f)?;
        }
        f(Node::DirEnd { rel, meta: &meta })
    } else {
        f(Node::Other {
            rel,
            src: &src,
            data: &src,
            meta: &meta,
        })
    }
}

/// Public xattrs of `path` (private union-filesystem ones left out).
fn public_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>, LayerError> {
    let mut v = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(v),
        Err(e) => return Err(io_err("listing xattrs of", path)(e)),
    };
    for name in names {
        if is_private_xattr(&name) {
            continue;
        }
        if let Some(val) = xattr::get(path, &name).map_err(io_err("reading xattr of", path))? {
            v.push((name, val));
        }
    }
    v.sort();
    Ok(v)
}

fn copy_meta(dst: &Path, src: &Path, meta: &fs::Metadata) -> Result<(), LayerError> {
    let is_link = meta.file_type().is_symlink();
    for (name, val) in public_xattrs(src)? {
        // user.* xattrs cannot be set on symlinks and devices; a layer can live without them.
        if let Err(e) = xattr::set(dst, &name, &val) {
            if !(is_link || e.raw_os_error() == Some(libc::EPERM)) {
                return Err(io_err("setting xattr on", dst)(e));
            }
        }
    }
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if !is_link {
        // After chown, which clears suid/sgid.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", dst))?;
    }
    set_times(dst, meta)
}

fn set_times(dst: &Path, meta: &fs::Metadata) -> Result<(), LayerError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let at = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mt = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &at,
        &mt,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err("setting times of", dst)(e.into()))
}

fn temp_sibling(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".rcl-tmp-{}", std::process::id()));
    out.with_file_name(name)
}

/// Writes the upper layer `upper` (over `lowers`, top first) as a new layer directory `out`
/// (which must not exist), in kernel overlayfs format (see the module docs); the result is
/// meant to sit over the same lowers. Metacopy files get their data from the lowers, renamed
/// directories are written whole and opaque. Modes, owners (when permitted), times,
/// public xattrs, symlinks, hard links, devices and fifos are kept. On error nothing is left.
pub fn commit_dir(upper: &Path, lowers: &[PathBuf], out: &Path) -> Result<CommitStats, LayerError> {
    commit_dir_without(upper, lowers, &[], out)
}

/// [`commit_dir`] leaving out `stubs` (paths relative to the root): mountpoints a runtime
/// created in the upper, left out when they are new (not in the lowers) and empty.
pub fn commit_dir_without(
    upper: &Path,
    lowers: &[PathBuf],
    stubs: &[PathBuf],
    out: &Path,
) -> Result<CommitStats, LayerError> {
    if out.symlink_metadata().is_ok() {
        return Err(LayerError::Exists(out.to_path_buf()));
    }
    let tmp = temp_sibling(out);
    let _ = fs::remove_dir_all(&tmp);
    let lowers = Lowers {
        layers: lowers,
        stubs,
    };
    let res = commit_dir_into(upper, &lowers, &tmp).and_then(|s| {
        fs::rename(&tmp, out)
            .map_err(io_err("renaming into", out))
            .map(|_| s)
    });
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res
}

fn commit_dir_into(upper: &Path, lowers: &Lowers, out: &Path) -> Result<CommitStats, LayerError> {
    let root_meta = upper.metadata().map_err(io_err("stat", upper))?;
    fs::create_dir(out).map_err(io_err("creating", out))?;
    let root = nix::unistd::geteuid().is_root();
    let opaque_xattr = if root {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    };
    let mut stats = CommitStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(upper, Path::new(""), None, lowers, &mut |node| {
        match node {
            Node::Dir {
                rel,
                src,
                meta,
                opaque,
            } => {
                let dst = out.join(rel);
                fs::create_dir(&dst).map_err(io_err("creating", &dst))?;
                copy_meta(&dst, src, meta)?;
                if opaque {
                    xattr::set(&dst, opaque_xattr, b"y").map_err(io_err("marking opaque", &dst))?;
                    stats.opaque += 1;
                }
                stats.dirs += 1;
            }
            Node::DirEnd { rel, meta } => set_times(&out.join(rel), meta)?,
            Node::Whiteout { rel } => {
                let dst = out.join(rel);
                nix::sys::stat::mknod(
                    &dst,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| io_err("creating whiteout", &dst)(e.into()))?;
                stats.whiteouts += 1;
            }
            Node::Other {
                rel,
                src,
                data,
                meta,
            } => {
                let dst = out.join(rel);
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                        fs::hard_link(first, &dst).map_err(io_err("linking", &dst))?;
                        stats.hardlinks += 1;
                        return Ok(());
                    }
                    links.insert((meta.dev(), meta.ino()), dst.clone());
                }
                let ft = meta.file_type();
                if ft.is_symlink() {
                    let target = fs::read_link(src).map_err(io_err("reading link", src))?;
                    std::os::unix::fs::symlink(&target, &dst).map_err(io_err("creating", &dst))?;
                } else if ft.is_file() {
                    fs::copy(data, &dst).map_err(io_err("copying to", &dst))?;
                } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                    nix::sys::stat::mknod(
                        &dst,
                        nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT),
                        nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o777),
                        meta.rdev(),
                    )
                    .map_err(|e| io_err("creating", &dst)(e.into()))?;
                } else {
                    // Sockets mean nothing in a layer.
                    return Ok(());
                }
                copy_meta(&dst, src, meta)?;
                stats.files += 1;
            }
        }
        Ok(())
    })?;
    copy_meta(out, upper, &root_meta)?;
    Ok(stats)
}

/// Writes the upper layer `upper` (over `lowers`, as for [`commit_dir`]) as an OCI-style
/// tarball `out` (which must not exist):
/// whiteouts become empty `.wh.NAME` files, opaque directories get a `.wh..wh..opq` entry,
/// public xattrs go into PAX `SCHILY.xattr.` records, hard links become link entries. On error
/// nothing is left.
pub fn commit_tar(upper: &Path, lowers: &[PathBuf], out: &Path) -> Result<CommitStats, LayerError> {
    commit_tar_without(upper, lowers, &[], out)
}

/// [`commit_tar`] leaving out `stubs`, as [`commit_dir_without`] does.
pub fn commit_tar_without(
    upper: &Path,
    lowers: &[PathBuf],
    stubs: &[PathBuf],
    out: &Path,
) -> Result<CommitStats, LayerError> {
    if out.symlink_metadata().is_ok() {
        return Err(LayerError::Exists(out.to_path_buf()));
    }
    let tmp = temp_sibling(out);
    let res = (|| {
        let file = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        let mut b = tar::Builder::new(io::BufWriter::new(file));
        let lowers = Lowers {
            layers: lowers,
            stubs,
        };
        let stats = commit_tar_into(upper, &lowers, &mut b)?;
        let w = b.into_inner().map_err(io_err("writing", &tmp))?;
        let f = w
            .into_inner()
            .map_err(|e| io_err("writing", &tmp)(e.into_error()))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, out).map_err(io_err("renaming into", out))?;
        Ok(stats)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn tar_header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn commit_tar_into<W: io::Write>(
    upper: &Path,
    lowers: &Lowers,
    b: &mut tar::Builder<W>,
) -> Result<CommitStats, LayerError> {
    let mut stats = CommitStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let pax = |b: &mut tar::Builder<W>, src: &Path, rel: &Path| -> Result<(), LayerError> {
        let xs = public_xattrs(src)?;
        if xs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, Vec<u8>)> = xs
            .into_iter()
            .map(|(n, v)| (format!("SCHILY.xattr.{}", n.to_string_lossy()), v))
            .collect();
        b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(io_err("writing tar entry for", rel))
    };
    walk(upper, Path::new(""), None, lowers, &mut |node| {
        match node {
            Node::Dir {
                rel,
                src,
                meta,
                opaque,
            } => {
                pax(b, src, rel)?;
                let mut h = tar_header(meta, tar::EntryType::Directory);
                b.append_data(&mut h, rel, io::empty())
                    .map_err(io_err("writing tar entry for", rel))?;
                stats.dirs += 1;
                if opaque {
                    let mut h = tar_header(meta, tar::EntryType::Regular);
                    h.set_mode(0o600);
                    let p = rel.join(WH_OPAQUE);
                    b.append_data(&mut h, &p, io::empty())
                        .map_err(io_err("writing tar entry for", &p))?;
                    stats.opaque += 1;
                }
            }
            Node::DirEnd { .. } => {}
            Node::Whiteout { rel } => {
                let name = rel.file_name().unwrap_or_default();
                let p = rel.with_file_name(wh_name(name));
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o600);
                h.set_size(0);
                b.append_data(&mut h, &p, io::empty())
                    .map_err(io_err("writing tar entry for", &p))?;
                stats.whiteouts += 1;
            }
            Node::Other {
                rel,
                src,
                data,
                meta,
            } => {
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                        let mut h = tar_header(meta, tar::EntryType::Link);
                        b.append_link(&mut h, rel, first)
                            .map_err(io_err("writing tar entry for", rel))?;
                        stats.hardlinks += 1;
                        return Ok(());
                    }
                    links.insert((meta.dev(), meta.ino()), rel.to_path_buf());
                }
                let ft = meta.file_type();
                if ft.is_symlink() {
                    let target = fs::read_link(src).map_err(io_err("reading link", src))?;
                    let mut h = tar_header(meta, tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    b.append_link(&mut h, rel, &target)
                        .map_err(io_err("writing tar entry for", rel))?;
                } else if ft.is_file() {
                    pax(b, src, rel)?;
                    let f = fs::File::open(data).map_err(io_err("opening", data))?;
                    let mut h = tar_header(meta, tar::EntryType::Regular);
                    h.set_size(meta.len());
                    b.append_data(&mut h, rel, f)
                        .map_err(io_err("writing tar entry for", rel))?;
                } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                    pax(b, src, rel)?;
                    let kind = if ft.is_char_device() {
                        tar::EntryType::Char
                    } else if ft.is_block_device() {
                        tar::EntryType::Block
                    } else {
                        tar::EntryType::Fifo
                    };
                    let mut h = tar_header(meta, kind);
                    let rdev = meta.rdev();
                    h.set_device_major(libc::major(rdev))
                        .map_err(io_err("writing tar entry for", rel))?;
                    h.set_device_minor(libc::minor(rdev))
                        .map_err(io_err("writing tar entry for", rel))?;
                    b.append_data(&mut h, rel, io::empty())
                        .map_err(io_err("writing tar entry for", rel))?;
                } else {
                    return Ok(());
                }
                stats.files += 1;
            }
        }
        Ok(())
    })?;
    Ok(stats)
}
