#!/usr/bin/env bash
# Where does rcl-fs spend its time? Mounts rcl-fs over the benchmark layers (built by
# `cargo bench --bench overlay`), runs shell versions of the workloads one at a time, and for each
# prints the server's system-call profile (strace -c -f) and, with perf installed, its hottest
# functions (perf record -g, perf report --no-children).
#
#   sudo bash benches/profile.sh [workload...]   (default: all; see the case list below)
#
# Env: RCL_BENCH_DIR (default /var/tmp/rcl-bench), RCL_FS_BIN (default target/release/rcl-fs),
# PROFILE_OUT (default $RCL_BENCH_DIR/profile). Needs root, strace; perf is optional.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "profile.sh: run as root" >&2; exit 0; }
BENCH=${RCL_BENCH_DIR:-/var/tmp/rcl-bench}
BIN=${RCL_FS_BIN:-$PWD/target/release/rcl-fs}
OUT=${PROFILE_OUT:-$BENCH/profile}
L=$BENCH/layers
[ -x "$BIN" ] || { echo "profile.sh: $BIN missing (cargo build --release -p fsimpl)" >&2; exit 1; }
[ -d "$L/top" ] || { echo "profile.sh: no layers in $L (run the benchmark once)" >&2; exit 1; }
command -v strace >/dev/null || { echo "profile.sh: strace missing (apt-get install strace)" >&2; exit 1; }
mkdir -p "$OUT"
S=$BENCH/profile-state
M=$BENCH/profile-mnt

pid=""
cleanup() {
    if grep -q " $M " /proc/self/mountinfo; then umount "$M" 2>/dev/null || umount -l "$M"; fi
    # Let the old server finish exiting before the next mount at the same path.
    local i=0
    while [ -n "$pid" ] && [ $i -lt 200 ] && [ -r "/proc/$pid/stat" ] \
        && [ "$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)" != Z ]; do
        sleep 0.05; i=$((i + 1))
    done
    rm -rf "$S"
}
trap cleanup EXIT

run_one() {
    local name=$1 cmd=$2
    cleanup
    mkdir -p "$S/upper" "$S/work" "$M"
    timeout 30 "$BIN" -o "lowerdir=$L/top:$L/bottom,upperdir=$S/upper,workdir=$S/work" "$M"
    pid=$(pgrep -f -n -- "$BIN .*$M\$")
    sync; echo 3 > /proc/sys/vm/drop_caches
    strace -c -f -p "$pid" -o "$OUT/$name.strace" & local st=$!
    local pf=""
    if command -v perf >/dev/null; then
        perf record -q -F 1999 -g -p "$pid" -o "$OUT/$name.perf.data" 2>/dev/null & pf=$!
    fi
    sleep 0.5
    if ! grep -q " $M " /proc/self/mountinfo || ! kill -0 "$pid" 2>/dev/null; then
        echo "profile.sh: the rcl-fs server ($pid) is gone after the profilers attached" >&2
    fi
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$M" && timeout 300 bash -c "$cmd")
    t1=$(date +%s.%N)
    [ -n "$pf" ] && kill -INT "$pf" && wait "$pf" || true
    kill -INT "$st"; wait "$st" || true
    echo "== $name: $(echo "$t1 - $t0" | bc) s (under strace: slower than in the benchmark)"
    head -n 14 "$OUT/$name.strace"
    if [ -n "$pf" ]; then
        perf report -i "$OUT/$name.perf.data" --no-children --stdio --sort sym 2>/dev/null \
            | grep -E '^ +[0-9.]+%' | head -n 15 > "$OUT/$name.perf.txt" || true
        cat "$OUT/$name.perf.txt"
    fi
}

declare -A W=(
    [copyup]='for f in cu1m/*; do dd if=/dev/zero of=$f bs=4k count=1 conv=notrunc status=none; done; sync'
    [seqread]='cat seq/big > /dev/null'
    [create]='mkdir c; for i in $(seq 300); do dd if=/dev/zero of=c/$i bs=4k count=1 oflag=sync status=none; done'
    [walk]='ls -lR tree > /dev/null'
    [stat]='find tree -type f -exec stat -c %i {} + > /dev/null'
    [chmod]='chmod -R g+w chtree; sync'
    [rm]='rm -rf chtree; sync'
    [untar]="mkdir u; tar -C u -xf $L/untar.tar; sync"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(copyup seqread create walk stat chmod rm untar)
for n in "${names[@]}"; do
    [ -n "${W[$n]:-}" ] || { echo "profile.sh: unknown workload $n (${!W[*]})" >&2; exit 2; }
    run_one "$n" "${W[$n]}"
done
