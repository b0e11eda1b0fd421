#!/usr/bin/env bash
# Installs what rcl's tests need on a fresh Debian/Ubuntu machine and runs every test.
# Run as root (the tests mount filesystems, create namespaces and an unprivileged test user).
# The last line is the summary: "N passed, N failed, N skipped" (skips are tests that could
# not run here and said why with an RCL-SKIP line; they are never counted as passed).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test-all.sh: run as root (sudo bash scripts/test-all.sh)" >&2
    exit 2
fi

if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq fuse3 busybox-static uidmap util-linux passwd e2fsprogs attr >/dev/null \
        || { echo "test-all.sh: apt-get install failed" >&2; exit 1; }
fi

export CARGO_TERM_COLOR=never
cargo build --workspace --bins --quiet || exit 1
cargo fmt --all -- --check || { echo "test-all.sh: cargo fmt --check failed" >&2; exit 1; }
cargo clippy --workspace --all-targets --quiet -- -D warnings || exit 1

log=$(mktemp)
export RCL_SKIP_LOG=$(mktemp)
trap 'rm -f "$log" "$RCL_SKIP_LOG"' EXIT
# Each test binary bounds its own steps with timeouts; this is the backstop for the whole run.
timeout --signal=KILL 3600 cargo test --workspace --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

ok=$(grep -cE '^test .* \.\.\. ok$' "$log")
failed=$(grep -cE '^test .* \.\.\. FAILED$' "$log")
skipped=$(grep -c '^RCL-SKIP ' "$RCL_SKIP_LOG")
echo
if [ "$skipped" -gt 0 ]; then
    echo "Skipped tests (capability missing here):"
    sed 's/^RCL-SKIP /  /' "$RCL_SKIP_LOG"
fi
# A skipped test returns early and cargo reports it "ok": count it as skipped, not passed.
passed=$((ok - skipped))
echo "$passed passed, $failed failed, $skipped skipped"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
    exit 1
fi
