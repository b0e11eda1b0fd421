#!/usr/bin/env python3
"""Report of one `cargo bench --bench overlay` run: one table (workload x implementation), the
ratios rcl-fs/kernel and rcl-fs/fuse-overlayfs with the project's targets (pass/fail), and an SVG
chart. Needs only the Python standard library.

    python3 benches/compare.py [bench-results/run-<id>.json]   (default: the newest run)

Writes bench-results/report.md and bench-results/chart.svg. A ratio is printed only when both
sides were measured in the same run (same run id); otherwise the cell says why not.
"""

import json
import os
import statistics
import sys
from html import escape

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "bench-results")

IMPLS = ["kernel", "kernel-metacopy", "fuse-overlayfs", "rcl-fs", "rcl-fs-fsync0"]
RCL, KERNEL, FUSE = "rcl-fs", "kernel", "fuse-overlayfs"

# Targets for rcl-fs against kernel overlayfs, as ("time", bound): rcl time / kernel time must be
# <= bound, or ("tput", bound): rcl throughput / kernel throughput must be >= bound. A time
# target on a throughput row is checked on the inverse ratio (time per operation).
TARGETS = {
    "seqread-cold": ("tput", 0.9), "seqread-warm": ("tput", 0.9),
    "randread-cold": ("tput", 0.9), "randread-warm": ("tput", 0.9),
    "copyup-1m": ("time", 1.3), "copyup-4k": ("time", 1.3), "copyup-64m": ("time", 1.3),
    "create-fsync": ("time", 1.3), "untar": ("time", 1.3), "rm-rf": ("time", 1.3),
    "stat-warm": ("time", 1.5), "walk-warm": ("time", 1.5),
    "chmod-R": ("time", 0.2),
}
RSS_TARGET_MIB = 64

DESCR = {
    "copyup-1m": "copy-up: 4 KiB write into {n:g} x 1 MiB lower files + sync",
    "copyup-4k": "copy-up: 4 KiB write into {n:g} x 4 KiB lower files + sync",
    "copyup-64m": "copy-up: 4 KiB write into {n:g} x 64 MiB lower files + sync",
    "seqread-cold": "sequential read {n:g} MiB, cold",
    "seqread-warm": "sequential read {n:g} MiB, warm",
    "randread-cold": "random 4 KiB reads ({n:g}), cold",
    "randread-warm": "random 4 KiB reads ({n:g}), warm",
    "create-fsync": "create + 4 KiB write + fsync ({n:g} files)",
    "stat-cold": "lookup+lstat of {n:g} files, cold",
    "stat-warm": "lookup+lstat of {n:g} files, warm",
    "readdir-warm": "readdir of a {n:g}-entry merged dir, warm",
    "walk-cold": "ls -lR-like walk (ls -l's lstat + 2-3 getxattr), {n:g} files, cold",
    "walk-warm": "ls -lR-like walk (ls -l's lstat + 2-3 getxattr), {n:g} files, warm",
    "chmod-R": "chmod -R of {n:g} lower files + sync",
    "rm-rf": "rm -rf of a {n:g}-file lower tree + sync",
    "untar": "untar of a {n:g}-entry tarball + sync",
    "roundtrip-warm": "one request: lgetxattr of an absent xattr, {n:g} calls, warm",
    "container-start": "container start (`rcl run` of true)",
}


def load(path):
    with open(path) as f:
        doc = json.load(f)
    run_id = doc["run_id"]
    rows = {}
    for r in doc["results"]:
        rows[(r["workload"], r["impl"])] = r
    return doc, run_id, rows


def median(r):
    s = r.get("samples_s") or []
    if r.get("failed") or not s:
        return None
    return statistics.median(s)


def spread(r):
    """Half the interquartile range of the samples, relative to the median (noise indicator)."""
    s = sorted(r.get("samples_s") or [])
    if len(s) < 4:
        return None
    q = statistics.quantiles(s, n=4)
    m = statistics.median(s)
    return (q[2] - q[0]) / 2 / m if m > 0 else None


def cell(r):
    """Table cell: the value and its spread."""
    _, text = value(r)
    sp = spread(r) if not r.get("failed") else None
    return f"{text} ±{sp * 100:.0f}%" if sp is not None else text


