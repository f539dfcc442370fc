#!/usr/bin/env bash
# A real Elasticsearch node for Courier's search sink: development, tests and CI.
#
#   dev/elasticsearch.sh start     download if missing, start, wait for yellow/green (idempotent)
#   dev/elasticsearch.sh stop      stop the node started from this clone (data is kept)
#   dev/elasticsearch.sh restart   stop, then start
#   dev/elasticsearch.sh status    exit 0 iff the node answers and its cluster is yellow or green
#   dev/elasticsearch.sh url       the node's HTTP URL
#   dev/elasticsearch.sh log       path of the node's main log
#   dev/elasticsearch.sh destroy   stop and delete the node's data, logs and configuration
#
# The node is Elasticsearch's own published minimal distribution
# (`org.elasticsearch.distribution.integ-test-zip:elasticsearch`: the server,
# the transport-netty4 module for HTTP, and the x-pack-core, x-pack-security
# and apm modules), taken from Maven Central through `mvn` and run on Java 17.
# Version 8.19.0 unless COURIER_ELASTICSEARCH_VERSION says otherwise. Single
# node, security off (`xpack.security.enabled: false`, set only when the
# distribution ships the security module), HTTP on 127.0.0.1:59210, transport
# on 127.0.0.1:59310, heap 512 MiB growing to 1 GiB; everything lives in
# <repo>/.dev/elasticsearch/. Elasticsearch refuses to run as root, so as root
# the node runs as the `courier-elasticsearch` system user (created if
# missing). Ports and heap: COURIER_ELASTICSEARCH_PORT,
# COURIER_ELASTICSEARCH_TRANSPORT_PORT, COURIER_ELASTICSEARCH_HEAP_MIN,
# COURIER_ELASTICSEARCH_HEAP_MAX; another JDK: COURIER_ELASTICSEARCH_JAVA_HOME.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=elasticsearch
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

ES_VERSION="${COURIER_ELASTICSEARCH_VERSION:-8.19.0}"
ES_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip"
ES_HOST=127.0.0.1
ES_USER=courier-elasticsearch
ES_START_TIMEOUT_S=180
ES_HTTP_PORT="${COURIER_ELASTICSEARCH_PORT:-59210}"
ES_TRANSPORT_PORT="${COURIER_ELASTICSEARCH_TRANSPORT_PORT:-59310}"
ES_HEAP_MIN="${COURIER_ELASTICSEARCH_HEAP_MIN:-512m}"
ES_HEAP_MAX="${COURIER_ELASTICSEARCH_HEAP_MAX:-1g}"
ES_CLUSTER=courier-es

ES_DIR="$COURIER_REPO/.dev/elasticsearch"
ES_DIST="$ES_DIR/dist"
ES_HOME="$ES_DIST/elasticsearch-$ES_VERSION"
ES_CONF="$ES_DIR/config"
ES_DATA="$ES_DIR/data"
ES_LOGS="$ES_DIR/logs"
ES_TMP="$ES_DIR/tmp"
ES_PIDFILE="$ES_DIR/elasticsearch.pid"
ES_URL="http://$ES_HOST:$ES_HTTP_PORT"

