//! The inode table: one [`Node`] per FUSE nodeid the kernel may hold, sharded for concurrency.

use fuser::FileType;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// An fd shared between a node and in-flight requests.
pub type Fd = Arc<OwnedFd>;

/// What a node is made of, in the layers.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// nodeid of the parent it was last seen in (dirs: its only parent).
    pub parent: u64,
    /// Name in that parent.
    pub name: OsString,
    /// The upper inode (O_PATH for non-dirs, a directory fd for dirs). For hard-linked files
    /// this may be reached through the index rather than at `parent/name`.
    pub upper: Option<Fd>,
    /// Directories: the merged lower directories (layer index, fd), top first. Non-dirs: the
    /// lower file holding the data (at most one).
    pub lowers: Vec<(usize, Fd)>,
    /// Absolute path of this object inside the lower layers (for redirects), if it has any.
    pub lower_path: Option<PathBuf>,
    /// Upper file holds metadata only; data still comes from `lowers[0]`.
    pub metacopy: bool,
    /// Origin (dev, ino) of the object (the lower one it was copied from, or its own).
    pub origin: (u64, u64),
    /// Names of a lower-only file removed through the mount (for nlink).
    pub removed_links: u32,
}

impl NodeState {
    /// The fd holding the data/attributes: upper unless metacopy (attributes still upper).
    pub fn meta_fd(&self) -> Option<RawFd> {
        self.upper
            .as_ref()
            .or(self.lowers.first().map(|l| &l.1))
            .map(|f| f.as_raw_fd())
    }

    /// The fd holding file data.
    pub fn data_fd(&self) -> Option<RawFd> {
        if self.metacopy {
            self.lowers.first().map(|l| l.1.as_raw_fd())
        } else {
            self.meta_fd()
        }
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
}

impl Node {
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
        }
    }
}

const SHARDS: usize = 64;

/// nodeid -> node, in shards; plus origin -> allocated nodeid for fallbacks.
#[derive(Debug)]
pub struct NodeTable {
    shards: Vec<RwLock<HashMap<u64, Arc<Node>>>>,
    /// (dev, ino) origins that got an allocated number instead of the composed one.
    pub alias: RwLock<HashMap<(u64, u64), u64>>,
    next_alloc: AtomicU64,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            alias: RwLock::new(HashMap::new()),
            next_alloc: AtomicU64::new(1),
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

    /// Removes a node whose lookup count dropped to zero.
    pub fn remove_if_unused(&self, ino: u64) {
        let mut w = self.shard(ino).write();
        if let Some(n) = w.get(&ino) {
            if n.lookups.load(Ordering::Acquire) == 0 {
                let n = w.remove(&ino).expect("present");
                drop(w);
                let origin = n.st.read().origin;
                let mut a = self.alias.write();
                if a.get(&origin) == Some(&ino) {
                    a.remove(&origin);
                }
            }
        }
    }

    /// A fresh number outside every composed range.
    pub fn alloc(&self) -> u64 {
        (0xffffu64 << crate::layer::INO_BITS) | self.next_alloc.fetch_add(1, Ordering::Relaxed)
    }
}
