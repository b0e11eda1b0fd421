//! rcl-fs side by side with kernel overlayfs and fuse-overlayfs, in one run.
//!
//! Every workload is timed on every implementation in the same invocation over the same lower
//! layers; each sample is also written to `bench-results/run-<id>.json` for
//! `benches/compare.py`, which prints the table and draws the chart. See benches/README.md.
//!
//! Environment: `RCL_BENCH_DIR` (default /var/tmp/rcl-bench), `RCL_BENCH_SCALE` (default 1.0;
//! 0.01 for development), `RCL_BENCH_IMPLS` (comma list, default all found), `RCL_FS_BIN`,
//! `RCL_BIN` (the launcher, for the container-start workload), `FUSE_OVERLAYFS_BIN`.

mod layers;
mod mounts;
mod record;

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, SamplingMode};
use serde_json::json;

use layers::Layers;
use mounts::{Impl, Mounted, Watchdog};
use record::{Kind, Recorder};

/// A workload step longer than this is considered hung (its FUSE connection is aborted).
const STEP_LIMIT: Duration = Duration::from_secs(180);

/// How each iteration gets its mount.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// New mount and empty upper per iteration, after `sync`: for workloads that mutate.
    Fresh,
    /// As `Fresh`, then `sync` + drop caches: cold page, dentry and inode caches, new daemon.
    FreshCold,
    /// One mount per implementation, warmed by one untimed run: warm caches.
    Warm,
}

type RunFn = Box<dyn Fn(&Path, &Layers) -> io::Result<()>>;

struct Workload {
    name: &'static str,
    kind: Kind,
    /// Work per iteration (bytes in MiB, or operations) for throughput rows.
    work: f64,
    unit: &'static str,
    mode: Mode,
    /// Also run on kernel overlayfs with metacopy=on (where it changes the picture).
    metacopy: bool,
    run: RunFn,
}

struct Ctx {
    layers: Layers,
    base: PathBuf,
    watchdog: Watchdog,
    rec: RefCell<Recorder>,
}

