//! Merged directory listings kept per directory and shared by its open handles.
//!
//! Building a merged listing reads every layer of the directory; the result is kept (keyed by
//! the directory's nodeid, checked against the node object) until an operation through the
//! mount changes the directory ([`DirCache::changed`]) or the node goes away. Lowers never
//! change while mounted and the upper changes only through the mount, so a kept listing stays
//! exact until then.
//!
//! Every entry's offset (the readdir cookie) is derived from its name, and a listing is sorted
//! by it: a reader that continues at an offset gets the entries after it in *any* version of
//! the listing, so an entry that neither appeared nor vanished meanwhile is returned exactly
//! once — across seekdir/telldir, across a listing rebuilt after a change, and across the
//! kernel's own readdir cache (FOPEN_CACHE_DIR), which stores these offsets.

use crate::node::Node;
use fuser::FileType;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

/// Offset of `.`.
const OFF_DOT: u64 = 1;
/// Offset of `..`.
const OFF_DOTDOT: u64 = 2;
/// First offset a named entry may get.
const OFF_FIRST: u64 = 3;
/// Offsets stay below 2^62 (the kernel's `loff_t` is signed; leave room for collisions).
const OFF_MASK: u64 = (1 << 62) - 1;

/// Entries (summed over listings) kept; beyond this the least recently used listings are
/// dropped (open handles keep theirs). About 64 bytes each: 1 MiB at most. Small on purpose:
/// the kernel caches listings itself (FOPEN_CACHE_DIR), so a kept listing mostly serves the
/// readdir calls of one listing pass, and the server's memory after a big walk must stay low.
const MAX_KEPT_ENTRIES: usize = 16 * 1024;

/// One visible entry of a merged directory.
#[derive(Debug)]
pub struct Entry {
    /// readdir offset (cookie) of this entry; entries are sorted by it.
    pub off: u64,
    /// Name.
    pub name: OsString,
    /// File type (d_type).
    pub kind: FileType,
}

/// A merged listing: `.`, `..`, then every visible name, in offset order.
#[derive(Debug)]
pub struct Listing {
    /// The entries, sorted by `off`, unique offsets.
    pub entries: Vec<Entry>,
}

impl Listing {
    /// Builds a listing from the visible names of a directory (without `.` and `..`).
    pub fn new(names: Vec<(OsString, FileType)>) -> Listing {
        let mut entries = Vec::with_capacity(names.len() + 2);
        entries.push(Entry {
            off: OFF_DOT,
            name: ".".into(),
            kind: FileType::Directory,
        });
        entries.push(Entry {
            off: OFF_DOTDOT,
            name: "..".into(),
            kind: FileType::Directory,
        });
        let first = entries.len();
        entries.extend(names.into_iter().map(|(name, kind)| Entry {
            off: name_offset(&name),
            name,
            kind,
        }));
        let rest = &mut entries[first..];
        rest.sort_unstable_by(|a, b| a.off.cmp(&b.off).then_with(|| a.name.cmp(&b.name)));
        // Two names with one hash (very rare): later ones move up to the next free offset.
        for i in 1..rest.len() {
            if rest[i].off <= rest[i - 1].off {
                rest[i].off = rest[i - 1].off + 1;
            }
        }
        Listing { entries }
    }

    /// Index of the first entry after offset `off` (0 = from the start).
    pub fn start(&self, off: u64) -> usize {
        self.entries.partition_point(|e| e.off <= off)
    }

    /// Number of visible names (without `.` and `..`).
    pub fn names(&self) -> usize {
        self.entries.len() - 2
    }
}

/// The offset of a name: a hash in `[OFF_FIRST, 2^62)`, the same in every listing.
fn name_offset(name: &OsStr) -> u64 {
    // SipHash with fixed keys: deterministic for the life of the mount.
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    let v = h.finish() & OFF_MASK;
    v.max(OFF_FIRST)
}

struct Kept {
    node: Weak<Node>,
    listing: Arc<Listing>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<u64, Kept>,
    /// Sum of `names()` over `map`.
    total: usize,
    /// Bumped by every change: a listing built across a change is not kept.
    epoch: u64,
    tick: u64,
}

/// The per-directory listing cache.
#[derive(Default)]
pub struct DirCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DirCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.inner.lock();
        f.debug_struct("DirCache")
            .field("dirs", &i.map.len())
            .field("entries", &i.total)
            .finish()
    }
}

impl DirCache {
    /// The kept listing of directory `node`, if any.
    pub fn get(&self, node: &Arc<Node>) -> Option<Arc<Listing>> {
        let mut i = self.inner.lock();
        i.tick += 1;
        let tick = i.tick;
        let k = i.map.get_mut(&node.ino)?;
        if !std::ptr::eq(k.node.as_ptr(), Arc::as_ptr(node)) {
            // Another node object now has this number: the listing is not its.
            let k = i.map.remove(&node.ino).expect("present");
            i.total -= k.listing.names();
            return None;
        }
        k.used = tick;
        Some(k.listing.clone())
    }

    /// The current epoch: pass it to [`DirCache::keep`] with a listing built after this call.
    pub fn epoch(&self) -> u64 {
        self.inner.lock().epoch
    }

