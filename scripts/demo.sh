#!/usr/bin/env bash
# Runs the local demo: migrates schema genq, starts a daemon, enqueues sample jobs (some
# retry, one is rejected, one has an unknown kind) and shows them reach their final state.
#
# Postgres: DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres. If nothing
# answers there, scripts/pg-env.sh starts a private throwaway cluster (when initdb/pg_ctl
# are installed) and deletes it on exit. Arguments go to `genq demo` (e.g. --jobs 20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/pg-env.sh
export DATABASE_URL

cargo build --release --locked --quiet
target/release/genq demo "$@"