fn main() {
    if let Some(why) = testkit::fuse_unavailable() {
        println!("rcl-bench: not run: {why}");
        return;
    }
    let scale: f64 = std::env::var("RCL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0);
    let root = PathBuf::from(
        std::env::var("RCL_BENCH_DIR").unwrap_or_else(|_| "/var/tmp/rcl-bench".into()),
    );
    let sizes = layers::Sizes::new(scale);
    let t = Instant::now();
    let layers = match fs::create_dir_all(&root).and_then(|_| layers::prepare(&root, &sizes)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "rcl-bench: cannot build layers under {}: {e}",
                root.display()
            );
            std::process::exit(1);
        }
    };
    eprintln!(
        "rcl-bench: layers ready in {:.1}s (scale {scale})",
        t.elapsed().as_secs_f64()
    );
    if std::env::var_os("RCL_BENCH_PREPARE_ONLY").is_some() {
        return;
    }

    let run_id = format!(
        "{}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::process::id()
    );
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let rcl_fs = std::env::var_os("RCL_FS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.join("rcl-fs"));
    let fuse_ovl = std::env::var_os("FUSE_OVERLAYFS_BIN")
        .map(PathBuf::from)
        .or_else(|| which("fuse-overlayfs"));
    let meta = json!({
        "scale": scale,
        "sizes": format!("{sizes:?}"),
        "tarball": {"bytes": layers.tar_info.0, "entries": layers.tar_info.1},
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rcl_fs": bin_info(&rcl_fs),
        "fuse_overlayfs": fuse_ovl.as_deref().map(bin_info),
        "bench_dir": root,
        "git_head": Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
    });
    let out_dir = std::env::var_os("RCL_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results"));
    let ctx = Ctx {
        layers,
        base: root.join("run"),
        watchdog: Watchdog::start(),
        rec: RefCell::new(Recorder::new(&out_dir, run_id.clone(), meta)),
    };
    let _ = fs::create_dir_all(&ctx.base);

    let wanted: Option<Vec<String>> = std::env::var("RCL_BENCH_IMPLS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let mut impls = vec![Impl::Kernel, Impl::KernelMeta];
    match fuse_ovl {
        Some(p) => impls.push(Impl::FuseOverlayfs(p)),
        None => ctx.rec.borrow_mut().not_run(
            "fuse-overlayfs",
            "not installed (apt-get install fuse-overlayfs)",
        ),
    }
    if rcl_fs.is_file() {
        impls.push(Impl::RclFs(rcl_fs.clone()));
        impls.push(Impl::RclFsNoSync(rcl_fs.clone()));
    } else {
        ctx.rec.borrow_mut().not_run(
            "rcl-fs",
            &format!(
                "{} not found (cargo build --release -p fsimpl --bin rcl-fs)",
                rcl_fs.display()
            ),
        );
    }
    impls.retain(|i| {
        wanted
            .as_ref()
            .is_none_or(|w| w.iter().any(|n| n == i.name()))
    });
    // A smoke test per implementation: mount, list the root, unmount.
    impls.retain(|imp| {
        let ok = mounts::mount(imp, &ctx.layers.lowerdir(), &ctx.base).and_then(|m| {
            let n = fs::read_dir(&m.mnt).map_err(|e| e.to_string())?.count();
            if n == 0 {
                return Err("empty merged root".to_string());
            }
            Ok(())
        });
        if let Err(e) = &ok {
            ctx.rec.borrow_mut().not_run(imp.name(), e);
        }
        ok.is_ok()
    });
    eprintln!(
        "rcl-bench: run {run_id}: {}",
        impls.iter().map(Impl::name).collect::<Vec<_>>().join(", ")
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
        .configure_from_args();
    let filter = positional_filter();

    // Optional wall-clock budget: workloads not started before it runs out are reported as not
    // run (a started group always finishes, so every reported number is a whole measurement).
    let budget = std::env::var("RCL_BENCH_BUDGET_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| Instant::now() + Duration::from_secs(s));
    let over_budget = || budget.is_some_and(|b| Instant::now() > b);
    // Alternatives separated by `|`, each a substring (criterion reads the filter as a regex).
    let wanted = |name: &str| {
        filter
            .as_ref()
            .is_none_or(|f| f.split('|').any(|alt| name.contains(alt)))
    };
    // The measurements outside criterion's groups first: they are quick.
    for name in ["rss-walk", "container-start", "pipe-roundtrip"] {
        if !wanted(name) {
            continue;
        }
        if over_budget() {
            ctx.rec
                .borrow_mut()
                .not_run(name, "RCL_BENCH_BUDGET_S ran out before it started");
            continue;
        }
        match name {
            "rss-walk" => peak_rss(&ctx, &impls),
            "container-start" => container_start(&ctx, &mut c, &target_dir),
            _ => pipe_roundtrip(&ctx),
        }
    }
    for w in workloads(&ctx.layers) {
        if !wanted(w.name) {
            continue;
        }
        if over_budget() {
            ctx.rec
                .borrow_mut()
                .not_run(w.name, "RCL_BENCH_BUDGET_S ran out before it started");
            continue;
        }
        let mut group = c.benchmark_group(w.name);
        group.sampling_mode(SamplingMode::Flat);
        // A fresh mount per iteration costs far more than the timed part of the quick
        // workloads: ask criterion for one iteration per sample there (11 runs in all).
        group.measurement_time(if w.mode == Mode::Warm {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(10)
        });
        for imp in &impls {
            if *imp == Impl::KernelMeta && !w.metacopy {
                continue;
            }
            if matches!(imp, Impl::RclFsNoSync(_)) && !w.name.starts_with("copyup") {
                continue;
            }
            ctx.rec
                .borrow_mut()
                .declare(w.name, imp.name(), w.kind, w.work, w.unit);
            let mut warm: Option<Mounted> = None;
            let mut fails = 0u64;
            group.bench_function(imp.name(), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        match one_iteration(&ctx, &w, imp, &mut warm) {
                            Ok(d) => {
                                ctx.rec
                                    .borrow_mut()
                                    .sample(w.name, imp.name(), d.as_secs_f64());
                                total += d;
                            }
                            Err(e) => {
                                // Keep criterion going with distinct tiny values; the row is
                                // marked failed and never reported.
                                ctx.rec.borrow_mut().fail(w.name, imp.name(), &e);
                                fails += 1;
                                total += Duration::from_nanos(fails);
                            }
                        }
                    }
                    total
                })
            });
            drop(warm);
            ctx.rec.borrow().flush();
        }
        group.finish();
    }

    c.final_summary();
    let rec = ctx.rec.borrow();
    rec.flush();
    eprintln!(
        "rcl-bench: results in {}; report: python3 benches/compare.py",
        rec.path().display()
    );
}

