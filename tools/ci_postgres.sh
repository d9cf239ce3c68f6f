#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the asyncpg integration test
# (tests/test_integration_frameworks.py), on a free port of 127.0.0.1, trust
# auth, data directory under /tmp.  Installs Debian's `postgresql` package
# when no server binaries are found (root only, non-interactive).
#
#   eval "$(bash tools/ci_postgres.sh start)"   # prints export RINGLINE_PG_DSN=... RINGLINE_PG_DIR=...
#   bash tools/ci_postgres.sh stop              # stops the cluster in $RINGLINE_PG_DIR, removes it
#
# initdb and postgres refuse to run as root: as root they run as the
# `postgres` user (created by the Debian package) through runuser.
# Progress goes to stderr; only the export lines go to stdout.
set -euo pipefail

find_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
start)
    if ! bin=$(find_bin); then
        if [ "$(id -u)" != 0 ]; then
            echo "ci_postgres: no PostgreSQL server binaries and not root: apt-get install postgresql" >&2
            exit 1
        fi
        echo "ci_postgres: installing postgresql (Debian package)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q postgresql >&2 \
            || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
        bin=$(find_bin)
    fi
    dir=$(mktemp -d /tmp/ringline-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "ci_postgres: PostgreSQL ($bin) on 127.0.0.1:$port, data in $dir" >&2
    echo "export RINGLINE_PG_DSN=postgresql://postgres@127.0.0.1:$port/postgres"
    echo "export RINGLINE_PG_DIR=$dir"
    ;;
stop)
    dir=${2:-${RINGLINE_PG_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir/data" ] || exit 0
    bin=$(find_bin) || exit 0
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