def value(r):
    """(number, text) in the row's natural unit: seconds, or throughput."""
    m = median(r)
    if m is None:
        return None, ("FAILED" if r.get("failed") else "no samples")
    if r["kind"] == "throughput":
        v = r["work"] / m
        u = r["unit"]
        if u == "MiB":
            return v, f"{v:,.0f} MiB/s"
        if u == "reads":
            return v, f"{v / 1000:,.1f}k IOPS"
        return v, f"{v:,.0f} {u}/s"
    if m < 1:
        return m, f"{m * 1000:,.1f} ms"
    return m, f"{m:,.2f} s"


def ratio(rows, run_id, wl, a, b):
    """a/b in the target's sense, or (None, why)."""
    ra, rb = rows.get((wl, a)), rows.get((wl, b))
    if ra is None or rb is None:
        return None, "not run"
    if ra["run_id"] != run_id or rb["run_id"] != run_id:
        return None, "different runs"
    va, _ = value(ra)
    vb, _ = value(rb)
    if va is None or vb is None:
        return None, "failed"
    return va / vb, None


def better(kind, r):
    """True when the ratio (a/b) means a is better than b."""
    return r > 1 if kind == "throughput" else r < 1


def main():
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        runs = [os.path.join(OUT, f) for f in os.listdir(OUT) if f.startswith("run-") and f.endswith(".json")] if os.path.isdir(OUT) else []
        if not runs:
            sys.exit("compare.py: no bench-results/run-*.json; run `cargo bench --bench overlay` first")
        path = max(runs, key=os.path.getmtime)
    doc, run_id, rows = load(path)
    meta = doc.get("meta", {})
    workloads = []
    for (wl, _) in rows:
        if wl not in workloads:
            workloads.append(wl)
    present = [i for i in IMPLS if any(k[1] == i for k in rows)]
    extra_impls = sorted({k[1] for k in rows if k[1] not in IMPLS})

    lines = []
    lines.append(f"# rcl-fs benchmark report (run {run_id})\n")
    lines.append(f"Source: `{os.path.relpath(path, os.path.dirname(OUT))}`; scale {meta.get('scale')}; "
                 f"kernel {meta.get('kernel')}; {meta.get('cpus')} CPUs. Values are medians of all "
                 "samples of the run (time per iteration, or throughput), ± half the interquartile "
                 "range relative to the median. Ratios only from this run (same run id).\n")
    if meta.get("rcl_fs"):
        lines.append(f"rcl-fs binary: `{meta['rcl_fs'].get('path')}` (mtime {meta['rcl_fs'].get('mtime')}); "
                     f"workspace HEAD {meta.get('git_head')}; sizes: `{meta.get('sizes')}`; tarball {meta.get('tarball')}.\n")
    head = ["workload"] + present + ["rcl/kernel", "target", "rcl/fuse-ovl", "faster than fuse-ovl"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    chart = []
    verdicts = []
    for wl in workloads:
        any_row = next(r for k, r in rows.items() if k[0] == wl)
        kind, n = any_row["kind"], any_row["work"]
        if wl in extra_impls or wl == "container-start":
            continue
        cells = [DESCR.get(wl, wl).format(n=n)]
        for i in present:
            r = rows.get((wl, i))
            cells.append("-" if r is None else cell(r))
        rk, why_k = ratio(rows, run_id, wl, RCL, KERNEL)
        rf, why_f = ratio(rows, run_id, wl, RCL, FUSE)
        unit = "throughput" if kind == "throughput" else "time"
        cells.append(f"{rk:.2f}x {unit}" if rk is not None else why_k)
        noise = max([x for x in (spread(rows[(wl, i)]) for i in (RCL, KERNEL) if (wl, i) in rows)
                     if x is not None] or [0.0])
        tgt = TARGETS.get(wl)
        if tgt is None:
            cells.append("-")
        elif rk is None:
            cells.append("not checked")
        else:
            sense, bound = tgt
            if sense == "tput":
                q = rk if kind == "throughput" else 1 / rk
                ok = q >= bound
                near = " (within noise)" if abs(q - bound) / bound < noise else ""
                cells.append(f"tput >= {bound}x: {'PASS' if ok else 'FAIL'}{near}")
            else:
                q = 1 / rk if kind == "throughput" else rk
                ok = q <= bound
                note = f" ({q:.2f}x time)" if kind == "throughput" else ""
                near = " (within noise)" if abs(q - bound) / bound < noise else ""
                cells.append(f"time <= {bound}x{note}: {'PASS' if ok else 'FAIL'}{near}")
            verdicts.append((wl, "kernel", ok))
        cells.append(f"{rf:.2f}x {unit}" if rf is not None else why_f)
        if rf is None:
            cells.append("not checked")
        else:
            ok = better(kind, rf)
            cells.append("PASS" if ok else "FAIL")
            verdicts.append((wl, "fuse", ok))
        lines.append("| " + " | ".join(cells) + " |")
        # Chart: time relative to kernel (throughput rows inverted), lower is better.
        rel = {}
        for i in present:
            if i == KERNEL:
                continue
            q, _ = ratio(rows, run_id, wl, i, KERNEL)
            if q is not None:
                rel[i] = 1 / q if kind == "throughput" else q
        if rel:
            t = TARGETS.get(wl)
            # The target in the chart's sense (time relative to kernel).
            tx = None if t is None else (1 / t[1] if t[0] == "tput" else t[1])
            chart.append((wl, rel, tx))
    lines.append("")

    # fuse-overlayfs 1.10 does not fsync a copied-up file (kernel overlayfs and rcl-fs do): the
    # rcl-fs-fsync0 rows compare the two at that same durability.
    same = []
    for wl in workloads:
        q, _ = ratio(rows, run_id, wl, "rcl-fs-fsync0", FUSE)
        if q is not None:
            same.append(f"{wl} {q:.2f}x time")
    if same:
        lines.append("Copy-up at fuse-overlayfs's durability (it does not fsync copied-up files; "
                     "rcl-fs-fsync0 = rcl-fs with `fsync=0`), rcl-fs-fsync0/fuse-overlayfs: "
                     + ", ".join(same) + ".\n")

    # The cost of one request, and the machine's floor under it.
    per = []
    for i in present:
        r = rows.get(("roundtrip-warm", i))
        m = median(r) if r else None
        if m is not None:
            per.append(f"{i} {m / r['work'] * 1e6:.1f} us")
    pipe = [e for e in doc.get("extras", []) if e.get("what") == "pipe-roundtrip"]
    if per:
        floor = (f"; two threads passing a byte over pipes (two wake-ups, as a request and its "
                 f"reply) take {pipe[0]['us']:.1f} us per round trip on this machine") if pipe else ""
        lines.append("Time per request (`roundtrip-warm`; one FUSE round trip on the FUSE servers, "
                     f"in-kernel work on kernel overlayfs): {', '.join(per)}{floor}.\n")
    starts = {i: rows[("container-start", i)] for i in ("rcl", "runc") if ("container-start", i) in rows}
    if starts:
        parts = [f"{i} {value(r)[1]}" for i, r in starts.items()]
        q, why = ratio(rows, run_id, "container-start", "rcl", "runc")
        rq = f"; rcl/runc {q:.2f}x time" if q is not None else ""
        lines.append("Container start of `true` on a two-layer busybox rootfs (`rcl run`; `runc run` on a "
                     f"read-only kernel overlay, mount included): {', '.join(parts)}{rq}.\n")
    for nr in doc.get("not_run", []):
        lines.append(f"- not run: **{nr['what']}**: {nr['why']}")
    rss = [e for e in doc.get("extras", []) if e.get("what") == "rss-walk"]
    if rss:
        lines.append("")
        lines.append("Peak RSS of the FUSE server (VmHWM) after a cold walk of "
                     f"{rss[0]['files']:,} files:\n")
        lines.append("| server | VmHWM before | VmHWM after walk | walk time | server fds | errors | target |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in rss:
            mib = e["vmhwm_kib"] / 1024
            before = e.get("vmhwm_kib_before")
            tgt = "-"
            errs = e.get("errors") or 0
            if e["impl"] == RCL:
                ok = mib <= RSS_TARGET_MIB and errs == 0
                tgt = f"<= {RSS_TARGET_MIB} MiB {'PASS' if ok else 'FAIL'}"
                verdicts.append(("rss", "rss", ok))
            err_txt = f"{errs}: {e.get('first_error')}" if errs else "0"
            lines.append(f"| {e['impl']} | {before / 1024 if before else 0:.1f} MiB | {mib:.1f} MiB | "
                         f"{e['walk_s']:.2f} s | {e.get('server_fds', '?')} | {err_txt} | {tgt} |")
    if verdicts:
        passed = sum(1 for v in verdicts if v[2])
        lines.append(f"\nTargets: {passed} of {len(verdicts)} checks pass.")
    else:
        lines.append("\nTargets: none checked (rcl-fs did not run, or its rows failed).")
    text = "\n".join(lines) + "\n"
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "report.md"), "w") as f:
        f.write(text)
    svg = draw(chart, run_id, [i for i in present if i != KERNEL])
    with open(os.path.join(OUT, "chart.svg"), "w") as f:
        f.write(svg)
    print(text)
    print(f"wrote {os.path.join(OUT, 'report.md')} and {os.path.join(OUT, 'chart.svg')}")


