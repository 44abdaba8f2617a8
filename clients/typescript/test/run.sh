#!/usr/bin/env bash
# The TypeScript client's checks, as .ci/run calls them after the Rust tests:
#   1. node dependencies from the committed lock file (`npm ci`, skipped when node_modules
#      already matches it),
#   2. the package build (strict tsc to dist/),
#   3. `tsc --noEmit` on the example route handler (every function, and a deliberate compile
#      error for a wrong payload type, expected with @ts-expect-error),
#   4. `node --test`: unit tests, then the suite against a real Postgres (a fresh database
#      migrated by the real `genq migrate`), the real `genq fake-provider` and a real
#      `genq run`, on node-postgres and postgres.js.
# The genq binary: $GENQ_BIN, else target/debug/genq (built with cargo when missing).
# Postgres: DATABASE_URL as scripts/pg-env.sh resolves it (a private cluster if none answers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(cd ../.. && pwd)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "clients/typescript: node and npm are needed (Node 18+; apt-get install nodejs npm)" >&2
    exit 1
fi
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

node_modules/.bin/tsc -p tsconfig.json
node_modules/.bin/tsc -p examples/nextjs-route/tsconfig.json --noEmit
rm -rf build
node_modules/.bin/tsc -p test/tsconfig.json

export GENQ_BIN="${GENQ_BIN:-$repo/target/debug/genq}"
if [[ ! -x $GENQ_BIN ]]; then
    (cd "$repo" && cargo build --locked --bin genq)
fi
source "$repo/scripts/pg-env.sh"
export DATABASE_URL

node --test build/test/unit.test.js build/test/main.test.js