/// One timed execution of `w` on `imp`, setup and teardown excluded.
fn one_iteration(
    ctx: &Ctx,
    w: &Workload,
    imp: &Impl,
    warm: &mut Option<Mounted>,
) -> Result<Duration, String> {
    if ctx.rec.borrow().failed(w.name, imp.name()) {
        return Err("failed earlier".into());
    }
    let lower = ctx.layers.lowerdir();
    let fresh;
    let m: &Mounted = match w.mode {
        Mode::Warm => {
            if warm.is_none() {
                let m = mounts::mount(imp, &lower, &ctx.base)?;
                timed(ctx, &m, || (w.run)(&m.mnt, &ctx.layers))
                    .map_err(|e| format!("warm-up run: {e}"))?;
                *warm = Some(m);
            }
            warm.as_ref().expect("set above")
        }
        Mode::Fresh | Mode::FreshCold => {
            fresh = mounts::mount(imp, &lower, &ctx.base)?;
            nix::unistd::sync();
            if w.mode == Mode::FreshCold {
                drop_caches();
            }
            &fresh
        }
    };
    timed(ctx, m, || (w.run)(&m.mnt, &ctx.layers)).map_err(|e| e.to_string())
}

fn timed(ctx: &Ctx, m: &Mounted, f: impl FnOnce() -> io::Result<()>) -> io::Result<Duration> {
    ctx.watchdog.arm(m, STEP_LIMIT);
    let t = Instant::now();
    let r = f();
    let d = t.elapsed();
    ctx.watchdog.disarm();
    r.map(|_| d)
}

fn drop_caches() {
    nix::unistd::sync();
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("rcl-bench: drop_caches: {e}");
    }
}

fn workloads(l: &Layers) -> Vec<Workload> {
    let s = &l.sizes;
    let mib = (1u64 << 20) as f64;
    let w = |name, kind, work, unit, mode, run: RunFn| Workload {
        name,
        kind,
        work,
        unit,
        mode,
        metacopy: false,
        run,
    };
    let (n1m, n4k, nbig) = (s.copyup_1m, s.copyup_4k, s.copyup_big);
    let (seq, nrand, ncreate) = (s.seq_bytes, s.rand_reads, s.create_files);
    // Warm random reads cost ~1 us each: 32x more per iteration than cold keeps a sample in the
    // tens of milliseconds, where timer and scheduler noise no longer decide the ratio.
    let nrand_warm = nrand * 32;
    // One FUSE round trip per call on the FUSE servers; in-kernel work only on kernel overlayfs.
    let nrt = ((20_000.0 * s.scale) as usize).max(1_000);
    let (tdirs, tper, flat) = (s.tree_dirs, s.tree_files_per_dir, s.flat_entries);
    let ntree = s.tree_files() as f64;
    let mut v = vec![
        w(
            "copyup-1m",
            Kind::Time,
            n1m as f64,
            "files",
            Mode::FreshCold,
            Box::new(move |m, _| copy_up(m, "cu1m", n1m, |i| format!("f{i:04}"))),
        ),
        w(
            "copyup-4k",
            Kind::Time,
            n4k as f64,
            "files",
            Mode::FreshCold,
            Box::new(move |m, _| copy_up(m, "cu4k", n4k, |i| format!("f{i:04}"))),
        ),
        w(
            "copyup-64m",
            Kind::Time,
            nbig as f64,
            "files",
            Mode::FreshCold,
            Box::new(move |m, _| copy_up(m, "cubig", nbig, |i| format!("f{i}"))),
        ),
        w(
            "seqread-cold",
            Kind::Throughput,
            seq as f64 / mib,
            "MiB",
            Mode::FreshCold,
            Box::new(move |m, _| seq_read(m, seq)),
        ),
        w(
            "seqread-warm",
            Kind::Throughput,
            seq as f64 / mib,
            "MiB",
            Mode::Warm,
            Box::new(move |m, _| seq_read(m, seq)),
        ),
        w(
            "randread-cold",
            Kind::Throughput,
            nrand as f64,
            "reads",
            Mode::FreshCold,
            Box::new(move |m, _| rand_read(m, seq, nrand)),
        ),
        w(
            "randread-warm",
            Kind::Throughput,
            nrand_warm as f64,
            "reads",
            Mode::Warm,
            Box::new(move |m, _| rand_read(m, seq, nrand_warm)),
        ),
        w(
            "create-fsync",
            Kind::Throughput,
            ncreate as f64,
            "files",
            Mode::Fresh,
            Box::new(move |m, _| create_fsync(m, ncreate)),
        ),
        w(
            "stat-cold",
            Kind::Time,
            ntree,
            "files",
            Mode::FreshCold,
            Box::new(move |m, _| stat_tree(m, tdirs, tper)),
        ),
        w(
            "stat-warm",
            Kind::Time,
            ntree,
            "files",
            Mode::Warm,
            Box::new(move |m, _| stat_tree(m, tdirs, tper)),
        ),
        w(
            "readdir-warm",
            Kind::Time,
            flat as f64,
            "entries",
            Mode::Warm,
            Box::new(move |m, _| readdir_flat(m, flat)),
        ),
        w(
            "walk-cold",
            Kind::Time,
            ntree,
            "files",
            Mode::FreshCold,
            Box::new(move |m, _| walk(&m.join("tree")).map(|_| ())),
        ),
        w(
            "walk-warm",
            Kind::Time,
            ntree,
            "files",
            Mode::Warm,
            Box::new(move |m, _| walk(&m.join("tree")).map(|_| ())),
        ),
        w(
            "roundtrip-warm",
            Kind::Time,
            nrt as f64,
            "requests",
            Mode::Warm,
            Box::new(move |m, _| round_trips(m, nrt)),
        ),
        w(
            "chmod-R",
            Kind::Time,
            ntree,
            "files",
            Mode::FreshCold,
            Box::new(|m, _| chmod_tree(m)),
        ),
        w(
            "rm-rf",
            Kind::Time,
            ntree,
            "files",
            Mode::FreshCold,
            Box::new(|m, _| rm_tree(m)),
        ),
        w(
            "untar",
            Kind::Time,
            l.tar_info.1 as f64,
            "entries",
            Mode::Fresh,
            Box::new(|m, l| untar(m, &l.tarball)),
        ),
    ];
    for x in &mut v {
        x.metacopy = x.name == "chmod-R";
    }
    // The rows without a target go last, where a time budget cuts first.
    v.sort_by_key(|x| matches!(x.name, "stat-cold" | "walk-cold" | "roundtrip-warm"));
    v
}

