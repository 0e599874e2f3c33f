#!/usr/bin/env bash
# The cost every deploy pays: a `migrate` with nothing pending, portcullis against drizzle-kit on
# the same database (the example app's 4 migrations, already applied), plus peak memory.
# Needs: PostgreSQL binaries, node + npm (drizzle-kit from examples/drizzle-app), hyperfine and
# GNU time (Debian packages hyperfine, time). Usage: bench/noop.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh
runs=${1:-30}
ensure_postgres
for tool in hyperfine /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "error: $tool missing (apt-get install -y hyperfine time)" >&2; exit 1; }
done
cargo build --release --locked --quiet
(cd examples/drizzle-app && { [ -d node_modules ] || npm ci --silent; })

trap pg_stop_throwaway EXIT
pg_start_throwaway
export DATABASE_URL="$PG_URL" PORTCULLIS_MIGRATIONS_DIR="$PWD/migrations"
portcullis="$PWD/target/release/portcullis"
kit="$PWD/examples/drizzle-app/node_modules/.bin/drizzle-kit"
"$portcullis" migrate 2>/dev/null

echo "machine: $(nproc) cores, $(uname -sr); PostgreSQL $PG_VERSION; node $(node --version);" \
  "drizzle-kit $(cd examples/drizzle-app && node -p 'JSON.parse(require("fs").readFileSync("node_modules/drizzle-kit/package.json")).version')"
echo "binary: $(stat -c %s "$portcullis") bytes"
hyperfine -N --warmup 3 --runs "$runs" \
  -n portcullis "$portcullis migrate" \
  -n drizzle-kit "bash -c 'cd examples/drizzle-app && exec $kit migrate'"

peak() { # median peak RSS (KiB) over 5 runs of "$@"
  for _ in 1 2 3 4 5; do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; done | sort -n | sed -n 3p
}
echo "peak RSS (median of 5): portcullis $(peak "$portcullis" migrate) KiB," \
  "drizzle-kit $(cd examples/drizzle-app && peak "$kit" migrate) KiB"
