#!/usr/bin/env bash
# Runs the test suite: `cargo nextest run` when cargo-nextest is installed, else `cargo test`,
# then the doctests (`cargo test --doc`; nextest does not run them). Arguments go to the
# first command (e.g. a test name filter). Exits non-zero if either run failed.
#
# Tests use #[sqlx::test], which creates a fresh database per test from DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres; the role needs CREATEDB). If nothing
# answers there, scripts/pg-env.sh starts a private throwaway cluster (when initdb/pg_ctl
# are installed) and deletes it on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/pg-env.sh
export DATABASE_URL

status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "$@" || status=$?
else
    echo "test.sh: cargo-nextest not installed; using cargo test (cargo install cargo-nextest --locked)" >&2
    cargo test --locked "$@" || status=$?
fi
doc_status=0
cargo test --doc --locked || doc_status=$?

if [[ $status -ne 0 ]]; then
    exit "$status"
fi
exit "$doc_status"