/// First 4 KiB write into each lower file (a copy-up), then `sync` (durable).
fn copy_up(mnt: &Path, dir: &str, n: usize, name: impl Fn(usize) -> String) -> io::Result<()> {
    let buf = [0x5au8; 4096];
    for i in 0..n {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(mnt.join(dir).join(name(i)))?;
        f.write_all_at(&buf, 0)?;
    }
    nix::unistd::sync();
    Ok(())
}

fn seq_read(mnt: &Path, size: u64) -> io::Result<()> {
    let mut f = fs::File::open(mnt.join("seq/big"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    check(total == size, || format!("read {total} bytes, want {size}"))
}

fn rand_read(mnt: &Path, size: u64, n: usize) -> io::Result<()> {
    let f = fs::File::open(mnt.join("seq/big"))?;
    let blocks = size / 4096;
    let mut buf = [0u8; 4096];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % blocks) * 4096;
        let got = f.read_at(&mut buf, off)?;
        check(got == 4096, || format!("short read {got} at {off}"))?;
    }
    Ok(())
}

fn create_fsync(mnt: &Path, n: usize) -> io::Result<()> {
    let dir = mnt.join("created");
    fs::create_dir(&dir)?;
    let buf = [7u8; 4096];
    for i in 0..n {
        let f = fs::File::create(dir.join(format!("c{i:05}")))?;
        f.write_all_at(&buf, 0)?;
        f.sync_all()?;
    }
    Ok(())
}

fn stat_tree(mnt: &Path, dirs: usize, per: usize) -> io::Result<()> {
    for d in 0..dirs {
        for f in 0..per {
            fs::symlink_metadata(mnt.join(format!("tree/d{d:03}/f{f:03}")))?;
        }
    }
    Ok(())
}

fn readdir_flat(mnt: &Path, want: usize) -> io::Result<()> {
    let mut n = 0;
    for e in fs::read_dir(mnt.join("flat"))? {
        e?;
        n += 1;
    }
    check(n == want, || {
        format!("readdir found {n} entries, want {want}")
    })
}