COLORS = {"kernel-metacopy": "#7f7f7f", "fuse-overlayfs": "#d62728", "rcl-fs": "#1f77b4", "rcl-fs-fsync0": "#9ecae1"}


def draw(chart, run_id, impls):
    """Horizontal bars on a log scale: time relative to kernel overlayfs (1.0), per workload."""
    import math
    left, right, top, bar, gap = 300, 40, 70, 12, 10
    width = 900
    plot_w = width - left - right
    rows_h = sum(len(rel) * bar + gap for _, rel, _ in chart)
    height = top + rows_h + 50
    lo, hi = 0.1, 100.0
    vals = [v for _, rel, _ in chart for v in rel.values() if v > 0]
    if vals:
        lo = min(lo, 10 ** math.floor(math.log10(min(vals))))
        hi = max(1.0, 10 ** math.ceil(math.log10(max(vals))))
        lo = min(lo, 0.1)
        hi = max(hi, 10.0)

    def x(v):
        v = min(max(v, lo), hi)
        return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="20" y="20" font-size="15" font-weight="bold">Time relative to kernel '
           f'overlayfs (log scale; &lt; 1 is faster; throughput rows inverted)</text>',
           f'<text x="20" y="38" fill="#555">run {escape(run_id)}</text>']
    # Legend.
    lx = 20
    for i in impls:
        out.append(f'<rect x="{lx}" y="48" width="12" height="12" fill="{COLORS.get(i, "#2ca02c")}"/>')
        out.append(f'<text x="{lx + 16}" y="58">{escape(i)}</text>')
        lx += 20 + 8 * len(i) + 20
    out.append(f'<line x1="{lx}" y1="48" x2="{lx}" y2="60" stroke="black" stroke-width="2" '
               'stroke-dasharray="3,2"/>')
    out.append(f'<text x="{lx + 6}" y="58">rcl-fs target</text>')
    # Grid.
    d = lo
    while d <= hi * 1.0001:
        for m in (1, 2, 5):
            v = d * m
            if lo <= v <= hi:
                xx = x(v)
                strong = m == 1
                out.append(f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{top + rows_h}" '
                           f'stroke="{"#bbb" if strong else "#eee"}"/>')
                out.append(f'<text x="{xx:.1f}" y="{top + rows_h + 16}" text-anchor="middle" '
                           f'fill="#555">{v:g}</text>')
        d *= 10
    x1 = x(1.0)
    out.append(f'<line x1="{x1:.1f}" y1="{top - 4}" x2="{x1:.1f}" y2="{top + rows_h}" stroke="black" '
               'stroke-width="1.5"/>')
    y = top
    for wl, rel, tx in chart:
        h = len(rel) * bar
        if tx is not None and RCL in rel:
            xt = x(tx)
            out.append(f'<line x1="{xt:.1f}" y1="{y - 2}" x2="{xt:.1f}" y2="{y + h}" stroke="black" '
                       f'stroke-width="2" stroke-dasharray="3,2"><title>rcl-fs target {tx:.2f}x</title></line>')
        out.append(f'<text x="{left - 8}" y="{y + h / 2 + 4:.1f}" text-anchor="end">{escape(wl)}</text>')
        for i in impls:
            if i not in rel:
                continue
            v = rel[i]
            xa, xb = sorted((x1, x(v)))
            out.append(f'<rect x="{xa:.1f}" y="{y}" width="{max(xb - xa, 1):.1f}" height="{bar - 2}" '
                       f'fill="{COLORS.get(i, "#2ca02c")}"><title>{escape(i)}: {v:.2f}x</title></rect>')
            out.append(f'<text x="{xb + 3 if v >= 1 else xa - 3:.1f}" y="{y + bar - 3}" font-size="10" '
                       f'text-anchor="{"start" if v >= 1 else "end"}">{v:.2f}</text>')
            y += bar
        y += gap
    out.append(f'<text x="{left + plot_w / 2}" y="{top + rows_h + 34}" text-anchor="middle">'
               'implementation time / kernel time</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
