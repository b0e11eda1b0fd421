//! The shared lower layers, built once under `RCL_BENCH_DIR` and reused while their sizes match.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Sizes of everything the workloads touch, scaled by `RCL_BENCH_SCALE` (1.0 = the full run).
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    /// Scale factor these sizes were derived from.
    pub scale: f64,
    /// Number of 1 MiB lower files for the copy-up workload.
    pub copyup_1m: usize,
    /// Number of 4 KiB lower files for the copy-up workload.
    pub copyup_4k: usize,
    /// Number of 64 MiB lower files for the copy-up workload (size scaled too).
    pub copyup_big: usize,
    /// Size of each "64 MiB" file.
    pub big_bytes: u64,
    /// Size of the sequential-read file ("256 MiB").
    pub seq_bytes: u64,
    /// Number of random 4 KiB reads per iteration.
    pub rand_reads: usize,
    /// Number of files for create + write + fsync.
    pub create_files: usize,
    /// Directories in the metadata tree (files = dirs * files_per_dir).
    pub tree_dirs: usize,
    /// Files per directory in the metadata tree.
    pub tree_files_per_dir: usize,
    /// Directories of the tree that `chmod -R` and `rm -rf` work on (100 files each).
    pub ch_dirs: usize,
    /// Entries in the merged flat directory (half in each lower).
    pub flat_entries: usize,
    /// Files in the big tree walked for the peak-RSS measurement.
    pub rss_files: usize,
    /// Bytes of real files packed into the untar tarball.
    pub tar_bytes: u64,
}

impl Sizes {
    /// Sizes for `scale` (the full run is 1.0; development uses 0.01 to 0.1).
    pub fn new(scale: f64) -> Self {
        let n = |full: f64, min: usize| ((full * scale).round() as usize).max(min);
        let mib = 1u64 << 20;
        Sizes {
            scale,
            copyup_1m: n(50.0, 4),
            copyup_4k: n(50.0, 4),
            copyup_big: 2,
            big_bytes: ((64.0 * scale).round() as u64).max(1) * mib,
            seq_bytes: ((256.0 * scale).round() as u64).max(4) * mib,
            rand_reads: n(512.0, 64),
            create_files: n(150.0, 8),
            tree_dirs: n(100.0, 4),
            tree_files_per_dir: 100,
            ch_dirs: n(1.0, 1),
            flat_entries: n(10_000.0, 100),
            rss_files: n(100_000.0, 1000),
            tar_bytes: ((16.0 * scale).max(0.5) * mib as f64) as u64,
        }
    }

    /// Files in the metadata tree.
    pub fn tree_files(&self) -> usize {
        self.tree_dirs * self.tree_files_per_dir
    }

    fn stamp(&self) -> String {
        format!("{self:?}\nlayout-version=5\n")
    }
}

/// Paths of the prepared lower layers and the tarball.
#[derive(Debug, Clone)]
pub struct Layers {
    /// Top lower layer (first in `lowerdir=`).
    pub top: PathBuf,
    /// Bottom lower layer.
    pub bottom: PathBuf,
    /// The untar workload's tarball (not inside any layer).
    pub tarball: PathBuf,
    /// Bytes in the tarball's files and its entry count.
    pub tar_info: (u64, usize),
    /// The sizes the layers were built with.
    pub sizes: Sizes,
}

impl Layers {
    /// `lowerdir=` value: top first.
    pub fn lowerdir(&self) -> String {
        format!("{}:{}", self.top.display(), self.bottom.display())
    }
}