/// `ls -lR`-like: readdir, then per entry what coreutils 9.1 `ls -l` asks (strace): lstat,
/// lgetxattr(security.selinux), getxattr(system.posix_acl_access), and for a directory also
/// getxattr(system.posix_acl_default). Returns the entry count.
fn walk(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let md = fs::symlink_metadata(&p)?;
        let c = c_path(&p)?;
        xattr_probe(&c, c"security.selinux", true)?;
        xattr_probe(&c, c"system.posix_acl_access", false)?;
        n += 1;
        if md.is_dir() {
            xattr_probe(&c, c"system.posix_acl_default", false)?;
            n += walk(&p)?;
        }
    }
    Ok(n)
}

/// Like [`walk`], but goes on past errors, counting them (and keeping the first).
fn walk_lenient(dir: &Path, errors: &mut (usize, Option<String>)) {
    fn note(errors: &mut (usize, Option<String>), what: &Path, e: io::Error) {
        errors.0 += 1;
        errors
            .1
            .get_or_insert_with(|| format!("{}: {e}", what.display()));
    }
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return note(errors, dir, e),
    };
    for e in rd {
        let p = match e {
            Ok(e) => e.path(),
            Err(e) => {
                note(errors, dir, e);
                continue;
            }
        };
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => walk_lenient(&p, errors),
            Ok(_) => {}
            Err(e) => note(errors, &p, e),
        }
    }
}

/// `n` times [`caps_probe`] on one lower file: on a FUSE server each call is one request and
/// its reply (the kernel caches no xattrs for FUSE), so this measures the round trip itself.
fn round_trips(mnt: &Path, n: usize) -> io::Result<()> {
    let path = c_path(&mnt.join("tree/d000/f000"))?;
    for _ in 0..n {
        caps_probe(&path)?;
    }
    Ok(())
}

/// The scheduler's floor under any FUSE round trip on this machine: two threads passing one
/// byte back and forth over two pipes (two wake-ups per round trip, as a FUSE request and its
/// reply). Median of 5 runs of 20,000 round trips, recorded beside the results.
fn pipe_roundtrip(ctx: &Ctx) {
    const N: usize = 20_000;
    let one_run = || -> io::Result<f64> {
        let pipe = || -> io::Result<(fs::File, fs::File)> {
            let (r, w) = nix::unistd::pipe()?;
            Ok((r.into(), w.into()))
        };
        let (mut to_r, mut to_w) = pipe()?;
        let (mut back_r, mut back_w) = pipe()?;
        let echo = std::thread::spawn(move || -> io::Result<()> {
            let mut b = [0u8; 1];
            for _ in 0..N {
                to_r.read_exact(&mut b)?;
                back_w.write_all(&b)?;
            }
            Ok(())
        });
        let mut b = [7u8; 1];
        let t = Instant::now();
        for _ in 0..N {
            to_w.write_all(&b)?;
            back_r.read_exact(&mut b)?;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / N as f64;
        echo.join()
            .map_err(|_| io::Error::other("echo thread panicked"))??;
        Ok(us)
    };
    let r: io::Result<Vec<f64>> = (0..5).map(|_| one_run()).collect();
    let mut rec = ctx.rec.borrow_mut();
    match r {
        Ok(mut v) => {
            v.sort_by(f64::total_cmp);
            eprintln!("rcl-bench: pipe round trip {:.1} us", v[2]);
            rec.extra(json!({"what": "pipe-roundtrip", "us": v[2], "runs_us": v}));
        }
        Err(e) => rec.not_run("pipe-roundtrip", &e.to_string()),
    }
    rec.flush();
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Asks for `security.capability`, which no file here has: on a FUSE mount one request.
fn caps_probe(path: &CStr) -> io::Result<()> {
    xattr_probe(path, c"security.capability", true)
}

/// Asks for xattr `name` of `path` (`lgetxattr` with `nofollow`) into a small buffer; "no such
/// attribute" and "not supported" are answers, not errors.
fn xattr_probe(path: &CStr, name: &CStr, nofollow: bool) -> io::Result<()> {
    let mut buf = [0u8; 256];
    let get = if nofollow {
        libc::lgetxattr
    } else {
        libc::getxattr
    };
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer pointer and
    // length describe `buf`, which the kernel writes at most `buf.len()` bytes into.
    let r = unsafe {
        get(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
        ) {
            return Err(e);
        }
    }
    Ok(())
}

fn chmod_tree(mnt: &Path) -> io::Result<()> {
    shell(
        Command::new("chmod")
            .args(["-R", "g+w"])
            .arg(mnt.join("tree")),
    )?;
    nix::unistd::sync();
    Ok(())
}

fn rm_tree(mnt: &Path) -> io::Result<()> {
    shell(Command::new("rm").arg("-rf").arg(mnt.join("tree")))?;
    nix::unistd::sync();
    check(!mnt.join("tree").exists(), || {
        "tree still there after rm -rf".into()
    })
}

fn untar(mnt: &Path, tarball: &Path) -> io::Result<()> {
    let dir = mnt.join("untar");
    fs::create_dir(&dir)?;
    shell(
        Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .arg("-xf")
            .arg(tarball),
    )?;
    nix::unistd::sync();
    Ok(())
}

fn shell(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        )));
    }
    Ok(())
}

