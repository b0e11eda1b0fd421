#!/usr/bin/env bash
# Runs the overlay benchmark on a journaled ext4 of its own (a loop-mounted image), then the
# report. Why: on an ext4 *without* a journal (this VM's root fs) the kernel skips inodes
# deleted in the last minutes when it allocates new ones (`recently_deleted` in
# find_inode_bit), and a create in a directory where the previous iteration removed its files
# costs ~1 ms instead of ~20 us: every implementation measured after another one in a
# create-heavy group paid for the deletions before it. A journaled ext4 (the usual setup) does
# not make that check.
#
#   sudo bash benches/run.sh [criterion filter]       (env as for `cargo bench --bench overlay`)
#
# RCL_BENCH_IMG (default /var/tmp/rcl-bench-ext4.img, 8 GiB sparse, made once and kept),
# RCL_BENCH_DIR (default /var/tmp/rcl-bench-ext4: the image's mountpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run.sh: run as root (loop mount)" >&2; exit 1; }
IMG=${RCL_BENCH_IMG:-/var/tmp/rcl-bench-ext4.img}
DIR=${RCL_BENCH_DIR:-/var/tmp/rcl-bench-ext4}
if [ ! -f "$IMG" ]; then
    truncate -s 8G "$IMG"
    mkfs.ext4 -q -F "$IMG"
fi
mkdir -p "$DIR"
mounted=0
if ! mountpoint -q "$DIR"; then
    mount -o loop "$IMG" "$DIR"
    mounted=1
fi
cleanup() { [ "$mounted" -eq 1 ] && umount "$DIR" || true; }
trap cleanup EXIT
cargo build --release -p fsimpl --bin rcl-fs
cargo build --release --bin rcl
RCL_BENCH_DIR="$DIR" RCL_FS_BIN="${RCL_FS_BIN:-$PWD/target/release/rcl-fs}" \
    RCL_BIN="${RCL_BIN:-$PWD/target/release/rcl}" cargo bench --bench overlay -- "$@"
python3 benches/compare.py
