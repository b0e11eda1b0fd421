//! Host layers: a read-only layer built from host programs and every shared library they load.
//!
//! [`build`] follows each program's ELF interpreter (`PT_INTERP`) and `DT_NEEDED` libraries
//! recursively, searching `DT_RPATH`/`DT_RUNPATH` (with `$ORIGIN`), `/etc/ld.so.cache` and the
//! standard and multiarch directories, the way the dynamic loader does. Scripts bring their `#!`
//! interpreter. Files are copied to the layer at their host paths; symlinks on the way
//! (`/bin -> usr/bin`, `/lib64/ld-linux-x86-64.so.2 -> ...`) are recreated as symlinks. When a
//! program is busybox, a link to it is made for each of its applets (`sh`, `ls`, ...) that is
//! not already there. The layer also gets the empty mountpoints a rootfs needs: `/proc`,
//! `/dev`, `/sys`, `/tmp` (mode 1777), `/run`.
//!
//! Layers are cached under `cache_root/<hash>`, where the hash covers every file's path, size,
//! mtime and inode, so an upgraded library gives a new layer. A layer is built in a temporary
//! directory and renamed into place, so concurrent runs and crashes never expose half a layer.
//!
//! [`skeleton`] builds the small bottom layer with `/etc/passwd`, `/etc/group` and `/etc/hosts`
//! that a rootfs made only of host layers lacks; the runtime puts it below all other layers so
//! a base image's own files win.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// Bumped whenever the layout of a built layer changes, so old cache entries are not reused.
const FORMAT: &str = "rcl-hostlayer-1";

/// Builds (or finds in the cache) the layer holding `programs` and their shared libraries, and
/// returns its directory `cache_root/<hash>`. Each program must be an absolute path.
pub fn build(programs: &[PathBuf], cache_root: &Path) -> Result<PathBuf> {
    if programs.is_empty() {
        bail!("a host layer needs at least one program");
    }
    for p in programs {
        if !p.is_absolute() {
            bail!("host program {} is not an absolute path", p.display());
        }
    }
    let files = closure(programs)?;
    let key = fingerprint(programs, &files)?;
    let dest = cache_root.join(&key);
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(cache_root)
        .with_context(|| format!("cannot create the layer cache {}", cache_root.display()))?;
    sweep_stale(cache_root);
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(cache_root)
        .with_context(|| {
            format!(
                "cannot create a temporary layer in {}",
                cache_root.display()
            )
        })?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))?;
    let mut placer = Placer {
        layer: tmp.path().to_path_buf(),
    };
    for f in &files {
        placer
            .place(f, 0)
            .with_context(|| format!("cannot copy {} into the host layer", f.display()))?;
    }
    for p in programs {
        if fs::canonicalize(p)?.file_name() == Some("busybox".as_ref()) {
            let real = placer.place(p, 0)?;
            busybox_applets(p, &tmp.path().join(rel(&real)))?;
        }
    }
    mountpoints(tmp.path())?;
    publish(tmp, &dest)?;
    Ok(dest)
}

/// Builds (or finds) the bottom layer every rootfs can use: mountpoints, `/root`, and minimal
/// `/etc/passwd` (root, nobody), `/etc/group` (root, nogroup) and `/etc/hosts` (localhost).
/// Returns `cache_root/skeleton-<version>`.
pub fn skeleton(cache_root: &Path) -> Result<PathBuf> {
    let dest = cache_root.join(format!("skeleton-{FORMAT}"));
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(cache_root)
        .with_context(|| format!("cannot create the layer cache {}", cache_root.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(cache_root)?;
    let root = tmp.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    mountpoints(root)?;
    for (dir, mode) in [
        ("etc", 0o755),
        ("root", 0o700),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        let p = root.join(dir);
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    ];
    for (name, text) in files {
        let p = root.join(name);
        fs::write(&p, text)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))?;
    }
    publish(tmp, &dest)?;
    Ok(dest)
}

/// Renames the finished temporary layer to `dest`; if another process won the race, keeps its
/// layer and drops ours.
fn publish(tmp: tempfile::TempDir, dest: &Path) -> Result<()> {
    match fs::rename(tmp.path(), dest) {
        Ok(()) => {
            // The directory now lives at `dest`: do not let TempDir delete it.
            let _ = tmp.keep();
            Ok(())
        }
        Err(_) if dest.is_dir() => Ok(()), // TempDir's drop removes our copy.
        Err(e) => Err(e).with_context(|| format!("cannot move the layer to {}", dest.display())),
    }
}