/// Builds the layers under `root/layers` unless a previous run left identical ones.
///
/// Layout (paths relative to the merged mount):
/// - `cu1m/fNNNN` (1 MiB), `cu4k/fNNNN` (4 KiB), `cubig/fN` (64 MiB): top layer;
/// - `seq/big`: the sequential/random-read file, bottom layer;
/// - `tree/dNNN/fNNN`: the metadata tree; even files in the top layer, odd in the bottom, every
///   directory present in both (so every directory is a merged one);
/// - `chtree/dNNN/fNNN`: the same shape, smaller, for `benches/profile.sh`'s quick runs;
/// - `flat/eNNNNN`: one merged directory, even entries top, odd bottom;
/// - `rss/dNNN/fNNNN`: the 100k-file tree for the peak-RSS walk, bottom layer.
pub fn prepare(root: &Path, sizes: &Sizes) -> io::Result<Layers> {
    let dir = root.join("layers");
    let top = dir.join("top");
    let bottom = dir.join("bottom");
    let tarball = dir.join("untar.tar");
    let stamp_path = dir.join("STAMP");
    let layers = |tar_info| Layers {
        top: top.clone(),
        bottom: bottom.clone(),
        tarball: tarball.clone(),
        tar_info,
        sizes: sizes.clone(),
    };
    if fs::read_to_string(&stamp_path).ok().as_deref() == Some(sizes.stamp().as_str()) {
        if let Ok(info) = fs::read_to_string(dir.join("TARINFO")) {
            let mut it = info
                .split_whitespace()
                .map(|s| s.parse::<u64>().unwrap_or(0));
            let (b, n) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            return Ok(layers((b, n as usize)));
        }
    }
    eprintln!(
        "rcl-bench: building lower layers under {} ...",
        dir.display()
    );
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&top)?;
    fs::create_dir_all(&bottom)?;

    let mut data = vec![0u8; 1 << 20];
    fill(&mut data, 1);
    write_files(&top.join("cu1m"), sizes.copyup_1m, &data)?;
    write_files(&top.join("cu4k"), sizes.copyup_4k, &data[..4096])?;
    fs::create_dir_all(top.join("cubig"))?;
    for i in 0..sizes.copyup_big {
        write_sized(&top.join(format!("cubig/f{i}")), sizes.big_bytes, &data)?;
    }
    fs::create_dir_all(bottom.join("seq"))?;
    write_sized(&bottom.join("seq/big"), sizes.seq_bytes, &data)?;

    let small = &data[..512];
    for (name, dirs) in [("tree", sizes.tree_dirs), ("chtree", sizes.ch_dirs)] {
        for d in 0..dirs {
            for layer in [&top, &bottom] {
                fs::create_dir_all(layer.join(format!("{name}/d{d:03}")))?;
            }
            for f in 0..sizes.tree_files_per_dir {
                let layer = if f % 2 == 0 { &top } else { &bottom };
                fs::write(layer.join(format!("{name}/d{d:03}/f{f:03}")), small)?;
            }
        }
    }
    fs::create_dir_all(top.join("flat"))?;
    fs::create_dir_all(bottom.join("flat"))?;
    for e in 0..sizes.flat_entries {
        let layer = if e % 2 == 0 { &top } else { &bottom };
        fs::write(layer.join(format!("flat/e{e:05}")), b"x")?;
    }
    let per_dir = 1000;
    for i in 0..sizes.rss_files {
        let d = bottom.join(format!("rss/d{:03}", i / per_dir));
        if i % per_dir == 0 {
            fs::create_dir_all(&d)?;
        }
        fs::File::create(d.join(format!("f{:04}", i % per_dir)))?;
    }

    let tar_info = make_tarball(&dir, &tarball, sizes.tar_bytes)?;
    fs::write(
        dir.join("TARINFO"),
        format!("{} {}\n", tar_info.0, tar_info.1),
    )?;
    nix::unistd::sync();
    fs::write(&stamp_path, sizes.stamp())?;
    Ok(layers(tar_info))
}

/// Deterministic non-zero, non-repeating-at-4K content.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn write_files(dir: &Path, n: usize, data: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for i in 0..n {
        fs::write(dir.join(format!("f{i:04}")), data)?;
    }
    Ok(())
}

fn write_sized(path: &Path, bytes: u64, data: &[u8]) -> io::Result<()> {
    let mut f = io::BufWriter::new(fs::File::create(path)?);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        f.write_all(&data[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// A tarball of real files (headers, docs) from this machine, sorted and with fixed owners and
/// times so that it is the same on every run: files are taken in name order from /usr/include
/// then /usr/share/doc until `want` bytes.
fn make_tarball(dir: &Path, tarball: &Path, want: u64) -> io::Result<(u64, usize)> {
    let mut list = Vec::new();
    let mut bytes = 0u64;
    for src in ["/usr/include", "/usr/share/doc"] {
        collect(Path::new(src), &mut list, &mut bytes, want)?;
        if bytes >= want {
            break;
        }
    }
    let list_path = dir.join("untar.list");
    let mut text = String::new();
    for p in &list {
        text.push_str(
            p.strip_prefix("/")
                .unwrap_or(p)
                .to_str()
                .unwrap_or_default(),
        );
        text.push('\n');
    }
    fs::write(&list_path, text)?;
    let st = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .args(["--no-recursion", "-C", "/", "-cf"])
        .arg(tarball)
        .arg("-T")
        .arg(&list_path)
        .status()?;
    if !st.success() {
        return Err(io::Error::other(format!(
            "tar -cf {} failed",
            tarball.display()
        )));
    }
    Ok((bytes, list.len()))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, bytes: &mut u64, want: u64) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    out.push(dir.to_path_buf());
    for e in entries {
        if *bytes >= want {
            return Ok(());
        }
        let ft = e.file_type()?;
        let p = e.path();
        if ft.is_dir() {
            collect(&p, out, bytes, want)?;
        } else if ft.is_file() || ft.is_symlink() {
            *bytes += e.metadata()?.len();
            out.push(p);
        }
    }
    Ok(())
}
