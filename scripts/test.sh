#!/usr/bin/env bash
# Installs what the tests need (PostgreSQL server binaries) and runs the whole test suite:
# unit tests and the integration tests, which start their own throwaway PostgreSQL clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

ensure_postgres
export PG_BIN="${PG_BIN:-$(pg_bin_dir)}"
echo "using PostgreSQL from $PG_BIN ($("$PG_BIN/postgres" --version))"

# Two cores: four test threads keep both busy while PostgreSQL does its share.
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-4}"
