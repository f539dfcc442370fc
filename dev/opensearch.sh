#!/usr/bin/env bash
# A real OpenSearch node for Courier's search sink: development, tests and CI.
#
#   dev/opensearch.sh start     download if missing, start, wait for yellow/green (idempotent)
#   dev/opensearch.sh stop      stop the node started from this clone (data is kept)
#   dev/opensearch.sh restart   stop, then start
#   dev/opensearch.sh status    exit 0 iff the node answers and its cluster is yellow or green
#   dev/opensearch.sh url       the node's HTTP URL
#   dev/opensearch.sh log       path of the node's main log
#   dev/opensearch.sh destroy   stop and delete the node's data, logs and configuration
#
# The node is OpenSearch's own published distribution, the minimal one
# (`org.opensearch.distribution.integ-test-zip:opensearch`, the server and its
# HTTP/transport module, no security plugin), taken from Maven Central through
# `mvn` and run on Java 17. Single node, security off, HTTP on
# 127.0.0.1:59200, transport on 127.0.0.1:59300, heap 1 GiB; everything lives
# in <repo>/.dev/opensearch/. OpenSearch refuses to run as root, so as root
# the node runs as the `courier-opensearch` system user (created if missing).
#
# A second, deliberately overloaded node for tests of the sink's backpressure
# handling runs beside it from the same unpacked distribution:
#
#   COURIER_OPENSEARCH_INSTANCE=overload dev/opensearch.sh start   (and stop, status, url, ...)
#
# HTTP on 127.0.0.1:59201, transport on 127.0.0.1:59301, heap 512 MiB, data in
# <repo>/.dev/opensearch-overload/, and a write thread pool of one thread with
# a queue of one (`thread_pool.write.size`/`queue_size`, static settings), so
# concurrent bulk requests get items refused with 429
# `es_rejected_execution_exception`. Its ports and heap:
# COURIER_OPENSEARCH_OVERLOAD_PORT, COURIER_OPENSEARCH_OVERLOAD_TRANSPORT_PORT,
# COURIER_OPENSEARCH_OVERLOAD_HEAP.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=opensearch
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

OS_VERSION="${COURIER_OPENSEARCH_VERSION:-2.19.6}"
OS_ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$OS_VERSION:zip"
OS_HOST=127.0.0.1
OS_USER=courier-opensearch
OS_START_TIMEOUT_S=180

# The distribution is unpacked once, under the main node's folder, and shared.
OS_DIST="$COURIER_REPO/.dev/opensearch/dist"
OS_HOME="$OS_DIST/opensearch-$OS_VERSION"

OS_INSTANCE="${COURIER_OPENSEARCH_INSTANCE:-main}"
case "$OS_INSTANCE" in
    main)
        OS_HTTP_PORT="${COURIER_OPENSEARCH_PORT:-59200}"
        OS_TRANSPORT_PORT="${COURIER_OPENSEARCH_TRANSPORT_PORT:-59300}"
        OS_HEAP="${COURIER_OPENSEARCH_HEAP:-1g}"
        OS_CLUSTER=courier-dev
        OS_DIR="$COURIER_REPO/.dev/opensearch"
        # Settings added to opensearch.yml.
        OS_EXTRA_SETTINGS=""
        ;;
    overload)
        # shellcheck disable=SC2034 # read by lib.sh
        DEV_NAME=opensearch-overload
        OS_HTTP_PORT="${COURIER_OPENSEARCH_OVERLOAD_PORT:-59201}"
        OS_TRANSPORT_PORT="${COURIER_OPENSEARCH_OVERLOAD_TRANSPORT_PORT:-59301}"
        OS_HEAP="${COURIER_OPENSEARCH_OVERLOAD_HEAP:-512m}"
        OS_CLUSTER=courier-overload
        OS_DIR="$COURIER_REPO/.dev/opensearch-overload"
        OS_EXTRA_SETTINGS="# Deliberately tiny: one write thread and a queue of one, so concurrent
# bulk requests get items refused with 429 es_rejected_execution_exception.
thread_pool.write.size: 1
thread_pool.write.queue_size: 1"
        ;;
    *)
        die "COURIER_OPENSEARCH_INSTANCE=$OS_INSTANCE: expected main or overload"
        ;;
esac

OS_CONF="$OS_DIR/config"
OS_DATA="$OS_DIR/data"
OS_LOGS="$OS_DIR/logs"
OS_TMP="$OS_DIR/tmp"
OS_PIDFILE="$OS_DIR/opensearch.pid"
OS_URL="http://$OS_HOST:$OS_HTTP_PORT"

