#!/bin/sh
# Lays out every file of portcullis's container image. Two callers, so that what is tested is
# what ships:
#   - the Dockerfile runs it in the build stage (the scratch stage has no shell), then copies the
#     result into `FROM scratch` as is;
#   - scripts/check-deploy.sh runs it on the host and starts the binary from that directory as
#     the root directory (unshare --root), as uid 65532, against a real PostgreSQL.
#
# usage: rootfs.sh BINARY CONTEXT OUT
#   BINARY   the static x86_64-unknown-linux-musl portcullis
#   CONTEXT  the repository root (reads migrations/ and, when it exists, seeds/)
#   OUT      an empty or missing directory; receives
#              OUT/runtime/   the published image: /portcullis, the CA bundle, /etc/passwd and
#                             /etc/group naming uid/gid 65532, and an empty /app (the WORKDIR)
#              OUT/example/   what the `example` target adds under /: app/migrations (and
#                             app/seeds when CONTEXT has seeds/)
# CA_BUNDLE overrides the CA file copied (default: /etc/ssl/certs/ca-certificates.crt).
set -eu

if [ "$#" -ne 3 ]; then
  echo "usage: $0 BINARY CONTEXT OUT" >&2
  exit 2
fi
bin=$1
ctx=$2
out=$3
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "rootfs.sh: $out is not empty; refusing to mix old files into the image" >&2
  exit 2
fi
for f in "$bin" "$ca"; do
  if [ ! -f "$f" ]; then echo "rootfs.sh: $f: no such file" >&2; exit 2; fi
done
if [ ! -f "$ctx/migrations/meta/_journal.json" ]; then
  echo "rootfs.sh: $ctx/migrations/meta/_journal.json: no such file" >&2
  exit 2
fi

rt=$out/runtime
mkdir -p "$rt/etc/ssl/certs" "$rt/app"
cp "$bin" "$rt/portcullis"
# rustls-native-certs (sslrootcert=system) and most TLS stacks look for this exact path.
cp "$ca" "$rt/etc/ssl/certs/ca-certificates.crt"
# A name for uid/gid 65532 (the distroless "nonroot" convention), so that tools and error
# messages show a user rather than a bare number. No shell, no home: nothing logs in.
printf '%s\n' \
  'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >"$rt/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rt/etc/group"

ex=$out/example/app
mkdir -p "$ex"
cp -R "$ctx/migrations" "$ex/migrations"
if [ -d "$ctx/seeds" ]; then
  cp -R "$ctx/seeds" "$ex/seeds"
fi

# Owned by whoever builds (root in a Docker build), readable and never writable by uid 65532,
# whatever umask the checkout was made with.
chmod -R u=rwX,go=rX "$out"
chmod 0755 "$rt/portcullis"
