#!/usr/bin/env bash
# Runs the local demo: migrates schema genq, starts a fake provider (fal, BytePlus and
# Replicate dialects) and a daemon, grants credits, runs generations (one refused by
# moderation, one throttled first), and prints final states, the balance and the ledger.
#
# Postgres: DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres. If nothing
# answers there, scripts/pg-env.sh starts a private throwaway cluster (when initdb/pg_ctl
# are installed) and deletes it on exit. Arguments go to `genq demo` (e.g. --per-provider 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/pg-env.sh
export DATABASE_URL

cargo build --release --locked --quiet
target/release/genq demo "$@"