/// Removes temporary layers that a crashed build left behind (older than an hour, so a build
/// still running elsewhere is never touched). Best effort.
fn sweep_stale(cache_root: &Path) {
    let Ok(entries) = fs::read_dir(cache_root) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(".building-") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Empty mountpoints a rootfs needs.
fn mountpoints(root: &Path) -> Result<()> {
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
    ] {
        let p = root.join(dir);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// `/a/b` -> `a/b`.
fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// Links every applet of the busybox at `host` (placed at `placed`) next to it, unless a file of
/// that name is already in the layer.
fn busybox_applets(host: &Path, placed: &Path) -> Result<()> {
    let out = Command::new(host)
        .arg("--list")
        .output()
        .with_context(|| format!("cannot run {} --list", host.display()))?;
    if !out.status.success() {
        return Ok(()); // Not a busybox that lists applets: nothing to add.
    }
    let dir = placed
        .parent()
        .ok_or_else(|| anyhow!("busybox has no parent"))?;
    let target = placed
        .file_name()
        .ok_or_else(|| anyhow!("busybox has no name"))?;
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name == "busybox" || name.starts_with('.') {
            continue;
        }
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(target, &link)
                .with_context(|| format!("cannot link applet {}", link.display()))?;
        }
    }
    Ok(())
}

/// Copies host paths into a layer, recreating symlinks on the way.
struct Placer {
    layer: PathBuf,
}

impl Placer {
    /// Places `host` (absolute) and everything on its path; returns the final real host path.
    fn place(&mut self, host: &Path, depth: u32) -> Result<PathBuf> {
        if depth > 40 {
            bail!("too many levels of symbolic links at {}", host.display());
        }
        let comps: Vec<Component> = host.components().collect();
        let mut cur = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            let n = match c {
                Component::Normal(n) => n,
                Component::ParentDir => {
                    cur.pop();
                    continue;
                }
                _ => continue,
            };
            let next = cur.join(n);
            let meta = fs::symlink_metadata(&next)
                .with_context(|| format!("cannot stat {}", next.display()))?;
            let dst = self.layer.join(rel(&next));
            let last = i + 1 == comps.len();
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&next)?;
                if fs::symlink_metadata(&dst).is_err() {
                    std::os::unix::fs::symlink(&target, &dst)
                        .with_context(|| format!("cannot create symlink {}", dst.display()))?;
                }
                let rest: PathBuf = comps[i + 1..].iter().collect();
                let resolved = if target.is_absolute() {
                    target.join(rest)
                } else {
                    cur.join(target).join(rest)
                };
                return self.place(&resolved, depth + 1);
            } else if ft.is_dir() {
                if fs::symlink_metadata(&dst).is_err() {
                    fs::create_dir(&dst)
                        .with_context(|| format!("cannot create {}", dst.display()))?;
                    fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
                }
                cur = next;
            } else if ft.is_file() {
                if !last {
                    bail!("{} is not a directory", next.display());
                }
                if fs::symlink_metadata(&dst).is_err() {
                    fs::copy(&next, &dst).with_context(|| {
                        format!("cannot copy {} to {}", next.display(), dst.display())
                    })?;
                    // Plain permission bits only: set-id bits mean nothing in a host layer.
                    fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o777))?;
                }
                return Ok(next);
            } else {
                bail!(
                    "{} is not a regular file, directory or symlink",
                    next.display()
                );
            }
        }
        Ok(cur)
    }
}

