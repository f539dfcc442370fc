#!/usr/bin/env bash
# A local Apache Kafka broker for Courier's Kafka sink: development, tests and CI.
#
#   dev/kafka.sh start                 fetch if missing, format on first run, start, wait until ready (idempotent)
#   dev/kafka.sh stop                  clean shutdown (topics and data are kept)
#   dev/kafka.sh restart               stop, then start
#   dev/kafka.sh status                exit 0 iff the broker runs and answers
#   dev/kafka.sh bootstrap             the bootstrap servers, 127.0.0.1:59092
#   dev/kafka.sh topics ARGS...        kafka-topics against the broker, e.g. topics --list
#   dev/kafka.sh console-producer ARGS...  kafka-console-producer against the broker
#   dev/kafka.sh console-consumer ARGS...  kafka-console-consumer against the broker
#   dev/kafka.sh tool CLASS ARGS...    any tool class from the broker's jars
#   dev/kafka.sh log                   path of the broker's log
#   dev/kafka.sh destroy               stop and delete data, logs and configuration
#
# Apache Kafka 4.4.0 from Maven Central (`org.apache.kafka:kafka_2.13` and
# `kafka-tools`, runtime dependencies only, fetched with `mvn` into
# <repo>/.dev/kafka/dist/), one node in KRaft combined mode (broker and
# controller), PLAINTEXT on 127.0.0.1:59092, controller on 127.0.0.1:59093,
# no authentication, Java 17 (Debian's openjdk-17-jre-headless, installed if
# missing; COURIER_KAFKA_JAVA_HOME picks another). Topics are never created
# automatically: Courier creates its own, and writing to a missing topic is an
# error. Other ports and heap: COURIER_KAFKA_PORT, COURIER_KAFKA_CONTROLLER_PORT,
# COURIER_KAFKA_HEAP (default 512m).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=kafka
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
# shellcheck source=dev/kafka-common.sh
. "$COURIER_REPO/dev/kafka-common.sh"

KAFKA_VERSION=4.4.0
KAFKA_PORT="${COURIER_KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT="${COURIER_KAFKA_CONTROLLER_PORT:-59093}"
KAFKA_HEAP="${COURIER_KAFKA_HEAP:-512m}"
KAFKA_BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_DIR="$COURIER_REPO/.dev/kafka"
KAFKA_LIB="$KAFKA_DIR/dist/kafka-$KAFKA_VERSION"
KAFKA_CONF="$KAFKA_DIR/config"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
# A broker holding many partitions (a long-lived dev checkout) takes minutes to
# load them on a busy machine; a fresh one is ready in seconds.
KAFKA_START_TIMEOUT_S=300
# The broker logs this once it has registered with the controller and is unfenced.
KAFKA_READY_LINE="Kafka Server started"

JVM_PRODUCT="Kafka $KAFKA_VERSION"
JVM_PIDFILE="$KAFKA_DIR/kafka.pid"
JVM_LOG="$KAFKA_LOGS/server.log"
JVM_OUT="$KAFKA_LOGS/kafka.out"

# The broker and its command-line tools; Kafka Connect (a dependency of one
# tool) is left out: dev/kafka-connect.sh runs its own.
KAFKA_DEPENDENCIES="    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- Kafka logs through SLF4J 1.7; without a binding it logs nothing. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version>
    </dependency>"

# new_cluster_id — a random Kafka UUID (16 bytes, URL-safe base64 without
# padding), as `kafka-storage random-uuid` prints, without starting a JVM.
new_cluster_id() {
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        case "$id" in -*) continue ;; esac
        printf '%s\n' "$id"
        return 0
    done
}

write_config() {
    mkdir -p "$KAFKA_CONF" "$KAFKA_DATA" "$KAFKA_LOGS"
    cat >"$KAFKA_CONF/server.properties" <<EOF
# Written by dev/kafka.sh on every start: change the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
# Courier creates its topics; a record for a missing topic must be an error.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumer groups (Kafka Connect's sinks, tests) start at once.
group.initial.rebalance.delay.ms=0
# A shared 2-core machine: few threads.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF
    write_log4j2 "$KAFKA_CONF/log4j2.properties" "$KAFKA_LOGS/server.log" info
    write_tools_log4j2 "$KAFKA_CONF/tools-log4j2.properties"
}

# format — the storage formatted for a new single-node cluster, on first start.
format_storage() {
    local java_home="$1" id
    [ -f "$KAFKA_DATA/meta.properties" ] && return 0
    id="$(new_cluster_id)"
    say "formatting $KAFKA_DATA for a new cluster ($id)"
    if ! "$java_home/bin/java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$KAFKA_CONF/tools-log4j2.properties" \
        -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format -t "$id" \
        -c "$KAFKA_CONF/server.properties" </dev/null >"$KAFKA_LOGS/format.out" 2>&1; then
        cat "$KAFKA_LOGS/format.out" >&2
        die "could not format $KAFKA_DATA (output above)"
    fi
}

