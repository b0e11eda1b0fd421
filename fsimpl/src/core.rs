//! The union filesystem's state and its layer logic: resolving names across layers, building
//! attributes, mapping ids, and the node table glue.

use crate::config::{OverlayConfig, WhiteoutFormat, XattrNamespace};
use crate::layer::{DevIndex, Layer};
use crate::node::{Fd, Name, Node, NodeState, NodeTable, Obj};
use crate::{sys, whiteout, Error};
use fuser::{FileAttr, FileType};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lookups of missing names in one directory before its layer directories are scanned for
/// `.wh.` files (a directory looked into only a few times is not read whole).
const WH_SCAN_AFTER: u32 = 4;

/// Private work subdirectory name inside the work dir.
pub const WORK_SUBDIR: &str = "rcl-fs";
/// Hard-link index subdirectory inside the private work dir.
pub const INDEX_SUBDIR: &str = "index";

/// An open file handle.
#[derive(Debug)]
pub struct Handle {
    /// The open file (or directory listing source).
    pub fd: OwnedFd,
    /// The node it belongs to.
    pub node: Arc<Node>,
    /// Uses the node's passthrough backing id.
    pub passthrough: bool,
    /// `fd` reads a lower copy: the node had no upper data when it was opened.
    pub lower: bool,
    /// The upper copy, opened by the first read the daemon serves after the node was copied
    /// up (a read-only handle opened before the copy-up then reads what was written since).
    pub upper: std::sync::OnceLock<OwnedFd>,
}

impl Handle {
    /// A handle on `fd` for `node`; `lower` when `fd` is a lower copy of the data.
    pub fn new(fd: OwnedFd, node: Arc<Node>, lower: bool) -> Self {
        Handle {
            fd,
            node,
            passthrough: false,
            lower,
            upper: std::sync::OnceLock::new(),
        }
    }
}

/// The result of resolving a name across the layers.
#[derive(Debug, Default)]
pub struct Found {
    /// The upper object and its stat.
    pub upper: Option<(Obj, libc::stat)>,
    /// Lower objects (layer, object, stat), top first.
    pub lowers: Vec<(usize, Obj, libc::stat)>,
    /// Path inside the lowers.
    pub lower_path: Option<PathBuf>,
    /// Upper is a metacopy.
    pub metacopy: bool,
    /// No upper; the top lower is a metacopy file (a former upper used as a lower layer)
    /// whose data is `lowers[1]`.
    pub lower_meta: bool,
    /// Origin recorded on the upper object.
    pub origin: Option<(u64, u64)>,
    /// The name resolved, shared with the `Obj::At` objects made for it.
    pub name: Option<Name>,
    /// `lower_path` came from a redirect (not the parent's path plus the name).
    pub redirected: bool,
    /// Whether a lower layer shows the name (`None`: not looked at).
    pub in_lower: Option<bool>,
}

impl Found {
    /// The stat that defines the type and attributes.
    pub fn stat(&self) -> &libc::stat {
        self.upper
            .as_ref()
            .map(|u| &u.1)
            .unwrap_or_else(|| &self.lowers[0].2)
    }

    /// The origin key used for the inode number.
    pub fn origin_key(&self) -> (u64, u64) {
        if let Some(o) = self.origin {
            return o;
        }
        let st = match (&self.upper, self.lowers.first()) {
            (Some(u), _) if self.lowers.is_empty() || !is_dir(&u.1) => &u.1,
            (_, Some(l)) => &l.2,
            (Some(u), None) => &u.1,
            (None, None) => unreachable!("empty Found"),
        };
        (st.st_dev, st.st_ino)
    }
}