# Java 17: OpenSearch 2.x runs on it (3.x needs Java 21).
find_java_home() {
    local candidate
    for candidate in "${COURIER_OPENSEARCH_JAVA_HOME:-}" /usr/lib/jvm/java-17-openjdk-amd64 \
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

# The distribution, unpacked once per version and shared by both nodes (a
# lock lets them start at the same time). Maven resolves it through the
# local repository (~/.m2 by default), so a warm machine downloads nothing.
ensure_distribution() {
    [ -x "$OS_HOME/bin/opensearch" ] && return 0
    mkdir -p "$OS_DIST"
    exec 7>"$OS_DIST/.lock"
    flock 7
    if [ -x "$OS_HOME/bin/opensearch" ]; then
        exec 7>&-
        return 0
    fi
    say "fetching OpenSearch $OS_VERSION ($OS_ARTIFACT) with mvn"
    local stage="$OS_DIST.tmp" log="$COURIER_REPO/.dev/opensearch/mvn.log"
    rm -rf "$stage"
    mkdir -p "$stage"
    if ! (cd "$stage" && mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
        -Dartifact="$OS_ARTIFACT" -DoutputDirectory="$stage" -Dmdep.overWriteReleases=false \
        </dev/null >"$log" 2>&1); then
        tail -n 30 "$log" >&2
        die "mvn could not fetch $OS_ARTIFACT (output above, full log in $log)"
    fi
    unzip -q "$stage/opensearch-$OS_VERSION.zip" -d "$stage" ||
        die "could not unpack $stage/opensearch-$OS_VERSION.zip"
    rm -f "$stage/opensearch-$OS_VERSION.zip"
    [ -x "$stage/opensearch-$OS_VERSION/bin/opensearch" ] ||
        die "the archive has no opensearch-$OS_VERSION/bin/opensearch"
    mkdir -p "$OS_DIST"
    rm -rf "$OS_HOME"
    mv "$stage/opensearch-$OS_VERSION" "$OS_HOME"
    rm -rf "$stage"
    exec 7>&-
}

ensure_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    id "$OS_USER" >/dev/null 2>&1 && return 0
    say "creating the $OS_USER system user (OpenSearch refuses to run as root)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$OS_USER" ||
        id "$OS_USER" >/dev/null 2>&1 || die "could not create the $OS_USER system user"
}

# Configuration written on every start: change this script, not the files.
write_config() {
    mkdir -p "$OS_CONF/jvm.options.d" "$OS_DATA" "$OS_LOGS" "$OS_TMP"
    cp "$OS_HOME/config/log4j2.properties" "$OS_CONF/log4j2.properties"
    cat >"$OS_CONF/opensearch.yml" <<EOF
# Written by dev/opensearch.sh on every start: change the script, not this file.
cluster.name: $OS_CLUSTER
node.name: $OS_CLUSTER-1
path.data: $OS_DATA
path.logs: $OS_LOGS
network.host: $OS_HOST
http.port: $OS_HTTP_PORT
transport.port: $OS_TRANSPORT_PORT
discovery.type: single-node
# A development node on a shared machine: no seccomp filter, no memory
# locking, and no refusal to allocate shards when the disk is fuller than 85%.
bootstrap.system_call_filter: false
bootstrap.memory_lock: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
EOF
    [ -z "$OS_EXTRA_SETTINGS" ] || printf '%s\n' "$OS_EXTRA_SETTINGS" >>"$OS_CONF/opensearch.yml"
    cat >"$OS_CONF/jvm.options" <<EOF
# Written by dev/opensearch.sh on every start: change the script, not this file.
-Xms$OS_HEAP
-Xmx$OS_HEAP
-XX:+UseG1GC
-XX:G1ReservePercent=25
-XX:InitiatingHeapOccupancyPercent=30
-Djava.io.tmpdir=\${OPENSEARCH_TMPDIR}
-XX:+HeapDumpOnOutOfMemoryError
-XX:HeapDumpPath=$OS_DATA
-XX:ErrorFile=$OS_LOGS/hs_err_pid%p.log
-Xlog:gc*,gc+age=trace,safepoint:file=$OS_LOGS/gc.log:utctime,pid,tags:filecount=4,filesize=16m
18-:-Djava.security.manager=allow
20-:--add-modules=jdk.incubator.vector
-Djava.util.concurrent.ForkJoinPool.common.threadFactory=org.opensearch.secure_sm.SecuredForkJoinWorkerThreadFactory
EOF
    if [ "$(id -u)" -eq 0 ]; then
        chown -R "$OS_USER:" "$OS_CONF" "$OS_DATA" "$OS_LOGS" "$OS_TMP"
        chown "$OS_USER:" "$OS_DIR"
        make_reachable_by "$OS_USER" "$OS_DIR"
        make_reachable_by "$OS_USER" "$OS_HOME"
    fi
}

