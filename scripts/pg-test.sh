#!/usr/bin/env bash
# A throwaway PostgreSQL for Keyward's tests and benchmarks: initdb into a temp dir, listen on 127.0.0.1 on a free
# port, trust authentication, no durability tuning beyond fsync=off (the data is thrown away).
#
#   eval "$(scripts/pg-test.sh start [DIR])"   # prints export lines: KEYWARD_TEST_PG_URL, KEYWARD_TEST_PG_DIR
#   scripts/pg-test.sh kill [DIR]              # stop at once (pg_ctl -m immediate): connections drop, data kept
#   scripts/pg-test.sh restart [DIR]           # start again on the same port after `kill`
#   scripts/pg-test.sh stop [DIR]              # stop and delete DIR
#
# DIR defaults to $KEYWARD_TEST_PG_DIR (for stop/kill/restart) or a new temp dir (for start). initdb and pg_ctl
# refuse to run as root, so as root they run as the `postgres` user (created by Debian's postgresql package).
# The binaries are found in $PG_BIN, else the newest /usr/lib/postgresql/*/bin, else on PATH.
set -euo pipefail

find_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    echo "pg-test.sh: no PostgreSQL binaries found (install Debian's postgresql package or set PG_BIN)" >&2
    exit 1
}

# Run a PostgreSQL tool as a non-root user.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

dir_arg() {
    local d="${1:-${KEYWARD_TEST_PG_DIR:-}}"
    if [[ -z "$d" ]]; then echo "pg-test.sh: give DIR or set KEYWARD_TEST_PG_DIR" >&2; exit 2; fi
    echo "$d"
}

pg_start() {
    local bin="$1" dir="$2" port="$3"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c max_connections=300" start >/dev/null
}

cmd="${1:-}"
shift || true
BIN=$(find_bin)
case "$cmd" in
start)
    dir="${1:-$(mktemp -d /tmp/keyward-pg.XXXXXX)}"
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$dir"; fi
    chmod 700 "$dir"
    as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    started=""
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        if pg_start "$BIN" "$dir" "$port" 2>/dev/null; then started=1; break; fi
    done
    if [[ -z "$started" ]]; then
        echo "pg-test.sh: could not start PostgreSQL; log:" >&2
        cat "$dir/server.log" >&2 || true
        exit 1
    fi
    echo "$port" >"$dir/port"
    echo "export KEYWARD_TEST_PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
    echo "export KEYWARD_TEST_PG_DIR=$dir"
    ;;
kill)
    dir=$(dir_arg "${1:-}")
    as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null
    ;;
restart)
    dir=$(dir_arg "${1:-}")
    pg_start "$BIN" "$dir" "$(cat "$dir/port")"
    ;;
stop)
    dir=$(dir_arg "${1:-}")
    as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|kill|restart|stop [DIR]" >&2
    exit 2
    ;;
esac