fn check(ok: bool, why: impl FnOnce() -> String) -> io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(io::Error::other(why()))
    }
}

/// Peak RSS of each FUSE server after a cold walk of the big tree (measured once).
fn peak_rss(ctx: &Ctx, impls: &[Impl]) {
    let files = ctx.layers.sizes.rss_files;
    let servers = impls
        .iter()
        .filter(|i| i.is_fuse() && !matches!(i, Impl::RclFsNoSync(_)));
    for imp in servers {
        let r = (|| -> Result<serde_json::Value, String> {
            let m = mounts::mount(imp, &ctx.layers.lowerdir(), &ctx.base)?;
            let pid = m.server_pid.ok_or("server process not found")?;
            let before = mounts::peak_rss_kib(pid);
            drop_caches();
            let mut errors = (0usize, None::<String>);
            let d = timed(ctx, &m, || {
                walk_lenient(&m.mnt.join("rss"), &mut errors);
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            let after = mounts::peak_rss_kib(pid).ok_or("cannot read VmHWM")?;
            let fds = fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .ok();
            Ok(json!({
                "what": "rss-walk", "impl": imp.name(), "files": files,
                "walk_s": d.as_secs_f64(), "vmhwm_kib_before": before,
                "vmhwm_kib": after, "server_fds": fds,
                "errors": errors.0, "first_error": errors.1,
            }))
        })();
        let mut rec = ctx.rec.borrow_mut();
        match r {
            Ok(v) => {
                eprintln!("rcl-bench: rss-walk {}: {v}", imp.name());
                rec.extra(v)
            }
            Err(e) => rec.not_run(&format!("rss-walk/{}", imp.name()), &e),
        }
        rec.flush();
    }
}

/// A way to start a container running `true`; `Ok(false)` = it ran but exited non-zero.
type Starter<'a> = Box<dyn Fn() -> io::Result<bool> + 'a>;

/// Container start: `rcl run` of `true` on a two-layer busybox rootfs (when the launcher is built
/// and works), and `runc run` of the same on a read-only kernel overlay of the same two layers
/// (mount + run + unmount, timed together; when runc is installed).
fn container_start(ctx: &Ctx, c: &mut Criterion, target_dir: &Path) {
    let name = "container-start";
    let rcl = std::env::var_os("RCL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir.join("rcl"));
    let dir = ctx.base.join("container");
    let (app, base) = (dir.join("layers/app"), dir.join("layers/base"));
    if let Err(e) = container_layers(&app, &base) {
        ctx.rec.borrow_mut().not_run(name, &e.to_string());
        return;
    }
    let spec = dir.join("true.toml");
    let rcl_ok = (|| -> io::Result<()> {
        if !rcl.is_file() {
            return Err(io::Error::other(format!("{} not built", rcl.display())));
        }
        fs::write(
            &spec,
            format!(
                "name = \"bench-true\"\n[rootfs]\nlayers = [\"{}\", \"{}\"]\n\
                 [process]\ncommand = [\"/bin/true\"]\n",
                app.display(),
                base.display()
            ),
        )?;
        let out = Command::new(&rcl).arg("run").arg(&spec).output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(io::Error::other(format!(
                "`rcl run` of true failed ({}): {}",
                out.status,
                err.lines().take(2).collect::<Vec<_>>().join(" ")
            )));
        }
        Ok(())
    })();
    let mut starters: Vec<(&str, Starter)> = Vec::new();
    match rcl_ok {
        Ok(()) => starters.push((
            "rcl",
            Box::new(|| {
                Ok(Command::new(&rcl)
                    .arg("run")
                    .arg(&spec)
                    .stdin(std::process::Stdio::null())
                    .status()?
                    .success())
            }),
        )),
        Err(e) => ctx
            .rec
            .borrow_mut()
            .not_run("container-start/rcl", &e.to_string()),
    }
    let bundle = dir.join("runc-bundle");
    match which("runc").ok_or_else(|| io::Error::other("runc not installed")) {
        Ok(runc) => match runc_bundle(&runc, &bundle) {
            Ok(()) => {
                let lower = format!("lowerdir={}:{}", app.display(), base.display());
                starters.push((
                    "runc",
                    Box::new(move || {
                        let root = bundle.join("rootfs");
                        let m = Command::new("mount")
                            .args(["-t", "overlay", "overlay", "-o", &lower])
                            .arg(&root)
                            .status()?;
                        if !m.success() {
                            return Ok(false);
                        }
                        let ok = Command::new(&runc)
                            .arg("run")
                            .arg("--bundle")
                            .arg(&bundle)
                            .arg(format!("rcl-bench-{}", std::process::id()))
                            .stdin(std::process::Stdio::null())
                            .status()?
                            .success();
                        let u = Command::new("umount").arg(&root).status()?;
                        Ok(ok && u.success())
                    }),
                ));
            }
            Err(e) => ctx
                .rec
                .borrow_mut()
                .not_run("container-start/runc", &e.to_string()),
        },
        Err(e) => ctx
            .rec
            .borrow_mut()
            .not_run("container-start/runc", &e.to_string()),
    }
    if starters.is_empty() {
        return;
    }
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_millis(10));
    for (who, start) in &starters {
        ctx.rec
            .borrow_mut()
            .declare(name, who, Kind::Time, 1.0, "starts");
        group.bench_function(*who, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let r = start();
                    let d = t.elapsed();
                    let mut rec = ctx.rec.borrow_mut();
                    match r {
                        Ok(true) => rec.sample(name, who, d.as_secs_f64()),
                        Ok(false) => rec.fail(name, who, "exited non-zero"),
                        Err(e) => rec.fail(name, who, &e.to_string()),
                    }
                    total += d;
                }
                total
            })
        });
        ctx.rec.borrow().flush();
    }
    group.finish();
}

