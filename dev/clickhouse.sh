#!/usr/bin/env bash
# Local ClickHouse servers for Courier's development and tests.
#
#   dev/clickhouse.sh start    install if missing, start (idempotent)
#   dev/clickhouse.sh stop     stop the server started from this clone (data is kept)
#   dev/clickhouse.sh status   say whether it runs (exit 0 iff it answers)
#   dev/clickhouse.sh url      its HTTP URL
#   dev/clickhouse.sh destroy  stop it and delete its data, logs and configuration
#   dev/clickhouse.sh client [args]   clickhouse-client against it (main only)
#
# COURIER_CLICKHOUSE_INSTANCE picks the server (main when unset):
#
#   instance  version  HTTP   native  from                          data
#   main      18.16    58123  59000   Debian's clickhouse-server    .dev/clickhouse/
#   26        26.9     58124  -       PyPI's chdb-core 26.9.0       .dev/clickhouse-26/
#
# main (`18` names it too): HTTP and native protocol, loopback only, user
# `default` without a password (a local development server).
# COURIER_CLICKHOUSE_HTTP_PORT, COURIER_CLICKHOUSE_TCP_PORT.
#
# 26: ClickHouse 26.9 as PyPI ships it, the engine of chdb-core (installed
# with pip --no-deps into a venv under .dev/chdb/). Its clickhouse-local
# serves ClickHouse's own HTTP interface (SYSTEM START LISTEN HTTP, on the
# port of the config.xml in its working directory) for as long as the query
# that started it runs, so the server is a Python process running a query
# that sleeps until it is stopped. Data persists across restarts; there is
# no asynchronous insert queue (clickhouse-local runs none).
# COURIER_CLICKHOUSE_26_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=clickhouse
# shellcheck source=dev/lib.sh
. "$ROOT/dev/lib.sh"

CHDB_VERSION=26.9.0

case "${COURIER_CLICKHOUSE_INSTANCE:-main}" in
    main | 18)
        INSTANCE=main
        DIR="$ROOT/.dev/clickhouse"
        HTTP_PORT="${COURIER_CLICKHOUSE_HTTP_PORT:-58123}"
        TCP_PORT="${COURIER_CLICKHOUSE_TCP_PORT:-59000}"
        ;;
    26)
        INSTANCE=26
        # shellcheck disable=SC2034 # read by lib.sh
        DEV_NAME=clickhouse-26
        DIR="$ROOT/.dev/clickhouse-26"
        HTTP_PORT="${COURIER_CLICKHOUSE_26_PORT:-58124}"
        TCP_PORT=""
        VENV="$ROOT/.dev/chdb/venv-$CHDB_VERSION"
        ;;
    *)
        die "COURIER_CLICKHOUSE_INSTANCE=$COURIER_CLICKHOUSE_INSTANCE: expected main (or 18) or 26"
        ;;
esac
PIDFILE="$DIR/clickhouse.pid"

# Where it listens, for messages.
where() {
    if [ -n "$TCP_PORT" ]; then
        echo "127.0.0.1:$HTTP_PORT (http), 127.0.0.1:$TCP_PORT (native)"
    else
        echo "127.0.0.1:$HTTP_PORT (http)"
    fi
}

ensure_installed() {
    if [ "$INSTANCE" = main ]; then
        # Debian's package registers its own service on 8123/9000; Courier's runs beside it.
        ensure_apt_packages clickhouse-server clickhouse-client curl
        return
    fi
    command -v curl >/dev/null || ensure_apt_packages curl
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import chdb' 2>/dev/null && return 0
    mkdir -p "$ROOT/.dev/chdb"
    (
        flock 7
        "$VENV/bin/python" -c 'import chdb' 2>/dev/null && exit 0
        /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || ensure_apt_packages python3-venv
        local log="$ROOT/.dev/chdb/pip.log"
        say "installing ClickHouse 26.9 (chdb-core $CHDB_VERSION from PyPI, ~180 MB) into $VENV"
        rm -rf "$VENV"
        if ! { /usr/bin/python3 -m venv "$VENV" &&
            "$VENV/bin/pip" install --no-deps --disable-pip-version-check -q \
                "chdb-core==$CHDB_VERSION"; } </dev/null >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            rm -rf "$VENV"
            die "pip could not install chdb-core==$CHDB_VERSION (output above)"
        fi
    ) 7>"$ROOT/.dev/chdb/.lock" || exit 1
}

