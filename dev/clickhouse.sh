#!/usr/bin/env bash
# Local ClickHouse for Courier's development and tests.
#
#   dev/clickhouse.sh start    install clickhouse-server if missing, start it (idempotent)
#   dev/clickhouse.sh stop     stop it
#   dev/clickhouse.sh status   say whether it runs (exit 0 iff it answers)
#   dev/clickhouse.sh client [args]   clickhouse-client against it
#
# HTTP on 127.0.0.1:58123, native protocol on 127.0.0.1:59000, loopback only.
# User `default` without a password (a local development server). Config,
# data and logs live in <repo>/.dev/clickhouse/.
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
DIR="$ROOT/.dev/clickhouse"
HTTP_PORT="${COURIER_CLICKHOUSE_HTTP_PORT:-58123}"
TCP_PORT="${COURIER_CLICKHOUSE_TCP_PORT:-59000}"
PIDFILE="$DIR/clickhouse.pid"
# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=clickhouse
# shellcheck source=dev/lib.sh
. "$ROOT/dev/lib.sh"

ensure_installed() {
    # Debian's package registers its own service on 8123/9000; Courier's runs beside it.
    ensure_apt_packages clickhouse-server clickhouse-client curl
}

is_running() {
    curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/?query=SELECT%201" 2>/dev/null | grep -q '^1$'
}

write_conf() {
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

start() {
    ensure_installed
    if is_running; then
        echo "clickhouse already running on 127.0.0.1:$HTTP_PORT (http), 127.0.0.1:$TCP_PORT (native)"
        return 0
    fi
    write_conf
    # A pid file left by a killed server would make the new one refuse to start.
    rm -f "$PIDFILE"
    (cd "$DIR" && nohup clickhouse-server --config-file="$DIR/config.xml" --pidfile="$PIDFILE" \
        >>"$DIR/log/stdout.log" 2>&1 &)
    for _ in $(seq 1 150); do
        is_running && break
        sleep 0.2
    done
    if ! is_running; then
        echo "clickhouse did not start; see $DIR/log/" >&2
        tail -n 20 "$DIR/log/clickhouse-server.err.log" "$DIR/log/stdout.log" >&2 2>/dev/null || true
        exit 1
    fi
    echo "clickhouse running on 127.0.0.1:$HTTP_PORT (http), 127.0.0.1:$TCP_PORT (native); data in $DIR"
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
        echo "clickhouse running on 127.0.0.1:$HTTP_PORT (http), 127.0.0.1:$TCP_PORT (native)"
    else
        echo "clickhouse not running"
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    client)
        shift
        exec clickhouse-client --host 127.0.0.1 --port "$TCP_PORT" "$@"
        ;;
    *)
        echo "usage: $0 start|stop|status|client [args]" >&2
        exit 2
        ;;
esac