/// Every host path the programs need: themselves, `#!` interpreters, ELF interpreters and
/// shared libraries, recursively. Paths are as the loader would open them (symlinks kept).
fn closure(programs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let cache = LdCache::load();
    let mut out: BTreeSet<PathBuf> = BTreeSet::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut work: Vec<(PathBuf, Vec<PathBuf>)> =
        programs.iter().map(|p| (p.clone(), Vec::new())).collect();
    while let Some((path, inherited_rpath)) = work.pop() {
        let real =
            fs::canonicalize(&path).with_context(|| format!("cannot find {}", path.display()))?;
        out.insert(path.clone());
        if !seen.insert(real.clone()) {
            continue;
        }
        let mut head = [0u8; 256];
        let n = File::open(&real)
            .and_then(|mut f| f.read(&mut head))
            .with_context(|| format!("cannot read {}", path.display()))?;
        let head = &head[..n];
        if let Some(interp) = shebang(head) {
            work.push((interp, Vec::new()));
            continue;
        }
        if !head.starts_with(b"\x7fELF") {
            continue; // Data or an unknown format: copied as is.
        }
        let elf =
            Elf::read(&real).with_context(|| format!("cannot parse ELF {}", path.display()))?;
        if let Some(interp) = &elf.interp {
            work.push((PathBuf::from(interp), Vec::new()));
        }
        let origin = path.parent().unwrap_or(Path::new("/"));
        let expand = |list: &[String]| -> Vec<PathBuf> {
            list.iter()
                .flat_map(|s| s.split(':'))
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let lib = if elf.class64 { "lib64" } else { "lib" };
                    PathBuf::from(
                        s.replace("${ORIGIN}", &origin.to_string_lossy())
                            .replace("$ORIGIN", &origin.to_string_lossy())
                            .replace("${LIB}", lib)
                            .replace("$LIB", lib),
                    )
                })
                .collect()
        };
        // DT_RPATH applies only when there is no DT_RUNPATH: the object's own first, then
        // its loaders' (each expanded with its own $ORIGIN), up to the executable.
        let mut rpath_chain = Vec::new();
        if elf.runpath.is_empty() {
            rpath_chain.extend(expand(&elf.rpath));
        }
        rpath_chain.extend(inherited_rpath.iter().cloned());
        let mut dirs: Vec<PathBuf> = Vec::new();
        if elf.runpath.is_empty() {
            dirs.extend(rpath_chain.iter().cloned());
        }
        dirs.extend(expand(&elf.runpath));
        for lib in &elf.needed {
            let found = if lib.contains('/') {
                let p = PathBuf::from(lib);
                p.exists().then_some(p)
            } else {
                dirs.iter()
                    .map(|d| d.join(lib))
                    .chain(cache.lookup(lib))
                    .chain(default_dirs(elf.class64).into_iter().map(|d| d.join(lib)))
                    .find(|c| elf.compatible(c))
            };
            let found = found.ok_or_else(|| {
                anyhow!(
                    "{} needs {lib}, which is not found on this host",
                    path.display()
                )
            })?;
            work.push((found, rpath_chain.clone()));
        }
    }
    Ok(out.into_iter().collect())
}

/// The interpreter of a `#!` script (absolute paths only).
fn shebang(head: &[u8]) -> Option<PathBuf> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim();
    let interp = line.split_whitespace().next()?;
    interp.starts_with('/').then(|| PathBuf::from(interp))
}

/// The loader's built-in directories, multiarch first.
fn default_dirs(class64: bool) -> Vec<PathBuf> {
    let triple = match std::env::consts::ARCH {
        "x86_64" if class64 => "x86_64-linux-gnu",
        "x86_64" | "x86" => "i386-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => other,
    };
    let mut v = vec![
        PathBuf::from(format!("/lib/{triple}")),
        PathBuf::from(format!("/usr/lib/{triple}")),
    ];
    if class64 {
        v.push("/lib64".into());
        v.push("/usr/lib64".into());
    } else {
        v.push("/lib32".into());
        v.push("/usr/lib32".into());
    }
    v.push("/lib".into());
    v.push("/usr/lib".into());
    v
}

/// A stable hash of the inputs: format, programs, and every file's path, size, mtime, inode.
fn fingerprint(programs: &[PathBuf], files: &[PathBuf]) -> Result<String> {
    let mut h = Fnv2::new();
    h.add(FORMAT.as_bytes());
    for p in programs {
        h.add(b"P");
        h.add(p.as_os_str().as_encoded_bytes());
    }
    for f in files {
        let real = fs::canonicalize(f)?;
        let m = fs::metadata(&real)?;
        h.add(b"F");
        h.add(f.as_os_str().as_encoded_bytes());
        h.add(real.as_os_str().as_encoded_bytes());
        for n in [
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ino(),
            m.dev(),
            m.mode() as u64,
        ] {
            h.add(&n.to_le_bytes());
        }
    }
    Ok(h.hex())
}