# Java 17: Elasticsearch 7.x and 8.x run on it (9.x needs Java 21).
find_java_home() {
    local candidate
    for candidate in "${COURIER_ELASTICSEARCH_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 \
        /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-17-openjdk; do
        if [ -n "$candidate" ] && [ -x "$candidate/bin/java" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_tools() {
    local need=()
    find_java_home >/dev/null || need+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || need+=(maven)
    command -v curl >/dev/null || need+=(curl)
    command -v unzip >/dev/null || need+=(unzip)
    [ "${#need[@]}" -eq 0 ] || ensure_apt_packages "${need[@]}"
    find_java_home >/dev/null || die "no Java 17 found under /usr/lib/jvm after installing openjdk-17-jre-headless"
}

# The distribution, unpacked once per version. Maven resolves it through the
# local repository (~/.m2 by default), so a warm machine downloads nothing.
ensure_distribution() {
    [ -x "$ES_HOME/bin/elasticsearch" ] && return 0
    say "fetching Elasticsearch $ES_VERSION ($ES_ARTIFACT) with mvn"
    local stage="$ES_DIST.tmp" log="$ES_DIR/mvn.log"
    rm -rf "$stage"
    mkdir -p "$stage"
    if ! (cd "$stage" && mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
        -Dartifact="$ES_ARTIFACT" -DoutputDirectory="$stage" -Dmdep.overWriteReleases=false \
        </dev/null >"$log" 2>&1); then
        tail -n 30 "$log" >&2
        die "mvn could not fetch $ES_ARTIFACT (output above, full log in $log)"
    fi
    unzip -q "$stage/elasticsearch-$ES_VERSION.zip" -d "$stage" ||
        die "could not unpack $stage/elasticsearch-$ES_VERSION.zip"
    rm -f "$stage/elasticsearch-$ES_VERSION.zip"
    [ -x "$stage/elasticsearch-$ES_VERSION/bin/elasticsearch" ] ||
        die "the archive has no elasticsearch-$ES_VERSION/bin/elasticsearch"
    mkdir -p "$ES_DIST"
    rm -rf "$ES_HOME"
    mv "$stage/elasticsearch-$ES_VERSION" "$ES_HOME"
    rm -rf "$stage"
}

ensure_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    id "$ES_USER" >/dev/null 2>&1 && return 0
    say "creating the $ES_USER system user (Elasticsearch refuses to run as root)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$ES_USER" ||
        id "$ES_USER" >/dev/null 2>&1 || die "could not create the $ES_USER system user"
}

# Configuration written on every start: change this script, not the files.
write_config() {
    mkdir -p "$ES_CONF/jvm.options.d" "$ES_DATA" "$ES_LOGS" "$ES_TMP"
    cp "$ES_HOME/config/log4j2.properties" "$ES_CONF/log4j2.properties"
    cat >"$ES_CONF/elasticsearch.yml" <<EOF
# Written by dev/elasticsearch.sh on every start: change the script, not this file.
cluster.name: $ES_CLUSTER
node.name: $ES_CLUSTER-1
path.data: $ES_DATA
path.logs: $ES_LOGS
network.host: $ES_HOST
http.port: $ES_HTTP_PORT
transport.port: $ES_TRANSPORT_PORT
discovery.type: single-node
# A development node on a shared machine: no memory locking, and no refusal
# to allocate shards when the disk is fuller than 85%.
bootstrap.memory_lock: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
EOF
    # 7.x only: 8.x always installs its seccomp filter and refuses the setting.
    if [ "${ES_VERSION%%.*}" -lt 8 ]; then
        printf '%s\n' "bootstrap.system_call_filter: false" >>"$ES_CONF/elasticsearch.yml"
    fi
    # Settings of modules the distribution lacks are refused at start.
    if [ -d "$ES_HOME/modules/x-pack-security" ]; then
        printf '%s\n' "# No TLS, no authentication: loopback only." \
            "xpack.security.enabled: false" >>"$ES_CONF/elasticsearch.yml"
    fi
    cat >"$ES_CONF/jvm.options" <<EOF
# Written by dev/elasticsearch.sh on every start: change the script, not this file.
-Xms$ES_HEAP_MIN
-Xmx$ES_HEAP_MAX
-XX:+UseG1GC
-Djava.io.tmpdir=\${ES_TMPDIR}
-XX:+HeapDumpOnOutOfMemoryError
-XX:+ExitOnOutOfMemoryError
-XX:HeapDumpPath=$ES_DATA
-XX:ErrorFile=$ES_LOGS/hs_err_pid%p.log
-Xlog:gc*,gc+age=trace,safepoint:file=$ES_LOGS/gc.log:utctime,pid,tags:filecount=4,filesize=16m
EOF
    if [ "$(id -u)" -eq 0 ]; then
        chown -R "$ES_USER:" "$ES_CONF" "$ES_DATA" "$ES_LOGS" "$ES_TMP"
        chown "$ES_USER:" "$ES_DIR"
        make_reachable_by "$ES_USER" "$ES_DIR"
        make_reachable_by "$ES_USER" "$ES_HOME"
    fi
}

# health — the cluster status (green, yellow, red), empty when nothing answers.
health() {
    { curl -fsS --max-time 5 "$ES_URL/_cluster/health" 2>/dev/null || true; } |
        sed -n 's/.*"status":"\([a-z]*\)".*/\1/p'
}

healthy() {
    case "$(health)" in
        green | yellow) return 0 ;;
        *) return 1 ;;
    esac
}