/// True when the stat is a directory.
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// FUSE file type of a stat mode.
pub fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// FUSE file type of a `d_type`.
pub fn kind_of_dtype(d: u8) -> FileType {
    match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn systime(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

/// The union filesystem: implements [`fuser::Filesystem`].
#[derive(Debug)]
pub struct UnionFs {
    pub(crate) cfg: OverlayConfig,
    pub(crate) lowers: Vec<Layer>,
    pub(crate) upper: Option<Layer>,
    /// WORK/rcl-fs
    pub(crate) work: Option<OwnedFd>,
    /// WORK/rcl-fs/index
    pub(crate) index: Option<Fd>,
    /// "trusted" or "user".
    pub(crate) ns: &'static str,
    pub(crate) nodes: NodeTable,
    pub(crate) devs: DevIndex,
    pub(crate) handles: RwLock<HashMap<u64, Arc<Handle>>>,
    pub(crate) dirs: RwLock<HashMap<u64, Arc<crate::dircache::DirHandle>>>,
    /// Merged listings per directory (dircache.rs).
    pub(crate) dircache: crate::dircache::DirCache,
    /// Lower directories opened to reach files by path (redirects, metacopy data), shared by
    /// every node that holds one: (layer, path) -> fd while some node keeps it.
    pub(crate) lower_dirs: Mutex<HashMap<(usize, PathBuf), Weak<OwnedFd>>>,
    pub(crate) next_fh: AtomicU64,
    pub(crate) tmp_seq: AtomicU64,
    pub(crate) passthrough: AtomicBool,
    /// The kernel runs a writeback page cache (only without passthrough).
    pub(crate) writeback: AtomicBool,
    /// Sends notifications to the kernel; set by [`crate::mount`] once the session exists
    /// (unset when the filesystem is served some other way: no notifications then).
    pub(crate) notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl UnionFs {
    /// Opens the layers named by `cfg`, checks them (they exist and are directories; upper and
    /// work are on one filesystem), cleans leftovers of an interrupted copy-up out of the work
    /// directory, and returns a filesystem ready to mount. Errors name the path at fault.
    pub fn new(cfg: OverlayConfig) -> Result<Self, Error> {
        sys::raise_nofile();
        if cfg.lowerdirs.is_empty() {
            return Err(Error::Config("at least one lowerdir is needed".into()));
        }
        if cfg.upperdir.is_some() != cfg.workdir.is_some() {
            return Err(Error::Config(
                "upperdir and workdir must be given together".into(),
            ));
        }
        let lowers = cfg
            .lowerdirs
            .iter()
            .map(|p| Layer::open("lowerdir", p))
            .collect::<Result<Vec<_>, _>>()?;
        let devs = DevIndex::default();
        let (mut upper, mut work, mut index, mut ns) = (None, None, None, "user");
        if let (Some(up), Some(wk)) = (&cfg.upperdir, &cfg.workdir) {
            let u = Layer::open("upperdir", up)?;
            let w = Layer::open("workdir", wk)?;
            if u.dev != w.dev {
                return Err(Error::Config(format!(
                    "upperdir {} and workdir {} are on different filesystems",
                    up.display(),
                    wk.display()
                )));
            }
            let werr = |source| Error::Layer {
                role: "workdir",
                path: wk.join(WORK_SUBDIR),
                source,
            };
            match sys::mkdirat(w.raw(), OsStr::new(WORK_SUBDIR), 0o700) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(werr(e)),
            }
            let wfd = sys::open_dir(w.raw(), OsStr::new(WORK_SUBDIR)).map_err(werr)?;
            clean_work(wfd.as_raw_fd()).map_err(werr)?;
            match sys::mkdirat(wfd.as_raw_fd(), OsStr::new(INDEX_SUBDIR), 0o700) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(werr(e)),
            }
            let ifd = sys::open_dir(wfd.as_raw_fd(), OsStr::new(INDEX_SUBDIR)).map_err(werr)?;
            ns = match cfg.xattr_namespace {
                XattrNamespace::Trusted => {
                    if probe_trusted(wfd.as_raw_fd()) != "trusted" {
                        return Err(Error::Config(format!(
                            "xattr namespace trusted: trusted.* xattrs cannot be set on the \
                             upper filesystem of {} (needs CAP_SYS_ADMIN in the initial user \
                             namespace); use user or auto",
                            up.display()
                        )));
                    }
                    "trusted"
                }
                XattrNamespace::User => "user",
                XattrNamespace::Auto => probe_trusted(wfd.as_raw_fd()),
            };
            devs.index(u.dev);
            upper = Some(u);
            work = Some(wfd);
            index = Some(Arc::new(ifd));
        }
        for l in &lowers {
            devs.index(l.dev);
        }
        let fs = UnionFs {
            passthrough: AtomicBool::new(cfg.passthrough != crate::Passthrough::Off),
            cfg,
            lowers,
            upper,
            work,
            index,
            ns,
            nodes: NodeTable::default(),
            devs,
            handles: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            dircache: Default::default(),
            lower_dirs: Default::default(),
            next_fh: AtomicU64::new(1),
            tmp_seq: AtomicU64::new(0),
            writeback: AtomicBool::new(false),
            notifier: Default::default(),
        };
        fs.insert_root().map_err(|e| Error::Io {
            context: "opening the root directory".into(),
            source: e,
        })?;
        Ok(fs)
    }

    fn insert_root(&self) -> io::Result<()> {
        let mut st = NodeState {
            parent: 1,
            lower_path: Some(PathBuf::from("/")),
            ..Default::default()
        };
        let mut opaque = false;
        if let Some(u) = &self.upper {
            let fd = sys::open_dir(u.raw(), OsStr::new("."))?;
            opaque = whiteout::is_opaque_dir(fd.as_raw_fd());
            st.upper = Some(Obj::Fd(Arc::new(fd)));
        }
        if !opaque {
            for (i, l) in self.lowers.iter().enumerate() {
                let fd = sys::open_dir(l.raw(), OsStr::new("."))?;
                let op = whiteout::is_opaque_dir(fd.as_raw_fd());
                st.lowers.push((i, Obj::Fd(Arc::new(fd))));
                if op {
                    break;
                }
            }
        }
        let node = Node::new(1, FileType::Directory, st);
        node.lookups.store(1 << 40, Ordering::Relaxed);
        self.nodes.insert(node);
        Ok(())
    }

    /// Name of an overlay xattr in the namespace we write (`<ns>.overlay.<what>`).
    pub(crate) fn ovl_xattr(&self, what: &str) -> CString {
        CString::new(format!("{}.overlay.{what}", self.ns)).expect("no NUL")
    }

    /// Name of a private rcl-fs xattr (`<ns>.rclfs.<what>`).
    pub(crate) fn rcl_xattr(&self, what: &str) -> CString {
        CString::new(format!("{}.rclfs.{what}", self.ns)).expect("no NUL")
    }

    /// The node with nodeid `ino`, or ENOENT... as an errno.
    pub(crate) fn node(&self, ino: u64) -> io::Result<Arc<Node>> {
        self.nodes
            .get(ino)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// Checks a name given by the kernel: ENAMETOOLONG over 255 bytes; `.wh.` names hidden.
    pub(crate) fn check_name(name: &OsStr) -> io::Result<()> {
        if name.len() > 255 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        Ok(())
    }

    fn read_origin(&self, fd: RawFd) -> Option<(u64, u64)> {
        let v = sys::getxattr_fd(fd, &self.rcl_xattr("origin")).ok()??;
        parse_origin(&v)
    }

    /// Resolves `name` inside the directory described by `parent` across all layers.
    /// `Ok(None)` when it does not exist or is whited out.
    pub(crate) fn resolve(&self, parent: &NodeState, name: &OsStr) -> io::Result<Option<Found>> {
        self.resolve_in(None, parent, name)
    }

    /// True when layer directory `fd` (slot `slot` of directory node `pnode`: 0 its upper,
    /// 1 + k its `lowers[k]`) holds a `.wh.NAME` file. After a few misses in one directory its
    /// layer directories are scanned once: one without any `.wh.` name needs no more stats.
    /// Lowers never change; the upper gains `.wh.` files only in the `.wh.` whiteout format,
    /// whose upper is never cached.
    fn wh_file_in(&self, pnode: Option<&Node>, slot: usize, fd: RawFd, name: &OsStr) -> bool {
        if let Some(p) = pnode {
            if slot < 32 && !(slot == 0 && self.wh_files()) {
                let bit = 1u64 << slot;
                let scan = p.wh_scan.load(Ordering::Acquire);
                if scan & bit != 0 {
                    if scan & (bit << 32) != 0 {
                        return false;
                    }
                } else if p.wh_misses.fetch_add(1, Ordering::Relaxed) >= WH_SCAN_AFTER {
                    if let Ok(ents) = sys::read_dir(fd) {
                        let free = !ents.iter().any(|e| whiteout::is_wh_name(&e.name));
                        let free_bit = if free { bit << 32 } else { 0 };
                        p.wh_scan.fetch_or(bit | free_bit, Ordering::AcqRel);
                        if free {
                            return false;
                        }
                    }
                }
            }
        }
        whiteout::has_wh_file(fd, name)
    }

    /// [`UnionFs::resolve`] inside directory node `pnode` (whose state `parent` is), which
    /// lets it remember which of its layer directories hold no `.wh.` files.
    pub(crate) fn resolve_in(
        &self,
        pnode: Option<&Node>,
        parent: &NodeState,
        name: &OsStr,
    ) -> io::Result<Option<Found>> {
        if whiteout::is_wh_name(name) {
            return Ok(None);
        }
        let nm: Name = Arc::from(name);
        let mut f = Found {
            lower_path: parent.lower_path.as_ref().map(|p| p.join(name)),
            name: Some(nm.clone()),
            ..Default::default()
        };
        let mut stop = false;
        let mut redirect: Option<PathBuf> = None;
        if let Some(up) = parent.upper_dir() {
            let ufd = up.as_raw_fd();
            match sys::lstatat_opt(ufd, name)? {
                Some(st) if whiteout::is_whiteout(&st) => return Ok(None),
                Some(st) if is_dir(&st) => {
                    let fd = sys::open_dir(ufd, name)?;
                    let raw = fd.as_raw_fd();
                    if whiteout::is_opaque_dir(raw) {
                        stop = true;
                    } else if sys::xattr_is_y(raw, &self.rcl_xattr("redirect")) {
                        if let Ok(Some(r)) = sys::getxattr_fd(raw, &self.ovl_xattr("redirect")) {
                            if r.first() == Some(&b'/') {
                                redirect = Some(PathBuf::from(OsStr::from_bytes(&r)));
                            }
                        }
                    }
                    f.origin = self.read_origin(raw);
                    f.upper = Some((Obj::Fd(Arc::new(fd)), st));
                }
                Some(st) => {
                    // Symlinks and special files cannot carry user.* xattrs: skip the reads
                    // (an O_PATH open each) where they cannot be.
                    let obj = Obj::At(up.clone(), nm.clone());
                    let fmt = st.st_mode & libc::S_IFMT;
                    if fmt == libc::S_IFREG || self.ns == "trusted" {
                        f.origin = obj
                            .getxattr(&self.rcl_xattr("origin"))
                            .ok()
                            .flatten()
                            .and_then(|v| parse_origin(&v));
                    }
                    stop = true;
                    if fmt == libc::S_IFREG
                        && matches!(obj.getxattr(&self.ovl_xattr("metacopy")), Ok(Some(_)))
                    {
                        f.metacopy = true;
                        if let Ok(Some(p)) = obj.getxattr(&self.rcl_xattr("lower")) {
                            redirect = Some(PathBuf::from(OsStr::from_bytes(&p)));
                        } else {
                            stop = false;
                        }
                    }
                    f.upper = Some((obj, st));
                }
                None => {
                    if self.wh_file_in(pnode, 0, ufd, name) {
                        return Ok(None);
                    }
                }
            }
        }
        if let Some(path) = redirect {
            f.lower_path = Some(path.clone());
            f.redirected = true;
            let want_dir = f.upper.as_ref().is_some_and(|u| is_dir(&u.1));
            self.resolve_path_in_lowers(&path, &mut f, 0, want_dir)?;
            if f.metacopy && f.lowers.is_empty() {
                f.metacopy = false;
            }
            return Ok(Some(f));
        }
        if !stop {
            f.in_lower = Some(false);
            for (slot, (li, lobj)) in parent.lowers.iter().enumerate() {
                let Ok(lfd) = lobj.dir() else { continue };
                let raw = lfd.as_raw_fd();
                let found = sys::lstatat_opt(raw, name)?;
                if f.in_lower == Some(false) {
                    f.in_lower = Some(found.as_ref().is_some_and(|st| !whiteout::is_whiteout(st)));
                }
                match found {
                    Some(st) if whiteout::is_whiteout(&st) => break,
                    Some(st) if is_dir(&st) => {
                        if f.metacopy || f.lower_meta {
                            break;
                        }
                        if let Some((_, ust)) = &f.upper {
                            if !is_dir(ust) {
                                break;
                            }
                        }
                        let fd = sys::open_dir(raw, name)?;
                        let op = whiteout::is_opaque_dir(fd.as_raw_fd());
                        let redirect = if op {
                            None
                        } else {
                            rcl_redirect(fd.as_raw_fd())
                        };
                        f.lowers.push((*li, Obj::Fd(Arc::new(fd)), st));
                        if op {
                            break;
                        }
                        if let Some(p) = redirect {
                            // A directory renamed by rcl-fs in a layer that was its upper:
                            // the layers below merge from where it came from.
                            f.lower_path = Some(p.clone());
                            f.redirected = true;
                            self.resolve_path_in_lowers(&p, &mut f, li + 1, true)?;
                            break;
                        }
                    }
                    Some(st) => {
                        let first = f.upper.is_none() && f.lowers.is_empty();
                        let is_reg = st.st_mode & libc::S_IFMT == libc::S_IFREG;
                        let want_data = f.lower_meta && f.lowers.len() == 1;
                        let obj = Obj::At(lfd.clone(), nm.clone());
                        if first && is_reg && lower_is_metacopy(&obj) {
                            // A metacopy file in a lower layer: its data lies below.
                            f.lowers.push((*li, obj.clone(), st));
                            f.lower_meta = true;
                            if let Some(p) = rcl_lower_path(&obj) {
                                self.resolve_path_in_lowers(&p, &mut f, li + 1, false)?;
                                break;
                            }
                            continue;
                        }
                        if first || (f.metacopy && f.lowers.is_empty()) || (want_data && is_reg) {
                            f.lowers.push((*li, obj, st));
                        }
                        break;
                    }
                    None => {
                        if self.wh_file_in(pnode, slot + 1, raw, name) {
                            break;
                        }
                    }
                }
            }
        }
        if f.metacopy && f.lowers.is_empty() {
            // The lower data is gone: show the upper as it is.
            f.metacopy = false;
        }
        if f.lower_meta && f.lowers.len() < 2 {
            f.lower_meta = false;
        }
        if f.upper.is_none() && f.lowers.is_empty() {
            return Ok(None);
        }
        if let Some((_, ust)) = &f.upper {
            if !is_dir(ust) && !f.metacopy {
                f.lowers.clear();
            }
        } else if !is_dir(&f.lowers[0].2) {
            // A lower-only hard-linked file already copied up through another alias.
            self.attach_index(&mut f);
        }
        if f.lowers.is_empty() && f.upper.as_ref().is_some_and(|u| is_dir(&u.1)) {
            f.lower_path = None;
        }
        Ok(Some(f))
    }

    /// Looks `path` (absolute, inside the lowers) up in every lower layer and merges.
    fn resolve_path_in_lowers(
        &self,
        path: &Path,
        f: &mut Found,
        from: usize,
        want_dir: bool,
    ) -> io::Result<()> {
        let comps: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let Some((last, dirs)) = comps.split_last() else {
            return Ok(());
        };
        'layers: for (li, layer) in self.lowers.iter().enumerate().skip(from) {
            let mut cur: Option<OwnedFd> = None;
            for c in dirs {
                let base = cur.as_ref().map(|c| c.as_raw_fd()).unwrap_or(layer.raw());
                match sys::open_dir(base, c) {
                    Ok(fd) => cur = Some(fd),
                    Err(_) => continue 'layers,
                }
            }
            let base = cur.as_ref().map(|c| c.as_raw_fd()).unwrap_or(layer.raw());
            let Some(st) = sys::lstatat_opt(base, last)? else {
                continue;
            };
            if whiteout::is_whiteout(&st) {
                break;
            }
            if is_dir(&st) != want_dir {
                break;
            }
            if want_dir {
                let fd = sys::open_dir(base, last)?;
                let op = whiteout::is_opaque_dir(fd.as_raw_fd());
                f.lowers.push((li, Obj::Fd(Arc::new(fd)), st));
                if op {
                    break;
                }
            } else {
                let dir: PathBuf = dirs.iter().collect();
                let dirfd = self.shared_lower_dir(li, dir, || match cur {
                    Some(c) => Ok(c),
                    None => sys::open_dir(layer.raw(), OsStr::new(".")),
                })?;
                f.lowers.push((li, Obj::at(dirfd, last), st));
                break;
            }
        }
        Ok(())
    }

    /// The fd of lower directory `dir` of layer `li`, shared with every node already holding
    /// it, else `open()`ed and shared from now on: files reached by path (many renamed
    /// metacopy files in one directory) cost one fd per directory, not one each.
    fn shared_lower_dir(
        &self,
        li: usize,
        dir: PathBuf,
        open: impl FnOnce() -> io::Result<OwnedFd>,
    ) -> io::Result<Fd> {
        let mut map = self.lower_dirs.lock();
        let key = (li, dir);
        if let Some(fd) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(fd);
        }
        let fd = Arc::new(open()?);
        // Drop dead entries now and then (at 1024, 2048, 4096... entries: amortised O(1)).
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        map.insert(key, Arc::downgrade(&fd));
        Ok(fd)
    }

    /// Index entry name of a lower origin.
    pub(crate) fn index_name(origin: (u64, u64)) -> String {
        format!("{}-{}", origin.0, origin.1)
    }

    fn attach_index(&self, f: &mut Found) {
        let st = f.lowers[0].2;
        if st.st_nlink < 2 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return;
        }
        let Some(idx) = &self.index else { return };
        let key = (st.st_dev, st.st_ino);
        let name = Self::index_name(key);
        if let Ok(Some(ist)) = sys::lstatat_opt(idx.as_raw_fd(), OsStr::new(&name)) {
            f.upper = Some((Obj::at(idx.clone(), OsStr::new(&name)), ist));
            f.origin = Some(key);
            f.lowers.clear();
        }
    }

    /// The nodeid `f` gets (an existing live node's, or a composed or allocated number),
    /// without inserting anything.
    pub(crate) fn ino_for(&self, f: &Found) -> u64 {
        let key = f.origin_key();
        if let Some(&a) = self.nodes.alias.read().get(&key) {
            if self.nodes.get(a).is_some() {
                return a;
            }
        }
        self.devs.compose(key.0, key.1).unwrap_or(0)
    }

    /// Finds or creates the node for a resolved entry and refreshes its layer state; records
    /// that `parent/name` shows it.
    pub(crate) fn node_for(&self, parent: u64, name: &OsStr, f: Found) -> Arc<Node> {
        self.node_for_fresh(parent, name, f).0
    }

    /// [`UnionFs::node_for`], and whether the node was made from `f` just now (its state is
    /// exactly what `f` found).
    fn node_for_fresh(&self, parent: u64, name: &OsStr, f: Found) -> (Arc<Node>, bool) {
        let (n, fresh) = self.node_for_inner(parent, name, f);
        self.nodes.set_name(parent, name, n.ino);
        (n, fresh)
    }

    fn node_for_inner(&self, parent: u64, name: &OsStr, f: Found) -> (Arc<Node>, bool) {
        let key = f.origin_key();
        let kind = kind_of(f.stat().st_mode);
        let mk_state = |f: Found| {
            let lower_nlink = match (&f.upper, f.lowers.first()) {
                (None, Some(l)) if kind != FileType::Directory => {
                    u32::try_from(l.2.st_nlink).unwrap_or(u32::MAX)
                }
                _ => 0,
            };
            NodeState {
                parent,
                name: f.name.unwrap_or_else(|| Arc::from(name)),
                upper: f.upper.map(|u| u.0),
                lowers: f.lowers.into_iter().map(|l| (l.0, l.1)).collect(),
                // A plain file's lower path is its parent's plus its name: not stored.
                lower_path: if kind == FileType::Directory || f.redirected {
                    f.lower_path
                } else {
                    None
                },
                metacopy: f.metacopy,
                lower_metacopy: f.lower_meta,
                in_lower: f.in_lower,
                lower_nlink,
                origin: key,
                removed_links: 0,
            }
        };
        let aliased = self.nodes.alias.read().get(&key).copied();
        let candidate = aliased.or_else(|| self.devs.compose(key.0, key.1));
        if let Some(ino) = candidate {
            if let Some(n) = self.nodes.get(ino) {
                if n.kind == kind
                    && !n.unlinked.load(Ordering::Acquire)
                    && n.st.read().origin == key
                {
                    // The node's state is kept current by every change made through the
                    // mount; a new resolution only adds an upper that appeared (an alias
                    // copied up through the index) and the alias last used. Keeping the old
                    // objects also keeps fds shared (children hold their parent's dir fds).
                    let mut st = n.st.write();
                    let new = mk_state(f);
                    if st.upper.is_none() && new.upper.is_some() {
                        st.upper = new.upper;
                        if kind != FileType::Directory {
                            st.lowers = new.lowers;
                            st.metacopy = new.metacopy;
                        }
                    }
                    if kind != FileType::Directory {
                        if st.lower_path.is_none() && !st.lowers.is_empty() && st.parent != 0 {
                            // Keep where the data lies in the lowers before the name changes.
                            st.lower_path = self.lower_path_of(&st);
                        }
                        st.parent = parent;
                        st.name = new.name;
                        st.in_lower = new.in_lower;
                    } else if st.in_lower.is_none() {
                        st.in_lower = new.in_lower;
                    }
                    drop(st);
                    return (n, false);
                }
            } else {
                let node = Node::new(ino, kind, mk_state(f));
                // Lost a race to a different file: the winner's number is handed out; callers
                // compare origins where it matters.
                return self.insert_fresh(node);
            }
        }
        let ino = self.nodes.alloc();
        self.nodes.alias.write().insert(key, ino);
        self.insert_fresh(Node::new(ino, kind, mk_state(f)))
    }

    fn insert_fresh(&self, node: Node) -> (Arc<Node>, bool) {
        self.nodes.insert_new(node)
    }

    /// Resolves `parent/name` and returns its node with its attributes, taking them from the
    /// resolution's own stat when the node is new (lookup count unchanged).
    pub(crate) fn lookup_entry(
        &self,
        parent: u64,
        name: &OsStr,
    ) -> io::Result<(Arc<Node>, FileAttr)> {
        Self::check_name(name)?;
        let p = self.node(parent)?;
        if p.kind != FileType::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let st = p.st.read().clone();
        self.resolve_entry(&p, &st, name)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// Resolves `name` in directory node `pnode` (whose state is `st`) and returns its node
    /// and attributes (`None` when it does not exist): the cheapest way from a name to an
    /// entry reply (a new node's attributes come from the resolution's stat; the directory
    /// remembers which of its layers hold no `.wh.` files). Lookup count unchanged.
    pub(crate) fn resolve_entry(
        &self,
        pnode: &Node,
        st: &NodeState,
        name: &OsStr,
    ) -> io::Result<Option<(Arc<Node>, FileAttr)>> {
        let Some(f) = self.resolve_in(Some(pnode), st, name)? else {
            return Ok(None);
        };
        let known = (!f.metacopy && !f.lower_meta).then(|| *f.stat());
        let (n, fresh) = self.node_for_fresh(pnode.ino, name, f);
        let a = self.attr_with(&n, known.as_ref().filter(|_| fresh))?;
        Ok(Some((n, a)))
    }

    /// Absolute path of the node's object inside the lower layers: stored for directories and
    /// redirected objects, else its parent's lower path plus its name (`None` when the object
    /// has no lower or the parent is no longer known).
    pub(crate) fn lower_path_of(&self, st: &NodeState) -> Option<PathBuf> {
        if let Some(p) = &st.lower_path {
            return Some(p.clone());
        }
        if st.lowers.is_empty() {
            return None;
        }
        let parent = self.nodes.get(st.parent)?;
        let pst = parent.st.read();
        pst.lower_path.as_ref().map(|p| p.join(&*st.name))
    }

    /// The node `parent/name` shows: from the table when a live node is known under that
    /// name (no layer is looked at), else resolved across the layers.
    pub(crate) fn known_or_lookup(&self, parent: u64, name: &OsStr) -> io::Result<Arc<Node>> {
        Self::check_name(name)?;
        match self.nodes.by_name(parent, name) {
            Some(n) => Ok(n),
            None => self.lookup_node(parent, name),
        }
    }

    /// Resolves and returns the node (lookup count unchanged).
    pub(crate) fn lookup_node(&self, parent: u64, name: &OsStr) -> io::Result<Arc<Node>> {
        Self::check_name(name)?;
        let p = self.node(parent)?;
        if p.kind != FileType::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let st = p.st.read().clone();
        let f = self
            .resolve_in(Some(&p), &st, name)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(self.node_for(parent, name, f))
    }

    /// Attributes of a node, from a fresh stat of its layers.
    pub(crate) fn attr(&self, node: &Node) -> io::Result<FileAttr> {
        self.attr_with(node, None)
    }

    /// Attributes of a node; `known` is a stat of its metadata object taken just now (the
    /// resolution that made the node), which saves stating it again.
    fn attr_with(&self, node: &Node, known: Option<&libc::stat>) -> io::Result<FileAttr> {
        let st = node.st.read();
        let meta = st
            .meta()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
        let s = match known {
            Some(k) => *k,
            None => meta.stat()?,
        };
        let mut blocks = s.st_blocks as u64;
        if st.metacopy || (st.lower_metacopy && st.upper.is_none()) {
            if let Some(d) = st.data() {
                if let Ok(ds) = d.stat() {
                    blocks = ds.st_blocks as u64;
                }
            }
        }
        let mut nlink = s.st_nlink as u32;
        if node.kind == FileType::Directory {
            if self.cfg.static_nlink || st.is_merged() {
                nlink = 1;
            }
        } else if st.upper.is_none() {
            nlink = nlink.saturating_sub(st.removed_links);
        } else if st.origin != (s.st_dev, s.st_ino) && nlink > 1 {
            // A copied-up hard link kept in the index: its logical link count is recorded.
            if let Some(n) = meta
                .fd()
                .ok()
                .and_then(|f| self.logical_nlink(f.as_raw_fd()))
            {
                nlink = n;
            }
        }
        if node.unlinked.load(Ordering::Acquire) {
            nlink = 0;
        }
        let uid = self
            .cfg
            .squash_uid
            .unwrap_or_else(|| self.cfg.uid_mapping.to_container(s.st_uid));
        let gid = self
            .cfg
            .squash_gid
            .unwrap_or_else(|| self.cfg.gid_mapping.to_container(s.st_gid));
        Ok(FileAttr {
            ino: fuser::INodeNo(node.ino),
            size: s.st_size as u64,
            blocks,
            atime: systime(s.st_atime, s.st_atime_nsec),
            mtime: systime(s.st_mtime, s.st_mtime_nsec),
            ctime: systime(s.st_ctime, s.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: node.kind,
            perm: (s.st_mode & 0o7777) as u16,
            nlink,
            uid,
            gid,
            rdev: s.st_rdev as u32,
            blksize: s.st_blksize as u32,
            flags: 0,
        })
    }

    /// The logical link count recorded on an indexed upper file, if any.
    pub(crate) fn logical_nlink(&self, fd: RawFd) -> Option<u32> {
        let v = sys::getxattr_fd(fd, &self.rcl_xattr("nlink")).ok()??;
        std::str::from_utf8(&v).ok()?.parse().ok()
    }

    /// Adds `delta` to the logical link count of an indexed upper file; returns the new count.
    pub(crate) fn adjust_nlink(&self, fd: RawFd, delta: i64) -> Option<u32> {
        let n = self.logical_nlink(fd)?;
        let new = (n as i64 + delta).max(0) as u32;
        let _ = sys::setxattr_fd(fd, &self.rcl_xattr("nlink"), new.to_string().as_bytes(), 0);
        Some(new)
    }

    /// Host uid for an id given through the mount (EINVAL when unmapped).
    pub(crate) fn host_uid(&self, uid: u32) -> io::Result<u32> {
        self.cfg
            .uid_mapping
            .to_host(uid)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Host gid for an id given through the mount (EINVAL when unmapped).
    pub(crate) fn host_gid(&self, gid: u32) -> io::Result<u32> {
        self.cfg
            .gid_mapping
            .to_host(gid)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// A unique temporary name for the work dir.
    pub(crate) fn tmp_name(&self) -> std::ffi::OsString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        format!("tmp-{}-{n}", std::process::id()).into()
    }

    /// The work dir fd (EROFS without an upper).
    pub(crate) fn work_fd(&self) -> io::Result<RawFd> {
        self.work
            .as_ref()
            .map(|w| w.as_raw_fd())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EROFS))
    }

    /// True when a whiteout is written as `.wh.` files.
    pub(crate) fn wh_files(&self) -> bool {
        self.cfg.whiteout_format == WhiteoutFormat::WhFiles
    }

    /// True when any lower layer of the directory `parent` shows `name` (so removing or
    /// renaming it away needs a whiteout).
    pub(crate) fn lower_has(&self, parent: &NodeState, name: &OsStr) -> bool {
        for lfd in parent.lower_dirs() {
            match sys::lstatat_opt(lfd.as_raw_fd(), name) {
                Ok(Some(st)) => return !whiteout::is_whiteout(&st),
                _ => {
                    if whiteout::has_wh_file(lfd.as_raw_fd(), name) {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Recursively removes `dir/name` (a tree in the work dir).
    pub(crate) fn remove_tree(dir: RawFd, name: &OsStr) -> io::Result<()> {
        match sys::lstatat_opt(dir, name)? {
            None => Ok(()),
            Some(st) if is_dir(&st) => Self::remove_dir_tree(dir, name),
            Some(_) => sys::unlinkat(dir, name, 0),
        }
    }

    /// Removes directory `dir/name` and everything in it; entries whose `d_type` says they
    /// are not directories are unlinked without a stat.
    fn remove_dir_tree(dir: RawFd, name: &OsStr) -> io::Result<()> {
        let fd = sys::open_dir(dir, name)?;
        let raw = fd.as_raw_fd();
        for e in sys::read_dir(raw)? {
            match e.dtype {
                libc::DT_DIR => Self::remove_dir_tree(raw, &e.name)?,
                libc::DT_UNKNOWN => Self::remove_tree(raw, &e.name)?,
                _ => match sys::unlinkat(raw, &e.name, 0) {
                    Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                    r => r?,
                },
            }
        }
        sys::unlinkat(dir, name, libc::AT_REMOVEDIR)
    }
}

/// True when a lower file is an overlay metacopy file (either namespace).
fn lower_is_metacopy(obj: &Obj) -> bool {
    matches!(obj.getxattr(c"trusted.overlay.metacopy"), Ok(Some(_)))
        || matches!(obj.getxattr(c"user.overlay.metacopy"), Ok(Some(_)))
}

/// The lower path an rcl-fs metacopy file records for its data (either namespace).
fn rcl_lower_path(obj: &Obj) -> Option<PathBuf> {
    let v = obj
        .getxattr(c"trusted.rclfs.lower")
        .ok()
        .flatten()
        .or_else(|| obj.getxattr(c"user.rclfs.lower").ok().flatten())?;
    (v.first() == Some(&b'/')).then(|| PathBuf::from(OsStr::from_bytes(&v)))
}

/// The absolute redirect of a directory renamed by rcl-fs (marker and redirect in either
/// namespace), as found in a lower layer.
fn rcl_redirect(fd: RawFd) -> Option<PathBuf> {
    for ns in ["trusted", "user"] {
        let marker = CString::new(format!("{ns}.rclfs.redirect")).expect("no NUL");
        if sys::xattr_is_y(fd, &marker) {
            let r = CString::new(format!("{ns}.overlay.redirect")).expect("no NUL");
            let v = sys::getxattr_fd(fd, &r).ok()??;
            return (v.first() == Some(&b'/')).then(|| PathBuf::from(OsStr::from_bytes(&v)));
        }
    }
    None
}

/// Parses a recorded origin `dev:ino`.
fn parse_origin(v: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn clean_work(wfd: RawFd) -> io::Result<()> {
    for e in sys::read_dir(wfd)? {
        if e.name == INDEX_SUBDIR {
            continue;
        }
        UnionFs::remove_tree(wfd, &e.name)?;
    }
    Ok(())
}

fn probe_trusted(wfd: RawFd) -> &'static str {
    let name = OsStr::new("xattr-probe");
    let _ = sys::unlinkat(wfd, name, 0);
    let Ok(fd) = sys::openat(
        wfd,
        name,
        libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
        0o600,
    ) else {
        return "user";
    };
    let ok = sys::setxattr_fd(fd.as_raw_fd(), c"trusted.rclfs.probe", b"1", 0).is_ok();
    let _ = sys::unlinkat(wfd, name, 0);
    if ok {
        "trusted"
    } else {
        "user"
    }
}
