#!/usr/bin/env bash
# A local 3-master Redis Cluster for Courier's development and tests.
#
#   dev/redis-cluster.sh start    install redis-server if missing, start the
#                                 three nodes and form the cluster (idempotent)
#   dev/redis-cluster.sh stop     stop the nodes (data is kept)
#   dev/redis-cluster.sh status   say whether the cluster is healthy
#
# Nodes listen on 127.0.0.1:57001-57003 (cluster bus on 47001-47003); data in <repo>/.dev/redis-cluster/<port>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.dev/redis-cluster"
PORTS=(57001 57002 57003)

ensure_installed() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    echo "installing redis-server (Debian package)" >&2
    if ! apt-cache show redis-server >/dev/null 2>&1; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
}

node_up() {
    redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG
}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'
}

start_node() {
    local port="$1" d="$DIR/$1"
    node_up "$port" && return 0
    mkdir -p "$d"
    cat >"$d/redis.conf" <<EOF
bind 127.0.0.1
port $port
protected-mode yes
daemonize yes
pidfile $d/redis.pid
logfile $d/redis.log
dir $d
cluster-enabled yes
cluster-config-file $d/nodes.conf
cluster-node-timeout 5000
# The default bus port (port + 10000) does not fit above 55535.
cluster-port $((port - 10000))
appendonly yes
appendfsync everysec
save ""
EOF
    redis-server "$d/redis.conf"
    for _ in $(seq 1 50); do
        node_up "$port" && return 0
        sleep 0.1
    done
    echo "redis cluster node $port did not start; see $d/redis.log" >&2
    exit 1
}

start() {
    ensure_installed
    for p in "${PORTS[@]}"; do start_node "$p"; done
    if ! cluster_ok; then
        # Slots are assigned once; nodes.conf keeps them across restarts.
        local assigned
        assigned=$(redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info | tr -d '\r' |
            sed -n 's/^cluster_slots_assigned://p')
        if [ "${assigned:-0}" = "0" ]; then
            local nodes=()
            for p in "${PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
            redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 || {
                cat "$DIR/create.log" >&2
                exit 1
            }
        fi
        for _ in $(seq 1 100); do
            cluster_ok && break
            sleep 0.2
        done
    fi
    if ! cluster_ok; then
        echo "redis cluster is not healthy:" >&2
        redis-cli -h 127.0.0.1 -p "${PORTS[0]}" cluster info >&2 || true
        exit 1
    fi
    echo "redis cluster running on 127.0.0.1:${PORTS[0]}-${PORTS[2]} (data in $DIR)"
}

stop() {
    for p in "${PORTS[@]}"; do
        if node_up "$p"; then
            redis-cli -h 127.0.0.1 -p "$p" shutdown >/dev/null 2>&1 || true
        fi
    done
    for p in "${PORTS[@]}"; do
        for _ in $(seq 1 50); do
            node_up "$p" || break
            sleep 0.1
        done
    done
    echo "redis cluster stopped"
}

status() {
    if cluster_ok; then
        echo "redis cluster running on 127.0.0.1:${PORTS[0]}-${PORTS[2]}"
    else
        echo "redis cluster not running or not healthy"
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
