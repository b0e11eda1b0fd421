//! The inode table: one [`Node`] per FUSE nodeid the kernel may hold, sharded for concurrency.

use crate::sys;
use fuser::FileType;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// An fd shared between a node and in-flight requests.
pub type Fd = Arc<OwnedFd>;

/// A name, allocated once per resolution and shared by the node and its layer objects.
pub type Name = Arc<OsStr>;

/// The lower objects of a node: a file has at most one (two for a lower metacopy), kept
/// inline without a heap allocation; merged directories may spill to the heap.
pub type Lowers = SmallVec<[(usize, Obj); 1]>;

/// How a node reaches one of its layer objects. Directories keep an fd open; other files are
/// reached by name inside their (held) parent directory, so a tree of many files costs no fd
/// per file. A file whose name goes away while the kernel may still use it is pinned to an fd.
#[derive(Debug, Clone)]
pub enum Obj {
    /// An fd held open (directories, pinned or anonymous files).
    Fd(Fd),
    /// `name` inside the directory fd.
    At(Fd, Name),
}

/// An fd borrowed from an [`Obj`] or opened for the occasion.
#[derive(Debug)]
pub enum FdHold {
    /// Shared with the node.
    Shared(Fd),
    /// Opened now (O_PATH | O_NOFOLLOW), closed on drop.
    Own(OwnedFd),
}

impl AsRawFd for FdHold {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            FdHold::Shared(f) => f.as_raw_fd(),
            FdHold::Own(f) => f.as_raw_fd(),
        }
    }
}

impl Obj {
    /// `name` inside the directory `dir`.
    pub fn at(dir: Fd, name: &OsStr) -> Obj {
        Obj::At(dir, Arc::from(name))
    }

    /// An `O_PATH` (or directory) fd on the object.
    pub fn fd(&self) -> io::Result<FdHold> {
        match self {
            Obj::Fd(f) => Ok(FdHold::Shared(f.clone())),
            Obj::At(d, n) => sys::open_path(d.as_raw_fd(), n).map(FdHold::Own),
        }
    }

    /// Reads xattr `attr` of the object (`None` when absent).
    pub fn getxattr(&self, attr: &std::ffi::CStr) -> io::Result<Option<Vec<u8>>> {
        if let Obj::At(d, n) = self {
            match sys::getxattrat(d.as_raw_fd(), n, attr) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
                r => return r,
            }
        }
        sys::getxattr_fd(self.fd()?.as_raw_fd(), attr)
    }

    /// lstat of the object.
    pub fn stat(&self) -> io::Result<libc::stat> {
        match self {
            Obj::Fd(f) => sys::fstat(f.as_raw_fd()),
            Obj::At(d, n) => sys::lstatat(d.as_raw_fd(), n),
        }
    }

    /// Opens the (regular) file for I/O with `flags`, never following a symlink.
    pub fn open(&self, flags: i32) -> io::Result<OwnedFd> {
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        match self {
            Obj::Fd(f) => sys::reopen(f.as_raw_fd(), flags),
            Obj::At(d, n) => sys::openat(d.as_raw_fd(), n, flags | libc::O_NOFOLLOW, 0),
        }
    }

    /// [`Obj::open`] with O_NOATIME where permitted (reads of lower layers).
    pub fn open_noatime(&self, flags: i32) -> io::Result<OwnedFd> {
        match self.open(flags | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self.open(flags),
            r => r,
        }
    }

    /// The directory fd, for objects that are directories.
    pub fn dir(&self) -> io::Result<&Fd> {
        match self {
            Obj::Fd(f) => Ok(f),
            Obj::At(..) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }

    /// Turns a by-name reference into a held fd (before the name goes away while open).
    pub fn pin(&mut self) {
        if let Obj::At(d, n) = self {
            if let Ok(f) = sys::open_path(d.as_raw_fd(), n) {
                *self = Obj::Fd(Arc::new(f));
            }
        }
    }
}

