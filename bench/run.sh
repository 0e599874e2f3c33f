#!/usr/bin/env bash
# portcullis against drizzle-kit, drizzle-orm's migrate() and psql (the floor), side by side:
# no-op and full apply of generated drizzle folders (N=200 and 1000), peak RSS, 1/10/50 replicas
# at once, cold start. Writes bench/RESULTS.md and bench/results.png.
#
#   ./bench/run.sh                 # ~10 min of measuring on a busy 2-core machine, plus setup
#   ROUNDS=3 ./bench/run.sh        # fewer rounds for every scenario (quick look)
#
# Environment (all optional):
#   ROUNDS                rounds of every scenario (defaults: noop 11, full 5, replicas 5, cold 11)
#   ROUNDS_NOOP, ROUNDS_FULL, ROUNDS_REPLICAS, ROUNDS_COLD   per scenario
#   WARMUP                untimed warm-up rounds per scenario (default 1)
#   SCENARIOS             subset of "noop full replicas cold"
#   SIZES                 folder sizes for noop/full/cold (default "200 1000")
#   REPLICAS              replica counts (default "1 10 50"); REPLICA_N folder size (default 200)
#   GEN_CORPUS            gen_corpus.py to use (default ../shared/bench/gen_corpus.py from the
#                         repository root)
#   BENCH_PG_TMPFS=0      keep PostgreSQL's data directory in /tmp instead of /dev/shm
#   PORTCULLIS_BIN        measure this binary instead of building target/release/portcullis
#                         (PORTCULLIS_REV: a note on where it comes from, for RESULTS.md)
#
# Needs (installed when missing, as root or via sudo, with apt-get): PostgreSQL server and psql
# (Debian postgresql), GNU time (time), python3 with venv (python3-venv); and node + npm
# (Node 18+), cargo, git.
# matplotlib goes into a venv in target/bench/venv (bench/requirements.txt), drizzle-kit,
# drizzle-orm and pg into bench/node_modules (npm ci, bench/package-lock.json). Work files
# (folders, logs, raw results.json) go to target/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib/pg.sh
work="$root/target/bench"
gen=${GEN_CORPUS:-$root/../shared/bench/gen_corpus.py}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

apt_install() { # apt_install PACKAGE...
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to run: apt-get install -y $*"
    sudo=sudo
  fi
  command -v apt-get >/dev/null || die "please install: $*"
  say "installing $* with apt-get"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { $sudo apt-get update -q >/dev/null \
         && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

for tool in node npm cargo git; do
  command -v "$tool" >/dev/null || die "$tool is missing (node + npm from nodejs.org or your distribution, cargo from rustup.rs)"
done
command -v python3 >/dev/null || apt_install python3
[ -f "$gen" ] || die "gen_corpus.py not found at $gen (set GEN_CORPUS)"
ensure_postgres
pg_bin=$(pg_bin_dir)
psql="$pg_bin/psql"
[ -x "$psql" ] || psql=$(command -v psql || true)
[ -x "$psql" ] || { apt_install postgresql-client; psql=$(command -v psql); }
[ -x /usr/bin/time ] || apt_install time   # GNU time, for peak RSS (%M)
mkdir -p "$work"

say "python venv with matplotlib (target/bench/venv)"
if ! "$work/venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  rm -rf "$work/venv"
  python3 -m venv "$work/venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$work/venv"; }
  "$work/venv/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
fi

say "drizzle-kit, drizzle-orm and pg (npm ci in bench/)"
if [ ! -f bench/node_modules/.ci-stamp ] || [ bench/package-lock.json -nt bench/node_modules/.ci-stamp ]; then
  (cd bench && npm ci --no-audit --no-fund --loglevel=error)
  touch bench/node_modules/.ci-stamp
fi

if [ -n "${PORTCULLIS_BIN:-}" ]; then
  portcullis=$(realpath "$PORTCULLIS_BIN")
  rev="binary from PORTCULLIS_BIN${PORTCULLIS_REV:+: $PORTCULLIS_REV}"
else
  say "cargo build --release --locked"
  cargo build --release --locked --quiet
  portcullis="$root/target/release/portcullis"
  rev="git $(git describe --always --dirty 2>/dev/null || echo unknown)"
fi

say "drizzle folders (gen_corpus.py from $gen)"
sizes=$(printf '%s\n' ${SIZES:-200 1000} "${REPLICA_N:-200}" | sort -un)
for n in $sizes; do
  d="$work/n$n"
  mkdir -p "$d"
  python3 "$gen" -n "$n" -o "$d/drizzle" --all-sql "$d/all.sql" 2>&1 | sed 's/^/    /' >&2
  # drizzle-kit reads DATABASE_URL through its config, as an app's drizzle.config.ts would.
  cat > "$d/drizzle.config.ts" <<'EOF'
export default {
  dialect: 'postgresql',
  out: './drizzle',
  dbCredentials: { url: process.env.DATABASE_URL! },
};
EOF
done

# PostgreSQL's data directory on tmpfs when there is one, so disk noise stays out of the figures.
# pg_start_throwaway makes it with `mktemp -d /tmp/portcullis-pg.XXXXXX`; this shim moves only
# that directory.
pg_parent=/tmp
if [ "${BENCH_PG_TMPFS:-1}" != 0 ] && [ -d /dev/shm ] && [ -w /dev/shm ] \
   && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
  pg_parent=/dev/shm
fi
mktemp() {
  if [ "$#" -eq 2 ] && [ "$1" = -d ] && [[ $2 == /tmp/portcullis-pg.* ]]; then
    command mktemp -d "$pg_parent/portcullis-pg.XXXXXX"
  else
    command mktemp "$@"
  fi
}
trap pg_stop_throwaway EXIT
pg_start_throwaway
unset -f mktemp
fstype=$(stat -f -c %T "$PG_WORK")
say "PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT, data in $PG_WORK ($fstype)"

BENCH_ROOT="$root" BENCH_WORK="$work" BENCH_PG_PORT="$PG_PORT" BENCH_PG_PASSWORD="$PG_PASSWORD" \
BENCH_PSQL="$psql" BENCH_PORTCULLIS="$portcullis" BENCH_PG_DATA="$PG_WORK ($fstype)" \
BENCH_PORTCULLIS_REV="$rev" BENCH_GNU_TIME=/usr/bin/time BENCH_PG_PID="$PG_PID" \
  "$work/venv/bin/python" bench/bench.py