/// Two 64-bit FNV-1a hashes with different seeds: a 128-bit, dependency-free cache key.
struct Fnv2([u64; 2]);

impl Fnv2 {
    fn new() -> Self {
        Fnv2([0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142])
    }

    fn add(&mut self, bytes: &[u8]) {
        // Length first, so concatenations of different fields never collide trivially.
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            for h in &mut self.0 {
                *h ^= u64::from(*b);
                *h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.0[0], self.0[1])
    }
}

/// What the loader needs to know about one ELF file.
#[derive(Debug, Default)]
pub(crate) struct Elf {
    class64: bool,
    little: bool,
    machine: u16,
    /// `PT_INTERP`.
    pub(crate) interp: Option<String>,
    /// `DT_NEEDED`, in order.
    pub(crate) needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

struct Reader<'a> {
    file: &'a File,
    little: bool,
}

impl Reader<'_> {
    fn bytes(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        if len > 64 << 20 {
            bail!("ELF table of {len} bytes is implausible");
        }
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, off)
            .context("truncated ELF file")?;
        Ok(buf)
    }

    fn uint(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        if self.little {
            for &x in b.iter().rev() {
                v = (v << 8) | u64::from(x);
            }
        } else {
            for &x in b {
                v = (v << 8) | u64::from(x);
            }
        }
        v
    }
}

struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

impl Elf {
    /// Reads the headers and dynamic section of the ELF file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Elf> {
        let file = File::open(path)?;
        let mut ident = [0u8; 64];
        file.read_exact_at(&mut ident[..52], 0)
            .context("too short for ELF")?;
        if &ident[..4] != b"\x7fELF" {
            bail!("not an ELF file");
        }
        let class64 = match ident[4] {
            1 => false,
            2 => true,
            c => bail!("unknown ELF class {c}"),
        };
        let little = match ident[5] {
            1 => true,
            2 => false,
            d => bail!("unknown ELF data encoding {d}"),
        };
        let hdr = if class64 {
            let mut h = [0u8; 64];
            file.read_exact_at(&mut h, 0).context("too short for ELF")?;
            h.to_vec()
        } else {
            ident[..52].to_vec()
        };
        let r = Reader {
            file: &file,
            little,
        };
        let machine = r.uint(&hdr[18..20]) as u16;
        let (phoff, phentsize, phnum) = if class64 {
            (
                r.uint(&hdr[32..40]),
                r.uint(&hdr[54..56]),
                r.uint(&hdr[56..58]),
            )
        } else {
            (
                r.uint(&hdr[28..32]),
                r.uint(&hdr[42..44]),
                r.uint(&hdr[44..46]),
            )
        };
        let mut elf = Elf {
            class64,
            little,
            machine,
            ..Elf::default()
        };
        let table = r.bytes(phoff, (phentsize * phnum) as usize)?;
        let mut phdrs = Vec::new();
        for i in 0..phnum as usize {
            let e = &table[i * phentsize as usize..(i + 1) * phentsize as usize];
            phdrs.push(if class64 {
                Phdr {
                    kind: r.uint(&e[0..4]) as u32,
                    offset: r.uint(&e[8..16]),
                    vaddr: r.uint(&e[16..24]),
                    filesz: r.uint(&e[32..40]),
                }
            } else {
                Phdr {
                    kind: r.uint(&e[0..4]) as u32,
                    offset: r.uint(&e[4..8]),
                    vaddr: r.uint(&e[8..12]),
                    filesz: r.uint(&e[16..20]),
                }
            });
        }
        if let Some(p) = phdrs.iter().find(|p| p.kind == PT_INTERP) {
            let b = r.bytes(p.offset, p.filesz as usize)?;
            let s = b.split(|&c| c == 0).next().unwrap_or(&[]);
            elf.interp = Some(String::from_utf8_lossy(s).into_owned());
        }
        let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else {
            return Ok(elf); // Static.
        };
        let dynb = r.bytes(dynamic.offset, dynamic.filesz as usize)?;
        let (esz, half) = if class64 { (16, 8) } else { (8, 4) };
        let mut entries = Vec::new();
        let (mut strtab, mut strsz) = (None, None);
        for e in dynb.chunks_exact(esz) {
            let tag = r.uint(&e[..half]);
            let val = r.uint(&e[half..]);
            match tag {
                0 => break,
                DT_STRTAB => strtab = Some(val),
                DT_STRSZ => strsz = Some(val),
                DT_NEEDED | DT_RPATH | DT_RUNPATH => entries.push((tag, val)),
                _ => {}
            }
        }
        if entries.is_empty() {
            return Ok(elf);
        }
        let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
            bail!("dynamic section without a string table");
        };
        let load = phdrs
            .iter()
            .find(|p| p.kind == PT_LOAD && p.vaddr <= strtab && strtab < p.vaddr + p.filesz)
            .ok_or_else(|| anyhow!("string table outside every loaded segment"))?;
        let strings = r.bytes(strtab - load.vaddr + load.offset, strsz as usize)?;
        for (tag, off) in entries {
            let s = strings
                .get(off as usize..)
                .and_then(|s| s.split(|&c| c == 0).next())
                .ok_or_else(|| anyhow!("dynamic string offset out of range"))?;
            let s = String::from_utf8_lossy(s).into_owned();
            match tag {
                DT_NEEDED => elf.needed.push(s),
                DT_RPATH => elf.rpath.push(s),
                _ => elf.runpath.push(s),
            }
        }
        Ok(elf)
    }

    /// True when `candidate` is an ELF file this object can load (same class, byte order and
    /// machine).
    fn compatible(&self, candidate: &Path) -> bool {
        let Ok(f) = File::open(candidate) else {
            return false;
        };
        let mut h = [0u8; 20];
        if f.read_exact_at(&mut h, 0).is_err() || &h[..4] != b"\x7fELF" {
            return false;
        }
        let little = h[5] == 1;
        let machine = if little {
            u16::from_le_bytes([h[18], h[19]])
        } else {
            u16::from_be_bytes([h[18], h[19]])
        };
        (h[4] == 2) == self.class64 && little == self.little && machine == self.machine
    }
}

