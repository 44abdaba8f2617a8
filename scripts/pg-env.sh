# shellcheck shell=bash
#
# scripts/pg-env.sh: make sure a Postgres answers for genq, and export DATABASE_URL.
#
# SOURCE this file from bash (do not execute it):   source scripts/pg-env.sh
# scripts/demo.sh and scripts/test.sh do that for you.
#
# What it does, in order:
#   1. DATABASE_URL is taken from the environment, else it defaults to
#      postgres://postgres@127.0.0.1:5432/postgres.
#   2. If a server answers at the URL's host and port (pg_isready; without pg_isready, a
#      psql query or a bash /dev/tcp connect), nothing else happens.
#   3. Else, if the URL points at this machine (127.0.0.1, localhost, ::1 or a unix socket)
#      and this is a Debian/Ubuntu machine whose own cluster is merely stopped
#      (pg_ctlcluster exists, /etc/postgresql lists a version, and that version's `main`
#      cluster uses the URL's port), the cluster is started with
#      `pg_ctlcluster --skip-systemctl-redirect <version> main start`, and we wait until it is
#      ready. It is left running afterwards: it is the machine's cluster, not ours.
#   4. Else, if the server binaries initdb and pg_ctl are found (on PATH or under
#      /usr/lib/postgresql/*/bin), a PRIVATE THROWAWAY cluster is created in a temporary
#      directory (initdb -A trust -U postgres), started on a free port on 127.0.0.1 with its
#      unix socket in that directory, and DATABASE_URL is REPLACED by
#      postgres://postgres@127.0.0.1:<port>/postgres, even if DATABASE_URL was set: a URL
#      that nothing answers is ignored (with a warning on stderr). An EXIT trap in the
#      sourcing shell stops that cluster and deletes the directory (an EXIT trap already
#      present is kept and runs after ours). initdb refuses to run as root, so as root the
#      cluster is created and run as the user `postgres` (runuser, else su) in a directory
#      under /tmp owned by postgres.
#   5. Else it prints what to install and returns 1.
#
# Safe under `set -euo pipefail` in the sourcing script. Messages go to stderr, prefixed
# with "pg-env:". All helpers are named _genq_pg_*.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "pg-env: source this file instead of running it:  source ${BASH_SOURCE[0]}" >&2
    exit 2
fi

_GENQ_PG_DEFAULT_URL="postgres://postgres@127.0.0.1:5432/postgres"

_genq_pg_say() { echo "pg-env: $*" >&2; }

# Finds a PostgreSQL program on PATH, else in the newest /usr/lib/postgresql/*/bin.
_genq_pg_find() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x "$dir/$name" ]]; then
            echo "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Splits a postgres:// URL into _GENQ_PG_HOST (empty: the default unix socket, or a socket