ready() {
    log_has_since "$JVM_LOG" "$log_start" "$KAFKA_READY_LINE" && port_open "$KAFKA_HOST" "$KAFKA_PORT"
}

cmd_start() {
    local java_home started
    if jvm_pid >/dev/null && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        say "already running on $KAFKA_BOOTSTRAP"
        return 0
    fi
    ensure_kafka_tools
    fetch_jars "$KAFKA_LIB" "Apache Kafka $KAFKA_VERSION" "$KAFKA_DEPENDENCIES"
    if jvm_pid >/dev/null; then
        # Up but not answering: a broker still starting, or stuck.
        started=$SECONDS
        say "the broker runs but does not answer on $KAFKA_BOOTSTRAP yet; waiting"
        jvm_wait_ready "$KAFKA_START_TIMEOUT_S" port_open "$KAFKA_HOST" "$KAFKA_PORT"
        say "running on $KAFKA_BOOTSTRAP"
        return 0
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PORT" || port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT"; then
        die "something else listens on $KAFKA_HOST:$KAFKA_PORT or :$KAFKA_CONTROLLER_PORT (another Courier checkout? stop it with its dev/kafka.sh stop, or set COURIER_KAFKA_PORT and COURIER_KAFKA_CONTROLLER_PORT)"
    fi
    java_home="$(kafka_java_home)"
    write_config
    format_storage "$java_home"
    log_start="$(log_offset "$JVM_LOG")"
    say "starting Kafka $KAFKA_VERSION on $KAFKA_BOOTSTRAP (Java at $java_home, heap 256m-$KAFKA_HEAP, data in $KAFKA_DATA)"
    started=$SECONDS
    jvm_launch "$java_home" -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:G1PeriodicGCInterval=30000 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_CONF/log4j2.properties" \
        -Dkafka.logs.dir="$KAFKA_LOGS" \
        -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_CONF/server.properties"
    jvm_wait_ready "$KAFKA_START_TIMEOUT_S" ready
    say "running on $KAFKA_BOOTSTRAP (ready in $((SECONDS - started))s, pid $(jvm_pid))"
}

cmd_status() {
    if jvm_pid >/dev/null && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        say "running on $KAFKA_BOOTSTRAP (pid $(jvm_pid), RSS $(jvm_rss))"
        return 0
    fi
    if jvm_pid >/dev/null; then
        say "the broker runs (pid $(jvm_pid)) but does not answer on $KAFKA_BOOTSTRAP"
    else
        say "not running"
    fi
    return 1
}

# tool CLASS ARGS... — a command-line tool from the broker's jars, small heap.
cmd_tool() {
    [ $# -ge 1 ] || die "usage: dev/kafka.sh tool CLASS [ARGS...]"
    local class="$1" java_home
    shift
    [ -f "$KAFKA_LIB/.complete" ] || die "Kafka is not fetched yet; run dev/kafka.sh start"
    java_home="$(kafka_java_home)" || die "no Java 17; run dev/kafka.sh start"
    [ -f "$KAFKA_CONF/tools-log4j2.properties" ] || write_tools_log4j2 "$KAFKA_CONF/tools-log4j2.properties"
    exec 9>&-
    exec "$java_home/bin/java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$KAFKA_CONF/tools-log4j2.properties" \
        -cp "$KAFKA_LIB/*" "$class" "$@"
}

cmd_destroy() {
    jvm_stop
    rm -rf "$KAFKA_CONF" "$KAFKA_DATA" "$KAFKA_LOGS" "$JVM_PIDFILE"
    say "deleted the broker's data, logs and configuration (the fetched jars are kept)"
}

usage() {
    sed -n '2,15p' "$(readlink -f "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    mkdir -p "$KAFKA_DIR"
    case "$cmd" in
        # The tools need no lock: they only talk to the broker.
        topics) cmd_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" ;;
        console-producer) cmd_tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" ;;
        console-consumer) cmd_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" ;;
        tool) cmd_tool "$@" ;;
        bootstrap) printf '%s\n' "$KAFKA_BOOTSTRAP" ;;
        log) printf '%s\n' "$JVM_LOG" ;;
        start | stop | restart | status | destroy)
            # Parallel callers (several test binaries) start the broker once.
            exec 9>"$KAFKA_DIR/.lock"
            flock 9
            case "$cmd" in
                start) cmd_start ;;
                stop) jvm_stop ;;
                restart) jvm_stop && cmd_start ;;
                status) cmd_status ;;
                destroy) cmd_destroy ;;
            esac
            ;;
        *) usage ;;
    esac
}

main "$@"