/// The entries of `/etc/ld.so.cache` (glibc's new format): library name -> path.
struct LdCache {
    entries: Vec<(String, PathBuf)>,
}

impl LdCache {
    fn load() -> LdCache {
        let entries = fs::read("/etc/ld.so.cache")
            .ok()
            .and_then(|d| Self::parse(&d))
            .unwrap_or_default();
        LdCache { entries }
    }

    fn parse(data: &[u8]) -> Option<Vec<(String, PathBuf)>> {
        const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
        let start = if data.starts_with(MAGIC) {
            0
        } else if data.starts_with(b"ld.so-1.7.0") {
            // Old format first: skip its entries (12 bytes each) to the new header, 8-aligned.
            let n = u32::from_ne_bytes(data.get(12..16)?.try_into().ok()?) as usize;
            (16 + n * 12 + 7) & !7
        } else {
            return None;
        };
        let hdr = data.get(start..start + 48)?;
        if !hdr.starts_with(MAGIC) {
            return None;
        }
        let n = u32::from_ne_bytes(hdr[20..24].try_into().ok()?) as usize;
        let cstr = |off: usize| -> Option<String> {
            // Offsets are from the new header; fall back to the file start for old layouts.
            let at = data.get(start + off..).or_else(|| data.get(off..))?;
            let s = at.split(|&c| c == 0).next()?;
            Some(String::from_utf8_lossy(s).into_owned())
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let e = data.get(start + 48 + i * 24..start + 48 + (i + 1) * 24)?;
            let key = u32::from_ne_bytes(e[4..8].try_into().ok()?) as usize;
            let value = u32::from_ne_bytes(e[8..12].try_into().ok()?) as usize;
            out.push((cstr(key)?, PathBuf::from(cstr(value)?)));
        }
        Some(out)
    }

    fn lookup<'a>(&'a self, name: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, p)| p.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_cache_has_libc() {
        let c = LdCache::load();
        if c.entries.is_empty() {
            return; // No glibc cache on this host (e.g. musl): nothing to check.
        }
        assert!(
            c.lookup("libc.so.6").any(|p| p.exists()),
            "{:?}",
            &c.entries[..3]
        );
    }

    #[test]
    fn shebangs() {
        assert_eq!(shebang(b"#!/bin/sh -e\necho"), Some("/bin/sh".into()));
        assert_eq!(
            shebang(b"#! /usr/bin/env python3\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(shebang(b"\x7fELF"), None);
    }
}
