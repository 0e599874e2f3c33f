#!/usr/bin/env bash
# Rebuild ../../migrations from scratch with the real drizzle-kit.
#
# Each steps/NN_<name>.ts file is one revision of the schema. The steps are
# applied in order: the file is copied to src/schema.ts and
# `drizzle-kit generate --name <name>` writes one migration for the
# difference from the previous step. At the end, src/schema.ts holds the
# last step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

MIGRATIONS_DIR="../../migrations"

if [[ ! -d node_modules ]]; then
  npm ci
fi

# `generate` never connects to a database, but drizzle.config.ts reads
# DATABASE_URL, so give it a placeholder when none is set.
export DATABASE_URL="${DATABASE_URL:-postgres://localhost/unused}"

shopt -s nullglob
steps=(steps/[0-9][0-9]_*.ts)
shopt -u nullglob
if [[ ${#steps[@]} -eq 0 ]]; then
  echo "generate.sh: no steps/NN_*.ts files found" >&2
  exit 1
fi

rm -rf "$MIGRATIONS_DIR"

for step in "${steps[@]}"; do
  file="$(basename "$step" .ts)"
  name="${file#[0-9][0-9]_}"
  echo "==> $step (name: $name)"
  cp "$step" src/schema.ts
  npx --no-install drizzle-kit generate --name "$name" </dev/null
done

echo "==> migrations written to $(cd "$MIGRATIONS_DIR" && pwd)"
