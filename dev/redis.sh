#!/usr/bin/env bash
# Local Redis for Courier's development and tests.
#
#   dev/redis.sh start    install redis-server if missing, start it (idempotent)
#   dev/redis.sh stop     stop it
#   dev/redis.sh status   say whether it runs
#
# Plain TCP on 127.0.0.1:56379 and, when the server supports TLS, TLS on
# 127.0.0.1:56380 with a self-signed certificate (CA at .dev/redis/tls/ca.crt).
# Data, logs and certificates live in <repo>/.dev/redis/, append-only file on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.dev/redis"
PORT="${COURIER_REDIS_PORT:-56379}"
TLS_PORT="${COURIER_REDIS_TLS_PORT:-56380}"
CONF="$DIR/redis.conf"
PIDFILE="$DIR/redis.pid"

ensure_installed() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    echo "installing redis-server (Debian package)" >&2
    if ! apt-cache show redis-server >/dev/null 2>&1; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
    # Debian's package starts its own service on 6379; Courier's runs beside it.
}

supports_tls() {
    # Debian's server is built with TLS, linked to OpenSSL; other builds may not be.
    ldd "$(command -v redis-server)" 2>/dev/null | grep -q libssl
}

make_certs() {
    local d="$DIR/tls"
    [ -f "$d/redis.crt" ] && return 0
    command -v openssl >/dev/null || return 1
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Courier dev CA" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$d/redis.key" -out "$d/redis.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/san.ext"
    openssl x509 -req -in "$d/redis.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 3650 -extfile "$d/san.ext" -out "$d/redis.crt" 2>/dev/null
}

is_running() {
    redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG
}

write_conf() {
    mkdir -p "$DIR"
    cat >"$CONF" <<EOF
bind 127.0.0.1
port $PORT
protected-mode yes
daemonize yes
pidfile $PIDFILE
logfile $DIR/redis.log
dir $DIR
appendonly yes
appendfsync everysec
save ""
EOF
    if supports_tls && make_certs; then
        cat >>"$CONF" <<EOF
tls-port $TLS_PORT
tls-cert-file $DIR/tls/redis.crt
tls-key-file $DIR/tls/redis.key
tls-ca-cert-file $DIR/tls/ca.crt
tls-auth-clients no
EOF
    fi
}

start() {
    ensure_installed
    if is_running; then
        echo "redis already running on 127.0.0.1:$PORT"
        return 0
    fi
    write_conf
    redis-server "$CONF"
    # Up to 5 s to answer; longer while the server is alive and still
    # loading its append-only file (PING answers LOADING meanwhile), which
    # takes a while after tests left millions of keys.
    local tries=0 said_loading=""
    until is_running; do
        tries=$((tries + 1))
        if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>&1 | grep -q LOADING; then
            [ -n "$said_loading" ] || echo "redis is loading its data set from $DIR ..."
            said_loading=1
            [ "$tries" -lt 6000 ] || break
        elif [ "$tries" -ge 50 ]; then
            break
        fi
        sleep 0.1
    done
    if ! is_running; then
        echo "redis did not start; see $DIR/redis.log" >&2
        tail -n 20 "$DIR/redis.log" >&2 || true
        exit 1
    fi
    echo "redis running on 127.0.0.1:$PORT (data in $DIR)"
    grep -q '^tls-port' "$CONF" && echo "redis TLS on 127.0.0.1:$TLS_PORT (CA $DIR/tls/ca.crt)"
    return 0
}

stop() {
    if is_running; then
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do
            is_running || break
            sleep 0.1
        done
        echo "redis stopped"
    else
        echo "redis not running"
    fi
}

status() {
    if is_running; then
        echo "redis running on 127.0.0.1:$PORT"
    else
        echo "redis not running"
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