/// What a node is made of, in the layers.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// nodeid of the parent it was last seen in (dirs: its only parent).
    pub parent: u64,
    /// Name in that parent (shared with the `Obj::At` objects made by the same resolution).
    pub name: Name,
    /// The upper object. For hard-linked files it may be reached through the index rather
    /// than at `parent/name`.
    pub upper: Option<Obj>,
    /// Directories: the merged lower directories (layer index, dir), top first. Non-dirs: the
    /// lower file holding the data (at most one; two for a lower metacopy).
    pub lowers: Lowers,
    /// Absolute path of this object inside the lower layers. Kept for directories and for
    /// objects found through a redirect; a plain lower file's path is its parent's path plus
    /// its name ([`crate::UnionFs::lower_path_of`]).
    pub lower_path: Option<PathBuf>,
    /// Upper file holds metadata only; data still comes from `lowers[0]`.
    pub metacopy: bool,
    /// No upper, and `lowers[0]` is a metacopy file whose data is `lowers[1]`.
    pub lower_metacopy: bool,
    /// Whether a lower layer shows `name` in `parent` (so removing or renaming the name away
    /// needs a whiteout); `None` when the resolution did not look (an upper file hides them).
    pub in_lower: Option<bool>,
    /// Link count of the lower file when it was resolved without an upper (lowers never
    /// change while mounted); 0 when unknown.
    pub lower_nlink: u32,
    /// Origin (dev, ino) of the object (the lower one it was copied from, or its own).
    pub origin: (u64, u64),
    /// Names of a lower-only file removed through the mount (for nlink).
    pub removed_links: u32,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            parent: 0,
            name: Arc::from(OsStr::new("")),
            upper: None,
            lowers: Lowers::new(),
            lower_path: None,
            metacopy: false,
            lower_metacopy: false,
            in_lower: None,
            lower_nlink: 0,
            origin: (0, 0),
            removed_links: 0,
        }
    }
}

impl NodeState {
    /// The object holding the attributes: upper if any, else the top lower.
    pub fn meta(&self) -> Option<&Obj> {
        self.upper.as_ref().or(self.lowers.first().map(|l| &l.1))
    }

    /// The object holding file data (the lower one for a metacopy).
    pub fn data(&self) -> Option<&Obj> {
        if self.metacopy {
            self.lowers.first().map(|l| &l.1)
        } else if self.upper.is_none() && self.lower_metacopy {
            self.lowers.get(1).map(|l| &l.1)
        } else {
            self.meta()
        }
    }

    /// The upper directory fd of a directory node.
    pub fn upper_dir(&self) -> Option<&Fd> {
        self.upper.as_ref().and_then(|u| u.dir().ok())
    }

    /// The lower directory fds of a directory node, top first.
    pub fn lower_dirs(&self) -> impl Iterator<Item = &Fd> {
        self.lowers.iter().filter_map(|l| l.1.dir().ok())
    }

    /// True when this is a directory merged from more than one layer.
    pub fn is_merged(&self) -> bool {
        self.lowers.len() + usize::from(self.upper.is_some()) > 1
    }
}

/// Passthrough backing state of a file node.
#[derive(Debug, Default)]
pub struct Backing {
    /// The backing id shared by every open handle, and whether it was made from the upper.
    pub id: Option<(Arc<fuser::BackingId>, bool)>,
    /// Number of open handles using it.
    pub users: usize,
}

/// One inode as the kernel sees it.
#[derive(Debug)]
pub struct Node {
    /// FUSE nodeid == st_ino reported.
    pub ino: u64,
    /// File type (never changes).
    pub kind: FileType,
    /// Kernel lookup count.
    pub lookups: AtomicU64,
    /// Layer state.
    pub st: RwLock<NodeState>,
    /// Serializes copy-up of this node.
    pub copy_lock: Mutex<()>,
    /// Set when the last name is gone (an open file then reports nlink 0).
    pub unlinked: AtomicBool,
    /// Passthrough backing id.
    pub backing: Mutex<Backing>,
    /// Open file handles on this node.
    pub opens: std::sync::atomic::AtomicUsize,
    /// Directories: which of its layer directories were scanned for `.wh.` names (bit i, low
    /// half) and found free of them (bit i, high half); i = 0 the upper, 1 + k `lowers[k]`.
    pub wh_scan: AtomicU64,
    /// Directories: lookups of missing names in it that had to ask for a `.wh.` file.
    pub wh_misses: AtomicU32,
}

impl Node {
    /// The object holding its attributes (upper, else top lower); `ESTALE` when it has none.
    pub fn meta_obj(&self) -> io::Result<Obj> {
        self.st
            .read()
            .meta()
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// A new node with a zero lookup count.
    pub fn new(ino: u64, kind: FileType, st: NodeState) -> Node {
        Node {
            ino,
            kind,
            lookups: AtomicU64::new(0),
            st: RwLock::new(st),
            copy_lock: Mutex::new(()),
            unlinked: AtomicBool::new(false),
            backing: Mutex::new(Backing::default()),
            opens: std::sync::atomic::AtomicUsize::new(0),
            wh_scan: AtomicU64::new(0),
            wh_misses: AtomicU32::new(0),
        }
    }
}

const SHARDS: usize = 64;

/// nodeid -> node, in shards; plus origin -> allocated nodeid for fallbacks.
#[derive(Debug)]
pub struct NodeTable {
    shards: Vec<RwLock<HashMap<u64, Arc<Node>>>>,
    /// hash of (parent nodeid, name) -> nodeid of the node last seen under that name. A hint:
    /// [`NodeTable::by_name`] checks it against the node's own parent and name.
    names: Vec<RwLock<HashMap<u64, u64>>>,
    /// (dev, ino) origins that got an allocated number instead of the composed one.
    pub alias: RwLock<HashMap<(u64, u64), u64>>,
    next_alloc: AtomicU64,
    /// Nodes removed since the table started (every TRIM_EVERY, free heap goes back).
    removed: AtomicU64,
}

/// Removed nodes after which freed heap memory is handed back to the system.
const TRIM_EVERY: u64 = 16 * 1024;

/// Gives free heap memory back to the system (after the kernel forgot many nodes).
fn trim_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory; it takes
    // no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            names: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            alias: RwLock::new(HashMap::new()),
            next_alloc: AtomicU64::new(1),
            removed: AtomicU64::new(0),
        }
    }
}

