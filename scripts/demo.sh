#!/usr/bin/env bash
# Starts a throwaway PostgreSQL from the local binaries (installing Debian's postgresql when
# missing), runs `portcullis migrate` on the example app's migrations twice (the second run is the
# no-op every later deploy pays), shows the result, and stops the server it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

ensure_postgres
bin=$(pg_bin_dir)
echo "==> building portcullis (release)"
cargo build --release --locked --quiet
portcullis="$PWD/target/release/portcullis"

trap pg_stop_throwaway EXIT
pg_start_throwaway
echo "==> throwaway PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT"

export DATABASE_URL="$PG_URL"
export PORTCULLIS_MIGRATIONS_DIR="$PWD/migrations"

echo
echo "==> portcullis migrate (first deploy)"
"$portcullis" migrate
echo
echo "==> portcullis migrate (every later deploy: nothing pending)"
"$portcullis" migrate
echo
echo "==> the tracking table, shared with drizzle-kit"
PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -X -q \
  -c 'select id, left(hash, 16) as hash, created_at from drizzle.__drizzle_migrations order by id' \
  -c '\dt public.*'
echo "==> stopping the throwaway server"