is_running() {
    curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/?query=SELECT%201" 2>/dev/null | grep -q '^1$'
}

main_write_conf() {
    mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/log" "$DIR/format_schemas"
    cat >"$DIR/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$DIR/log/clickhouse-server.log</log>
        <errorlog>$DIR/log/clickhouse-server.err.log</errorlog>
        <size>64M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>134217728</mark_cache_size>
    <path>$DIR/data/</path>
    <tmp_path>$DIR/tmp/</tmp_path>
    <user_files_path>$DIR/user_files/</user_files_path>
    <format_schema_path>$DIR/format_schemas/</format_schema_path>
    <users_config>$DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <umask>022</umask>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <merge_tree>
        <parts_to_delay_insert>300</parts_to_delay_insert>
        <parts_to_throw_insert>600</parts_to_throw_insert>
    </merge_tree>
</yandex>
EOF
    cat >"$DIR/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <max_threads>2</max_threads>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

chdb_write_conf() {
    mkdir -p "$DIR/data" "$DIR/log"
    # clickhouse-local reads ./config.xml: the HTTP listener's address and port.
    cat >"$DIR/config.xml" <<EOF
<?xml version="1.0"?>
<clickhouse>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$HTTP_PORT</http_port>
    <timezone>UTC</timezone>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>
</clickhouse>
EOF
    # Starts the listener, then blocks in a query that sleeps a second per
    # row (one row per block) for about 30 years, until the process is stopped.
    cat >"$DIR/serve.py" <<'EOF'
import sys
from chdb import _chdb

result = _chdb.query(
    "SYSTEM START LISTEN HTTP; "
    "SELECT sleepEachRow(1) FROM numbers(1000000000) SETTINGS max_block_size = 1 FORMAT Null",
    "TabSeparated",
    path=sys.argv[1],
)
if result.has_error():
    sys.exit("clickhouse-local: " + result.error_message())
EOF
}

launch() {
    if [ "$INSTANCE" = main ]; then
        main_write_conf
        (cd "$DIR" && nohup clickhouse-server --config-file="$DIR/config.xml" --pidfile="$PIDFILE" \
            >>"$DIR/log/stdout.log" 2>&1 &)
    else
        chdb_write_conf
        (
            cd "$DIR"
            nohup "$VENV/bin/python" "$DIR/serve.py" "$DIR/data" >>"$DIR/log/stdout.log" 2>&1 </dev/null &
            echo $! >"$PIDFILE"
        )
    fi
}

start() {
    ensure_installed
    if is_running; then
        echo "clickhouse already running on $(where)"
        return 0
    fi
    if port_open 127.0.0.1 "$HTTP_PORT"; then
        die "port $HTTP_PORT is taken by something that is not ClickHouse; stop it or pick another port"
    fi
    # A pid file left by a killed server would make the new one refuse to start.
    rm -f "$PIDFILE"
    launch
    for _ in $(seq 1 150); do
        is_running && break
        sleep 0.2
    done
    if ! is_running; then
        echo "clickhouse did not start; see $DIR/log/" >&2
        tail -n 20 "$DIR/log/clickhouse-server.err.log" "$DIR/log/stdout.log" >&2 2>/dev/null || true
        exit 1
    fi
    echo "clickhouse $(curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/?query=SELECT%20version()") running on $(where); data in $DIR"
}

stop() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "still running 10 s after SIGTERM; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE"
        echo "clickhouse stopped"
    elif is_running; then
        echo "clickhouse answers on 127.0.0.1:$HTTP_PORT but was not started from $DIR; not stopping it" >&2
        exit 1
    else
        echo "clickhouse not running"
    fi
}

status() {
    if is_running; then
        echo "clickhouse running on $(where)"
    else
        echo "clickhouse not running"
        exit 1
    fi
}

destroy() {
    stop
    rm -rf "$DIR"
    echo "clickhouse data, logs and configuration deleted ($DIR)"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "http://127.0.0.1:$HTTP_PORT" ;;
    destroy) destroy ;;
    client)
        shift
        [ -n "$TCP_PORT" ] || die "instance $INSTANCE has no native port; use curl on http://127.0.0.1:$HTTP_PORT"
        exec clickhouse-client --host 127.0.0.1 --port "$TCP_PORT" "$@"
        ;;
    *)
        echo "usage: $0 start|stop|status|url|destroy|client [args]" >&2
        exit 2
        ;;
esac