impl NodeTable {
    fn shard(&self, ino: u64) -> &RwLock<HashMap<u64, Arc<Node>>> {
        let h = ino ^ (ino >> 17) ^ (ino >> 48);
        &self.shards[(h as usize) % SHARDS]
    }

    /// The node with this nodeid.
    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.shard(ino).read().get(&ino).cloned()
    }

    /// Inserts `node` unless one with its number exists; returns the one in the table.
    pub fn insert(&self, node: Node) -> Arc<Node> {
        let mut w = self.shard(node.ino).write();
        w.entry(node.ino).or_insert_with(|| Arc::new(node)).clone()
    }

    /// [`NodeTable::insert`], and whether `node` went in (false: another was there).
    pub fn insert_new(&self, node: Node) -> (Arc<Node>, bool) {
        let mut w = self.shard(node.ino).write();
        let mut new = false;
        let n = w
            .entry(node.ino)
            .or_insert_with(|| {
                new = true;
                Arc::new(node)
            })
            .clone();
        (n, new)
    }

    /// Counts one more kernel reference to `node` and makes sure the table holds it (a racing
    /// forget may have dropped it between its lookup and this reply).
    pub fn add_lookup(&self, node: &Arc<Node>) {
        node.lookups.fetch_add(1, Ordering::AcqRel);
        if let Some(n) = self.shard(node.ino).read().get(&node.ino) {
            if Arc::ptr_eq(n, node) {
                return;
            }
        }
        self.shard(node.ino)
            .write()
            .entry(node.ino)
            .or_insert_with(|| node.clone());
    }

    /// Removes a node whose lookup count dropped to zero.
    pub fn remove_if_unused(&self, ino: u64) {
        let mut w = self.shard(ino).write();
        if let Some(n) = w.get(&ino) {
            if n.lookups.load(Ordering::Acquire) == 0 {
                let n = w.remove(&ino).expect("present");
                drop(w);
                let (origin, parent, name) = {
                    let st = n.st.read();
                    (st.origin, st.parent, st.name.clone())
                };
                self.unset_name(parent, &name, ino);
                {
                    let mut a = self.alias.write();
                    if a.get(&origin) == Some(&ino) {
                        a.remove(&origin);
                    }
                }
                drop(n);
                if self.removed.fetch_add(1, Ordering::Relaxed) % TRIM_EVERY == TRIM_EVERY - 1 {
                    trim_heap();
                }
            }
        }
    }

    fn name_key(parent: u64, name: &OsStr) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        parent.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }

    fn names_shard(&self, key: u64) -> &RwLock<HashMap<u64, u64>> {
        &self.names[(key >> 58) as usize % SHARDS]
    }

    /// Records that `parent/name` shows node `ino`.
    pub fn set_name(&self, parent: u64, name: &OsStr, ino: u64) {
        let key = Self::name_key(parent, name);
        self.names_shard(key).write().insert(key, ino);
    }

    /// Forgets that `parent/name` shows node `ino` (the name went away or moved).
    pub fn unset_name(&self, parent: u64, name: &OsStr, ino: u64) {
        let key = Self::name_key(parent, name);
        let mut w = self.names_shard(key).write();
        if w.get(&key) == Some(&ino) {
            w.remove(&key);
        }
    }

    /// The live node the name `parent/name` currently shows, if the table knows it. Every
    /// change of a name goes through the mount and updates the node (lowers never change,
    /// the upper only through the mount), so no layer needs to be looked at.
    pub fn by_name(&self, parent: u64, name: &OsStr) -> Option<Arc<Node>> {
        let key = Self::name_key(parent, name);
        let ino = *self.names_shard(key).read().get(&key)?;
        let n = self.get(ino)?;
        if n.unlinked.load(Ordering::Acquire) {
            return None;
        }
        let st = n.st.read();
        let ok = st.parent == parent && &*st.name == name;
        drop(st);
        ok.then_some(n)
    }

    /// A fresh number outside every composed range.
    pub fn alloc(&self) -> u64 {
        (0xffffu64 << crate::layer::INO_BITS) | self.next_alloc.fetch_add(1, Ordering::Relaxed)
    }
}