node_pid() {
    local pid
    [ -s "$ES_PIDFILE" ] || return 1
    pid="$(cat "$ES_PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

start() {
    local started
    if healthy; then
        say "already running on $ES_URL"
        return 0
    fi
    ensure_tools
    ensure_distribution
    ensure_user
    if ! node_pid >/dev/null && port_open "$ES_HOST" "$ES_HTTP_PORT"; then
        die "something else listens on $ES_HOST:$ES_HTTP_PORT; stop it or set COURIER_ELASTICSEARCH_PORT"
    fi
    if ! node_pid >/dev/null; then
        write_config
        rm -f "$ES_PIDFILE"
        local java_home launcher as_user=()
        java_home="$(find_java_home)"
        [ "$(id -u)" -eq 0 ] && as_user=(runuser -u "$ES_USER" --)
        say "starting Elasticsearch $ES_VERSION on $ES_URL (heap $ES_HEAP_MIN-$ES_HEAP_MAX, data in $ES_DATA)"
        started=$SECONDS
        # In its own session, detached from this shell: the launcher's own
        # daemon mode (-d) does not survive the end of `runuser`.
        cd /
        setsid "${as_user[@]}" env -i PATH="$PATH" HOME=/nonexistent LANG=C.UTF-8 \
            ES_JAVA_HOME="$java_home" ES_PATH_CONF="$ES_CONF" ES_TMPDIR="$ES_TMP" \
            "$ES_HOME/bin/elasticsearch" -p "$ES_PIDFILE" -q \
            </dev/null >"$ES_LOGS/launcher.out" 2>&1 9>&- &
        launcher=$!
        # The pid file appears once the JVM has started bootstrapping.
        while [ ! -s "$ES_PIDFILE" ]; do
            if ! kill -0 "$launcher" 2>/dev/null || [ $((SECONDS - started)) -ge 90 ]; then
                cat "$ES_LOGS/launcher.out" >&2 || true
                tail -n 30 "$ES_LOGS/$ES_CLUSTER.log" >&2 2>/dev/null || true
                die "Elasticsearch did not start (output above; logs in $ES_LOGS)"
            fi
            sleep 0.2
        done
    else
        started=$SECONDS
        say "the node is up but not yet healthy; waiting"
    fi
    while ! healthy; do
        if ! node_pid >/dev/null; then
            tail -n 30 "$ES_LOGS/$ES_CLUSTER.log" >&2 2>/dev/null || true
            die "Elasticsearch exited during startup (log above; logs in $ES_LOGS)"
        fi
        [ $((SECONDS - started)) -lt "$ES_START_TIMEOUT_S" ] ||
            die "Elasticsearch is not healthy after ${ES_START_TIMEOUT_S}s (status: $(health)); see $ES_LOGS"
        sleep 0.5
    done
    say "running on $ES_URL (cluster $(health), ready in $((SECONDS - started))s)"
}

stop() {
    local pid
    if ! pid="$(node_pid)"; then
        rm -f "$ES_PIDFILE"
        say "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "the node did not stop within 60s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$ES_PIDFILE"
    say "stopped"
}

status() {
    local h
    h="$(health)"
    case "$h" in
        green | yellow)
            say "running on $ES_URL (cluster $h)"
            ;;
        "")
            say "not running"
            exit 1
            ;;
        *)
            say "answering on $ES_URL but cluster is $h"
            exit 1
            ;;
    esac
}

destroy() {
    stop
    rm -rf "$ES_CONF" "$ES_DATA" "$ES_LOGS" "$ES_TMP" "$ES_PIDFILE"
    say "deleted the node's data, logs and configuration (the unpacked distribution is kept)"
}

# Serialise concurrent invocations from the same clone.
mkdir -p "$ES_DIR"
exec 9>"$ES_DIR/.lock"
flock 9

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart)
        stop
        start
        ;;
    status) status ;;
    url) printf '%s\n' "$ES_URL" ;;
    log) printf '%s\n' "$ES_LOGS/$ES_CLUSTER.log" ;;
    destroy) destroy ;;
    *)
        echo "usage: $0 start|stop|restart|status|url|log|destroy" >&2
        exit 2
        ;;
esac