# health — the cluster status (green, yellow, red), empty when nothing answers.
health() {
    { curl -fsS --max-time 5 "$OS_URL/_cluster/health" 2>/dev/null || true; } |
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
    [ -s "$OS_PIDFILE" ] || return 1
    pid="$(cat "$OS_PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

start() {
    local started
    if healthy; then
        say "already running on $OS_URL"
        return 0
    fi
    ensure_tools
    ensure_distribution
    ensure_user
    if ! node_pid >/dev/null && port_open "$OS_HOST" "$OS_HTTP_PORT"; then
        die "something else listens on $OS_HOST:$OS_HTTP_PORT; stop it or set COURIER_OPENSEARCH_PORT"
    fi
    if ! node_pid >/dev/null; then
        write_config
        rm -f "$OS_PIDFILE"
        local java_home launcher as_user=()
        java_home="$(find_java_home)"
        [ "$(id -u)" -eq 0 ] && as_user=(runuser -u "$OS_USER" --)
        say "starting OpenSearch $OS_VERSION on $OS_URL (heap $OS_HEAP, data in $OS_DATA)"
        started=$SECONDS
        # In its own session, detached from this shell: the launcher's own
        # daemon mode (-d) does not survive the end of `runuser`.
        cd /
        setsid "${as_user[@]}" env -i PATH="$PATH" HOME=/nonexistent LANG=C.UTF-8 \
            OPENSEARCH_JAVA_HOME="$java_home" OPENSEARCH_PATH_CONF="$OS_CONF" \
            OPENSEARCH_TMPDIR="$OS_TMP" \
            "$OS_HOME/bin/opensearch" -p "$OS_PIDFILE" -q \
            </dev/null >"$OS_LOGS/launcher.out" 2>&1 9>&- &
        launcher=$!
        # The pid file appears once the JVM has started bootstrapping.
        while [ ! -s "$OS_PIDFILE" ]; do
            if ! kill -0 "$launcher" 2>/dev/null || [ $((SECONDS - started)) -ge 60 ]; then
                grep -v 'no-jdk distributions' "$OS_LOGS/launcher.out" >&2 || true
                tail -n 30 "$OS_LOGS/$OS_CLUSTER.log" >&2 2>/dev/null || true
                die "OpenSearch did not start (output above; logs in $OS_LOGS)"
            fi
            sleep 0.2
        done
    else
        started=$SECONDS
        say "the node is up but not yet healthy; waiting"
    fi
    while ! healthy; do
        if ! node_pid >/dev/null; then
            tail -n 30 "$OS_LOGS/$OS_CLUSTER.log" >&2 2>/dev/null || true
            die "OpenSearch exited during startup (log above; logs in $OS_LOGS)"
        fi
        [ $((SECONDS - started)) -lt "$OS_START_TIMEOUT_S" ] ||
            die "OpenSearch is not healthy after ${OS_START_TIMEOUT_S}s (status: $(health)); see $OS_LOGS"
        sleep 0.5
    done
    say "running on $OS_URL (cluster $(health), ready in $((SECONDS - started))s)"
}

stop() {
    local pid
    if ! pid="$(node_pid)"; then
        rm -f "$OS_PIDFILE"
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
    rm -f "$OS_PIDFILE"
    say "stopped"
}

status() {
    local h
    h="$(health)"
    case "$h" in
        green | yellow)
            say "running on $OS_URL (cluster $h)"
            ;;
        "")
            say "not running"
            exit 1
            ;;
        *)
            say "answering on $OS_URL but cluster is $h"
            exit 1
            ;;
    esac
}

destroy() {
    stop
    rm -rf "$OS_CONF" "$OS_DATA" "$OS_LOGS" "$OS_TMP" "$OS_PIDFILE"
    say "deleted the node's data, logs and configuration (the unpacked distribution is kept)"
}

# Serialise concurrent invocations from the same clone.
mkdir -p "$OS_DIR"
exec 9>"$OS_DIR/.lock"
flock 9

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    restart)
        stop
        start
        ;;
    status) status ;;
    url) printf '%s\n' "$OS_URL" ;;
    log) printf '%s\n' "$OS_LOGS/$OS_CLUSTER.log" ;;
    destroy) destroy ;;
    *)
        echo "usage: $0 start|stop|restart|status|url|log|destroy" >&2
        exit 2
        ;;
esac
