#!/usr/bin/env bash
# Starts a throwaway PostgreSQL from the local binaries (installing Debian's postgresql when
# missing), runs `portcullis migrate` on the example app's migrations and seeds twice (the second
# run is what every later deploy pays: no migration pending, the idempotent seeds run again and
# change no row count), shows the result, and stops the server it started.
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
export PORTCULLIS_SEEDS_DIR="$PWD/seeds"
# The demo rows of seeds/development/ run after the common seeds.
export PORTCULLIS_SEED_ENV=development
# Read by seeds/2_admin_user.sql as current_setting('portcullis.admin_email'); never printed.
export PORTCULLIS_SEED_VAR_ADMIN_EMAIL=ops@example.com
psql() {
  PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -X -q "$@"
}
row_counts() {
  psql -c "select (select count(*) from organisations) as organisations,
                  (select count(*) from users) as users,
                  (select count(*) from memberships) as memberships,
                  (select count(*) from invitations) as invitations"
}

echo
echo "==> portcullis migrate (first deploy: migrations, then seeds)"
"$portcullis" migrate
row_counts
echo "==> portcullis migrate (every later deploy: nothing pending, the seeds run again)"
"$portcullis" migrate
row_counts
echo "==> the tracking table, shared with drizzle-kit"
psql -c 'select id, left(hash, 16) as hash, created_at from drizzle.__drizzle_migrations order by id' \
  -c '\dt public.*'
echo "==> what the seeds put there"
psql -c 'select o.slug as organisation, u.email, m.role
           from memberships m join users u on u.id = m.user_id
           join organisations o on o.id = m.organisation_id order by 1, 3, 2'
echo "==> portcullis status (migrations and seeds)"
"$portcullis" status
echo "==> stopping the throwaway server"