    /// Keeps `listing` for `node` unless some directory changed since `epoch` (the listing
    /// might then miss that change).
    pub fn keep(&self, node: &Arc<Node>, listing: &Arc<Listing>, epoch: u64) {
        let mut i = self.inner.lock();
        if i.epoch != epoch {
            return;
        }
        i.tick += 1;
        let used = i.tick;
        i.total += listing.names();
        let old = i.map.insert(
            node.ino,
            Kept {
                node: Arc::downgrade(node),
                listing: listing.clone(),
                used,
            },
        );
        if let Some(o) = old {
            i.total -= o.listing.names();
        }
        if i.total > MAX_KEPT_ENTRIES {
            Self::evict(&mut i, node.ino);
        }
    }

    /// Drops least recently used listings (never `keep_ino`'s) until the bound holds again.
    fn evict(i: &mut Inner, keep_ino: u64) {
        let mut by_age: Vec<(u64, u64)> = i
            .map
            .iter()
            .filter(|(ino, _)| **ino != keep_ino)
            .map(|(ino, k)| (k.used, *ino))
            .collect();
        by_age.sort_unstable();
        // Drop down to three quarters of the bound, so eviction runs rarely.
        let target = MAX_KEPT_ENTRIES / 4 * 3;
        for (_, ino) in by_age {
            if i.total <= target {
                break;
            }
            if let Some(k) = i.map.remove(&ino) {
                i.total -= k.listing.names();
            }
        }
    }

    /// The directory `ino` changed (or went away): its kept listing is dropped, and listings
    /// being built right now are not kept.
    pub fn changed(&self, ino: u64) {
        let mut i = self.inner.lock();
        i.epoch += 1;
        if let Some(k) = i.map.remove(&ino) {
            i.total -= k.listing.names();
        }
    }

    /// The kernel forgot node `ino`: its listing goes (no change to the directory).
    pub fn forget(&self, ino: u64) {
        let mut i = self.inner.lock();
        if let Some(k) = i.map.remove(&ino) {
            i.total -= k.listing.names();
        }
    }
}

/// An open directory: the listing it reads (taken at the first readdir, renewed by a readdir
/// from offset 0, i.e. after opendir or rewinddir).
#[derive(Debug)]
pub struct DirHandle {
    /// The directory's node.
    pub node: Arc<Node>,
    /// The listing this handle reads.
    pub listing: Mutex<Option<Arc<Listing>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<(OsString, FileType)> {
        v.iter()
            .map(|n| (OsString::from(n), FileType::RegularFile))
            .collect()
    }

    #[test]
    fn offsets_are_stable_across_versions() {
        let a = Listing::new(names(&["a", "b", "c", "d", "e"]));
        let b = Listing::new(names(&["a", "c", "e", "f"]));
        let off_of = |l: &Listing, n: &str| l.entries.iter().find(|e| e.name == n).unwrap().off;
        for n in ["a", "c", "e"] {
            assert_eq!(off_of(&a, n), off_of(&b, n));
        }
        assert_eq!(a.entries[0].off, OFF_DOT);
        assert_eq!(a.entries[1].off, OFF_DOTDOT);
        assert!(a.entries.windows(2).all(|w| w[0].off < w[1].off));
        // Continuing in the new version after an entry seen in the old one: every entry that
        // is in both and comes later is returned once.
        let cut = 3;
        let seen: Vec<_> = a.entries[..cut].iter().map(|e| e.name.clone()).collect();
        let rest: Vec<_> = b.entries[b.start(a.entries[cut - 1].off)..]
            .iter()
            .map(|e| e.name.clone())
            .collect();
        for n in ["a", "c", "e"] {
            let count = seen.iter().chain(&rest).filter(|x| *x == n).count();
            assert_eq!(count, 1, "{n}");
        }
        assert_eq!(a.start(0), 0);
        assert_eq!(a.start(OFF_DOTDOT), 2);
        assert_eq!(a.start(u64::MAX), a.entries.len());
    }

    #[test]
    fn eviction_bounds_memory() {
        let c = DirCache::default();
        let mut nodes = Vec::new();
        for ino in 0..10u64 {
            let n = Arc::new(Node::new(
                ino + 10,
                FileType::Directory,
                crate::node::NodeState::default(),
            ));
            let many: Vec<String> = (0..4000).map(|i| format!("n{i}")).collect();
            let refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
            let l = Arc::new(Listing::new(names(&refs)));
            c.keep(&n, &l, c.epoch());
            nodes.push(n);
        }
        let total = c.inner.lock().total;
        assert!(total <= MAX_KEPT_ENTRIES, "{total}");
        assert!(c.get(nodes.last().unwrap()).is_some(), "newest kept");
        assert!(c.get(&nodes[0]).is_none(), "oldest dropped");
        // A listing built across a change is not kept.
        let e = c.epoch();
        c.changed(999);
        let l = Arc::new(Listing::new(names(&["x"])));
        c.keep(&nodes[1], &l, e);
        assert!(c.get(&nodes[1]).is_none());
        // Another node with the same number does not see the listing.
        let n = &nodes[9];
        let other = Arc::new(Node::new(n.ino, FileType::Directory, Default::default()));
        assert!(c.get(&other).is_none());
    }
}