# directory starting with /) and _GENQ_PG_PORT (default 5432).
_genq_pg_parse_url() {
    local url=$1 rest authority hostport query
    rest=${url#*://}
    authority=${rest%%[/?]*}
    hostport=${authority##*@}
    if [[ "$hostport" == \[* ]]; then
        _GENQ_PG_HOST=${hostport%%]*}
        _GENQ_PG_HOST=${_GENQ_PG_HOST#[}
        _GENQ_PG_PORT=${hostport#*]}
        _GENQ_PG_PORT=${_GENQ_PG_PORT#:}
    elif [[ "$hostport" == *:* ]]; then
        _GENQ_PG_HOST=${hostport%%:*}
        _GENQ_PG_PORT=${hostport##*:}
    else
        _GENQ_PG_HOST=$hostport
        _GENQ_PG_PORT=
    fi
    # Percent-encoded socket directory (postgres://%2Fvar%2Frun%2Fpostgresql/db).
    _GENQ_PG_HOST=${_GENQ_PG_HOST//%2F/\/}
    _GENQ_PG_HOST=${_GENQ_PG_HOST//%2f/\/}
    # ?host=... and ?port=... in the query string win, as in libpq.
    if [[ "$rest" == *\?* ]]; then
        query="&${rest#*\?}&"
        if [[ "$query" =~ \&host=([^\&]*)\& ]]; then
            _GENQ_PG_HOST=${BASH_REMATCH[1]//%2F/\/}
        fi
        if [[ "$query" =~ \&port=([0-9]+)\& ]]; then
            _GENQ_PG_PORT=${BASH_REMATCH[1]}
        fi
    fi
    [[ -n "$_GENQ_PG_PORT" ]] || _GENQ_PG_PORT=5432
}

# Whether something accepts connections on 127.0.0.1:$1 (any program, not only Postgres).
_genq_pg_port_busy() {
    (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Whether a Postgres answers at host $1 (empty: default socket) and port $2.
# Exit status: 0 ready, 1 answering but not ready yet (starting up), 2 nothing answers.
_genq_pg_probe() {
    local host=$1 port=$2 isready rc
    local -a args=(-q -t 3 -p "$port")
    [[ -n "$host" ]] && args+=(-h "$host")
    if isready=$(_genq_pg_find pg_isready); then
        rc=0
        "$isready" "${args[@]}" >/dev/null 2>&1 || rc=$?
        case $rc in
            0) return 0 ;;
            1) return 1 ;;
            *) return 2 ;;
        esac
    fi
    if command -v psql >/dev/null 2>&1; then
        if PGCONNECT_TIMEOUT=3 psql "${DATABASE_URL:-$_GENQ_PG_DEFAULT_URL}" -Atqc 'select 1' \
            >/dev/null 2>&1; then
            return 0
        fi
        return 2
    fi
    # Last resort: does anything accept TCP connections there?
    if [[ -z "$host" || "$host" == /* ]]; then
        return 2
    fi
    local t=""
    command -v timeout >/dev/null 2>&1 && t="timeout 3"
    if $t bash -c ": <>/dev/tcp/$host/$port" 2>/dev/null; then
        return 0
    fi
    return 2
}

# Waits up to $3 seconds for a Postgres at host $1, port $2.
_genq_pg_wait() {
    local host=$1 port=$2 seconds=$3 i
    for ((i = 0; i < seconds * 5; i++)); do
        _genq_pg_probe "$host" "$port" && return 0
        sleep 0.2
    done
    return 1
}

_genq_pg_is_local() {
    case $1 in
        "" | /* | 127.0.0.1 | localhost | ::1) return 0 ;;
        *) return 1 ;;
    esac
}

# Step 3: start this machine's stopped Debian cluster on the URL's port, if there is one.
_genq_pg_start_debian() {
    local port=$1 version conf cluster_port
    command -v pg_ctlcluster >/dev/null 2>&1 || return 1
    [[ -d /etc/postgresql ]] || return 1
    for version in $(ls /etc/postgresql 2>/dev/null | sort -rV); do
        conf=/etc/postgresql/$version/main/postgresql.conf
        [[ -r "$conf" ]] || continue
        cluster_port=$(sed -nE 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p' "$conf" | tail -n 1)
        [[ "${cluster_port:-5432}" == "$port" ]] || continue
        _genq_pg_say "starting this machine's PostgreSQL $version cluster 'main' (port $port)"
        if ! pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2; then
            _genq_pg_say "pg_ctlcluster could not start it (are you root or the cluster owner?)"
            return 1
        fi
        return 0
    done
    return 1
}

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
_genq_pg_as_owner() {
    if [[ $(id -u) -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su postgres -s /bin/bash -c "$(printf '%q ' "$@")")
    fi
}

# Stops the private cluster and deletes its directory. Never fails (it runs in an EXIT
# trap, where a failing command under `set -e` would change the script's exit status).
_genq_pg_cleanup() {
    if [[ -n "${_GENQ_PG_PRIVATE_DIR:-}" && -d "${_GENQ_PG_PRIVATE_DIR}" ]]; then
        _genq_pg_as_owner "$_GENQ_PG_CTL" -D "$_GENQ_PG_PRIVATE_DIR/data" -m immediate -w \
            stop >/dev/null 2>&1 || true
        rm -rf "$_GENQ_PG_PRIVATE_DIR" 2>/dev/null || true
    fi
    _GENQ_PG_PRIVATE_DIR=""
    return 0
}

# Step 4: create and start a throwaway cluster; exports DATABASE_URL pointing at it.
_genq_pg_start_private() {
    local initdb pg_ctl base dir port attempt started=""
    initdb=$(_genq_pg_find initdb) || return 1
    pg_ctl=$(_genq_pg_find pg_ctl) || return 1
    base=${TMPDIR:-/tmp}
    if [[ $(id -u) -eq 0 ]]; then
        if ! id -u postgres >/dev/null 2>&1; then
            _genq_pg_say "initdb refuses to run as root and there is no user 'postgres' to run it as;"
            _genq_pg_say "create one (useradd -r -m postgres) or run as a normal user"
            return 1
        fi
        base=/tmp # postgres must be able to reach the directory
    fi
    dir=$(mktemp -d "${base%/}/genq-pg.XXXXXX") || return 1
    _GENQ_PG_PRIVATE_DIR=$dir
    _GENQ_PG_CTL=$pg_ctl
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    _genq_pg_say "no Postgres answers; creating a private throwaway cluster in $dir"
    if ! _genq_pg_as_owner "$initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1; then
        _genq_pg_say "initdb failed:"
        cat "$dir/initdb.log" >&2
        _genq_pg_cleanup
        return 1
    fi
    for attempt in 1 2 3 4 5 6 7 8; do
        port=$((15000 + RANDOM % 15000))
        _genq_pg_port_busy "$port" && continue
        if _genq_pg_as_owner "$pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
            -o "-p $port -c listen_addresses=127.0.0.1 -k '$dir' -c max_connections=200" \
            start >/dev/null 2>&1; then
            started=$port
            break
        fi
    done
    if [[ -z "$started" ]] || ! _genq_pg_wait 127.0.0.1 "$started" 30; then
        _genq_pg_say "the private cluster did not start; its log:"
        tail -n 20 "$dir/postgres.log" >&2 2>/dev/null || true
        _genq_pg_cleanup
        return 1
    fi
    # Stop and delete it when the sourcing shell exits; keep any EXIT trap already set.
    local previous=""
    eval "set -- $(trap -p EXIT)"
    previous=${3:-}
    if [[ -n "$previous" && "$previous" != *_genq_pg_cleanup* ]]; then
        # shellcheck disable=SC2064
        trap "_genq_pg_cleanup; $previous" EXIT
    else
        trap _genq_pg_cleanup EXIT
    fi
    export DATABASE_URL="postgres://postgres@127.0.0.1:$started/postgres"
    _genq_pg_say "private Postgres ready at $DATABASE_URL (stopped and deleted when this shell exits)"
    return 0
}

_genq_pg_env_main() {
    local url=${DATABASE_URL:-$_GENQ_PG_DEFAULT_URL} rc
    export DATABASE_URL=$url
    _genq_pg_parse_url "$url"
    local host=$_GENQ_PG_HOST port=$_GENQ_PG_PORT

    rc=0
    _genq_pg_probe "$host" "$port" || rc=$?
    if [[ $rc -eq 0 ]]; then
        return 0
    fi
    if [[ $rc -eq 1 ]]; then
        # It answers but is not ready yet (starting up, or recovering).
        _genq_pg_wait "$host" "$port" 60 && return 0
    fi

    if _genq_pg_is_local "$host" && _genq_pg_start_debian "$port"; then
        if _genq_pg_wait "$host" "$port" 60; then
            return 0
        fi
        _genq_pg_say "the cluster was started but does not answer at ${host:-<socket>}:$port"
    fi

    if _genq_pg_find initdb >/dev/null && _genq_pg_find pg_ctl >/dev/null; then
        if [[ "$url" != "$_GENQ_PG_DEFAULT_URL" ]]; then
            _genq_pg_say "warning: nothing answers at DATABASE_URL (${host:-<socket>}:$port); ignoring it"
        fi
        _genq_pg_start_private && return 0
        return 1
    fi

    _genq_pg_say "no Postgres answers at ${host:-<socket>}:$port, and the server binaries (initdb, pg_ctl) are not installed."
    _genq_pg_say "install PostgreSQL: apt-get install postgresql (Debian/Ubuntu) or brew install postgresql (macOS),"
    _genq_pg_say "or set DATABASE_URL to a reachable server (postgres://USER:PASSWORD@HOST:PORT/DB)."
    return 1
}

_genq_pg_env_main