/// The two container layers: `base` with a static busybox as /bin/true and /bin/sh, `app` with
/// one file.
fn container_layers(app: &Path, base: &Path) -> io::Result<()> {
    let bb = Path::new("/bin/busybox");
    if !bb.is_file() {
        return Err(io::Error::other(
            "/bin/busybox missing (apt-get install busybox-static)",
        ));
    }
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(base.join(d))?;
    }
    fs::create_dir_all(app)?;
    fs::copy(bb, base.join("bin/busybox"))?;
    for a in ["true", "sh"] {
        let l = base.join("bin").join(a);
        if fs::symlink_metadata(&l).is_err() {
            std::os::unix::fs::symlink("busybox", l)?;
        }
    }
    fs::write(app.join("hello"), "hello\n")
}

/// An OCI bundle for runc running `/bin/true` (its rootfs is mounted per start).
fn runc_bundle(runc: &Path, bundle: &Path) -> io::Result<()> {
    fs::create_dir_all(bundle.join("rootfs"))?;
    let _ = fs::remove_file(bundle.join("config.json"));
    let st = Command::new(runc)
        .arg("spec")
        .current_dir(bundle)
        .status()?;
    if !st.success() {
        return Err(io::Error::other("runc spec failed"));
    }
    let path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(["/bin/true"]);
    cfg["root"]["readonly"] = json!(true);
    fs::write(&path, serde_json::to_vec_pretty(&cfg)?)
}

/// The criterion filter (first positional argument), applied to the extra workloads too.
fn positional_filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a.starts_with('-') {
            // Options with a value that criterion accepts.
            if matches!(
                a.as_str(),
                "--save-baseline"
                    | "--baseline"
                    | "--load-baseline"
                    | "--profile-time"
                    | "--color"
                    | "--output-format"
                    | "--plotting-backend"
                    | "--sample-size"
                    | "--warm-up-time"
                    | "--measurement-time"
                    | "--nresamples"
                    | "--noise-threshold"
                    | "--confidence-level"
                    | "--significance-level"
                    | "--baseline-lenient"
            ) {
                args.next();
            }
            continue;
        }
        return Some(a);
    }
    None
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn bin_info(p: &Path) -> serde_json::Value {
    let mtime = fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    json!({"path": p, "mtime": mtime})
}
