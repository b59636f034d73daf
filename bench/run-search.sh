#!/usr/bin/env bash
# Runs the search benchmark: starts a throwaway PostgreSQL cluster (Debian's server, installed
# if missing), builds the release binaries, and compares Plinth, raw tantivy and PostgreSQL
# full-text search in one run. Arguments go to `plinth-bench search` (`--documents N`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/plinth/target}"
# The same flags as `.ci/run`, so that the benchmark reuses CI's builds instead of redoing them.
if command -v ld.lld >/dev/null 2>&1; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=lld"
fi

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
pg_dir="$(mktemp -d /tmp/plinth-bench-pg.XXXXXX)"
chown postgres "$pg_dir"
pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
stop_pg() {
    su postgres -c "$pg_bin/pg_ctl -D $pg_dir/data -m fast -w stop" >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
}
trap stop_pg EXIT
su postgres -c "$pg_bin/initdb -A trust -D $pg_dir/data" >/dev/null
# Memory for the index build and the cache, as a tuned server would have; commits stay
# synchronous.
su postgres -c "$pg_bin/pg_ctl -D $pg_dir/data -l $pg_dir/log -w start -o \"-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c shared_buffers=1GB -c maintenance_work_mem=1GB -c max_wal_size=4GB\"" >/dev/null

cargo build --release -p plinth -p plinth-bench
"$CARGO_TARGET_DIR/release/plinth-bench" search \
    --plinth "$CARGO_TARGET_DIR/release/plinth" \
    --pg-url "postgres://postgres@127.0.0.1:$pg_port/postgres" "$@"
