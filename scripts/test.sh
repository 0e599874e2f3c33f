#!/usr/bin/env bash
# Installs what the tests need (PostgreSQL server binaries, openssl, PgBouncer, Node.js and npm
# for the drizzle-kit conformance suite) and runs the whole test suite: unit tests and the
# integration tests, which start their own throwaway PostgreSQL clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

ensure_postgres
# The TLS tests make certificates with openssl; the pooler test puts PgBouncer in front.
missing=()
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing+=(pgbouncer)
# The conformance suite (tests/conformance) runs the real drizzle-kit (npm ci on first run) and
# ../shared/bench/gen_corpus.py; tests/v1 runs the real drizzle-kit 1.0 the same way.
{ command -v node >/dev/null && command -v npm >/dev/null; } || missing+=(nodejs npm)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} for the tests..." >&2
  apt_install "${missing[@]}"
  # Debian starts a system PgBouncer on install; the tests run their own.
  if command -v service >/dev/null; then service pgbouncer stop >/dev/null 2>&1 || true; fi
fi
# A test runs a server whose messages are in German (lc_messages).
ensure_german_locale
export PG_BIN="${PG_BIN:-$(pg_bin_dir)}"
echo "using PostgreSQL from $PG_BIN ($("$PG_BIN/postgres" --version))"

# Two cores: four test threads keep both busy while PostgreSQL does its share.
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-4}"
