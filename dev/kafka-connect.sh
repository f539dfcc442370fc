#!/usr/bin/env bash
# A local Kafka Connect worker with Debezium's JDBC sink and PostgreSQL source
# connectors: the other side of Courier's Debezium-compatibility claims, for
# development, tests and CI.
#
#   dev/kafka-connect.sh start                   start the broker if needed, fetch if missing, start the worker (idempotent)
#   dev/kafka-connect.sh stop                    stop the worker (connectors added at run time are forgotten)
#   dev/kafka-connect.sh restart                 stop, then start
#   dev/kafka-connect.sh status                  exit 0 iff the worker answers and has both Debezium plugins
#   dev/kafka-connect.sh url                     the REST API's URL, http://127.0.0.1:58083
#   dev/kafka-connect.sh connector NAME FILE     create or update connector NAME from FILE (key=value lines,
#                                                or JSON), then wait until it and its tasks run
#   dev/kafka-connect.sh connector-status NAME   the connector's state and its tasks' (JSON)
#   dev/kafka-connect.sh delete NAME             delete connector NAME (no-op if missing)
#   dev/kafka-connect.sh connectors              the connectors' names (JSON)
#   dev/kafka-connect.sh probe                   smoke check: sample Debezium events through a JDBC sink into PostgreSQL
#   dev/kafka-connect.sh log                     path of the worker's log
#   dev/kafka-connect.sh destroy                 stop and delete configuration, offsets and logs
#
# A standalone worker (`org.apache.kafka.connect.cli.ConnectStandalone`) of
# Kafka Connect 4.3.1 from Maven Central (`connect-runtime`, `connect-json`,
# `connect-transforms`), with two plugins: Debezium's JDBC sink connector
# 3.5.0.Final (`io.debezium:debezium-connector-jdbc`, its PostgreSQL driver
# included) and Debezium's PostgreSQL source connector 3.6.1.Final
# (`io.debezium:debezium-connector-postgres`, pgoutput, with its outbox
# EventRouter transform), all fetched with `mvn` into <repo>/.dev/kafka-connect/.
# It starts with no connector; tests add and remove their own through the
# REST API on 127.0.0.1:58083 (loopback only). Keys and values are Kafka
# Connect JSON with schemas (`JsonConverter`, `schemas.enable=true`), the
# format Debezium's PostgreSQL connector writes with that converter. The
# broker is dev/kafka.sh's (127.0.0.1:59092, COURIER_KAFKA_PORT). Java 17, as
# the broker's. Other port and heap: COURIER_KAFKA_CONNECT_PORT,
# COURIER_KAFKA_CONNECT_HEAP (default 512m).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=kafka-connect
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
# shellcheck source=dev/kafka-common.sh
. "$COURIER_REPO/dev/kafka-common.sh"

# Connect 4.4.0 cannot load Debezium 3.6's classes, and 3.6 does not resolve
# from Maven Central yet: 4.3.1 with 3.5.0.Final is the pair that works.
# The PostgreSQL source connector 3.6.1.Final resolves and runs on 4.3.1.
CONNECT_VERSION=4.3.1
DEBEZIUM_VERSION=3.5.0.Final
DEBEZIUM_PG_VERSION=3.6.1.Final
CONNECT_PORT="${COURIER_KAFKA_CONNECT_PORT:-58083}"
CONNECT_HEAP="${COURIER_KAFKA_CONNECT_HEAP:-512m}"
CONNECT_URL="http://$KAFKA_HOST:$CONNECT_PORT"
KAFKA_BOOTSTRAP="$KAFKA_HOST:${COURIER_KAFKA_PORT:-59092}"
CONNECT_DIR="$COURIER_REPO/.dev/kafka-connect"
CONNECT_LIB="$CONNECT_DIR/dist/connect-$CONNECT_VERSION"
CONNECT_PLUGINS="$CONNECT_DIR/plugins"
JDBC_SINK_DIR="$CONNECT_PLUGINS/debezium-connector-jdbc-$DEBEZIUM_VERSION"
PG_SOURCE_DIR="$CONNECT_PLUGINS/debezium-connector-postgres-$DEBEZIUM_PG_VERSION"
CONNECT_CONF="$CONNECT_DIR/config"
CONNECT_DATA="$CONNECT_DIR/data"
CONNECT_LOGS="$CONNECT_DIR/logs"
CONNECT_START_TIMEOUT_S=180
CONNECTOR_TIMEOUT_S=60
JDBC_SINK_CLASS=io.debezium.connector.jdbc.JdbcSinkConnector
PG_SOURCE_CLASS=io.debezium.connector.postgresql.PostgresConnector

JVM_PRODUCT="Kafka Connect $CONNECT_VERSION"
JVM_PIDFILE="$CONNECT_DIR/kafka-connect.pid"
JVM_LOG="$CONNECT_LOGS/connect.log"
JVM_OUT="$CONNECT_LOGS/connect.out"

CONNECT_DEPENDENCIES=""
for artifact in connect-runtime connect-json connect-transforms; do
    CONNECT_DEPENDENCIES+="    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>$artifact</artifactId><version>$CONNECT_VERSION</version>
    </dependency>
"
done
CONNECT_DEPENDENCIES+="    <!-- Connect logs through SLF4J 1.7; without a binding it logs nothing. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version>
    </dependency>"
JDBC_SINK_DEPENDENCIES="    <dependency>
      <groupId>io.debezium</groupId><artifactId>debezium-connector-jdbc</artifactId><version>$DEBEZIUM_VERSION</version>
    </dependency>"
PG_SOURCE_DEPENDENCIES="    <dependency>
      <groupId>io.debezium</groupId><artifactId>debezium-connector-postgres</artifactId><version>$DEBEZIUM_PG_VERSION</version>
    </dependency>"

# ensure_plugins — each connector and its dependencies in its own plugin
# folder, without the jars the worker itself provides: a second Connect API
# or Kafka client, or Jackson, in a plugin's class loader breaks the connector.
ensure_plugins() {
    fetch_jars "$JDBC_SINK_DIR" "Debezium's JDBC sink connector $DEBEZIUM_VERSION" "$JDBC_SINK_DEPENDENCIES"
    fetch_jars "$PG_SOURCE_DIR" "Debezium's PostgreSQL connector $DEBEZIUM_PG_VERSION" "$PG_SOURCE_DEPENDENCIES"
    local dir
    for dir in "$JDBC_SINK_DIR" "$PG_SOURCE_DIR"; do
        rm -f "$dir"/connect-api-*.jar "$dir"/connect-json-*.jar "$dir"/connect-transforms-*.jar \
            "$dir"/kafka-clients-*.jar "$dir"/jackson-*.jar
        ls "$dir"/postgresql-*.jar >/dev/null 2>&1 ||
            die "the connector's dependencies in $dir have no PostgreSQL driver"
    done
}

write_config() {
    mkdir -p "$CONNECT_CONF" "$CONNECT_DATA" "$CONNECT_LOGS"
    cat >"$CONNECT_CONF/worker.properties" <<EOF
# Written by dev/kafka-connect.sh on every start: change the script, not this file.
bootstrap.servers=$KAFKA_BOOTSTRAP
listeners=http://$KAFKA_HOST:$CONNECT_PORT
rest.advertised.host.name=$KAFKA_HOST
rest.advertised.port=$CONNECT_PORT
plugin.path=$CONNECT_PLUGINS
# Every plugin here is scanned; none needs a ServiceLoader manifest.
plugin.discovery=only_scan
# Kafka Connect JSON with schemas, as Debezium writes it with JsonConverter.
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=true
value.converter.schemas.enable=true
# Source offsets (sink connectors keep theirs in the consumer group connect-NAME).
offset.storage.file.filename=$CONNECT_DATA/connect.offsets
# Sinks commit their consumer offsets every second rather than every minute,
# so a test that restarts something does not replay a minute of records.
offset.flush.interval.ms=1000
# A sink subscribed with topics.regex sees a topic created after it within ~2 s.
consumer.metadata.max.age.ms=2000
# Connectors may override their consumer's settings (consumer.override.*).
connector.client.config.override.policy=All
EOF
    write_log4j2 "$CONNECT_CONF/log4j2.properties" "$JVM_LOG" info
}

rest() {
    curl -fsS --max-time 10 "$@"
}

# ready — the REST API answers and lists both Debezium connectors among its plugins.
ready() {
    local plugins
    plugins="$(rest "$CONNECT_URL/connector-plugins" 2>/dev/null || true)"
    grep -qF "\"$JDBC_SINK_CLASS\"" <<<"$plugins" && grep -qF "\"$PG_SOURCE_CLASS\"" <<<"$plugins"
}

cmd_start() {
    local java_home started
    if jvm_pid >/dev/null && ready; then
        say "already running on $CONNECT_URL"
        return 0
    fi
    bash "$COURIER_REPO/dev/kafka.sh" start
    ensure_kafka_tools
    fetch_jars "$CONNECT_LIB" "Kafka Connect $CONNECT_VERSION" "$CONNECT_DEPENDENCIES"
    ensure_plugins
    if jvm_pid >/dev/null; then
        say "the worker runs but is not ready on $CONNECT_URL yet; waiting"
        jvm_wait_ready "$CONNECT_START_TIMEOUT_S" ready
        say "running on $CONNECT_URL"
        return 0
    fi
    if port_open "$KAFKA_HOST" "$CONNECT_PORT"; then
        die "something else listens on $KAFKA_HOST:$CONNECT_PORT (another Courier checkout? stop it with its dev/kafka-connect.sh stop, or set COURIER_KAFKA_CONNECT_PORT)"
    fi
    java_home="$(kafka_java_home)"
    write_config
    say "starting Kafka Connect $CONNECT_VERSION (standalone) on $CONNECT_URL with Debezium's JDBC sink $DEBEZIUM_VERSION and PostgreSQL connector $DEBEZIUM_PG_VERSION (Java at $java_home, heap 128m-$CONNECT_HEAP, broker $KAFKA_BOOTSTRAP)"
    started=$SECONDS
    jvm_launch "$java_home" -Xms128m "-Xmx$CONNECT_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:G1PeriodicGCInterval=30000 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$CONNECT_CONF/log4j2.properties" \
        -cp "$CONNECT_LIB/*" org.apache.kafka.connect.cli.ConnectStandalone "$CONNECT_CONF/worker.properties"
    jvm_wait_ready "$CONNECT_START_TIMEOUT_S" ready
    say "running on $CONNECT_URL (ready in $((SECONDS - started))s, pid $(jvm_pid))"
}

cmd_status() {
    if jvm_pid >/dev/null && ready; then
        say "running on $CONNECT_URL (pid $(jvm_pid), RSS $(jvm_rss), connectors: $(rest "$CONNECT_URL/connectors" | tr -d '\n'))"
        return 0
    fi
    if jvm_pid >/dev/null; then
        say "the worker runs (pid $(jvm_pid)) but is not ready on $CONNECT_URL"
    else
        say "not running"
    fi
    return 1
}

# config_json FILE — the connector configuration in FILE as a JSON object:
# FILE holds key=value lines (# and ! start comments, a backslash escapes the
# next character, as in Java properties files; no line continuations),
# or JSON, either the configuration itself or {"name": ..., "config": {...}}.
config_json() {
    local file="$1"
    if jq -e 'type == "object"' "$file" >/dev/null 2>&1; then
        jq 'if has("config") then .config else . end' "$file"
        return 0
    fi
    jq -R -s '
        split("\n")
        | map(sub("\r$"; "") | select(test("^[[:space:]]*([#!]|$)") | not))
        | map(capture("^[[:space:]]*(?<key>[^=:[:space:]]+)[[:space:]]*[=:][[:space:]]*(?<value>.*)$")
              // error("not a key=value line: \(.)"))
        # As in Java properties files, a backslash takes the next character literally.
        | map(.value |= gsub("\\\\(?<c>.)"; .c))
        | from_entries' "$file"
}

# connector NAME FILE — PUT /connectors/NAME/config creates the connector or
# replaces its configuration; then wait until it and all its tasks run.
cmd_connector() {
    [ $# -eq 2 ] || die "usage: dev/kafka-connect.sh connector NAME FILE"
    local name="$1" file="$2" config response status started=$SECONDS
    [ -r "$file" ] || die "cannot read $file"
    config="$(config_json "$file")" || die "$file is neither key=value lines nor a JSON object"
    config="$(jq --arg name "$name" '. + {name: $name}' <<<"$config")"
    if ! response="$(curl -sS --max-time 30 -X PUT -H 'content-type: application/json' \
        --data "$config" -w '\n%{http_code}' "$CONNECT_URL/connectors/$name/config")"; then
        die "the worker does not answer on $CONNECT_URL; run dev/kafka-connect.sh start"
    fi
    case "${response##*$'\n'}" in
        200 | 201) ;;
        *) die "the worker refused connector $name: ${response%$'\n'*}" ;;
    esac
    while :; do
        status="$(rest "$CONNECT_URL/connectors/$name/status" 2>/dev/null || true)"
        case "$(jq -r '[.connector.state] + [.tasks[].state] + [if (.tasks | length) == 0 then "NO_TASKS" else empty end] | unique | join(",")' <<<"${status:-null}" 2>/dev/null)" in
            RUNNING)
                say "connector $name runs ($(jq '.tasks | length' <<<"$status") task(s), ready in $((SECONDS - started))s)"
                return 0
                ;;
            *FAILED*)
                jq -r '.connector.trace // empty, (.tasks[] | .trace // empty)' <<<"$status" | head -n 40 >&2
                die "connector $name failed (trace above; worker log: $JVM_LOG)"
                ;;
        esac
        [ $((SECONDS - started)) -lt "$CONNECTOR_TIMEOUT_S" ] ||
            die "connector $name is not running after ${CONNECTOR_TIMEOUT_S}s: ${status:-no status}"
        sleep 0.5
    done
}

cmd_delete() {
    [ $# -eq 1 ] || die "usage: dev/kafka-connect.sh delete NAME"
    local code
    code="$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -X DELETE "$CONNECT_URL/connectors/$1")" ||
        die "the worker does not answer on $CONNECT_URL"
    case "$code" in
        204 | 200) say "deleted connector $1" ;;
        404) say "no connector $1" ;;
        *) die "could not delete connector $1 (HTTP $code)" ;;
    esac
}

# probe — a smoke check of the whole path: the sample Debezium change events
# of dev/debezium-sample/ (create, update, delete and tombstone) produced to
# a fresh topic, a JDBC sink connector for it, and the row appearing, changing
# and disappearing in a fresh PostgreSQL database; everything is removed
# afterwards. Needs the worker and dev/pg.sh's cluster running.
PROBE_TIMEOUT_S=60

probe_sql() {
    bash "$COURIER_REPO/dev/pg.sh" psql -X -q -At -v ON_ERROR_STOP=1 "$@"
}

# probe_produce FILE [PROPERTY...] — the sample records in FILE to the probe's topic.
probe_produce() {
    local file="$1"
    shift
    local props=(--reader-property parse.key=true --reader-property 'key.separator=|')
    local p
    for p in "$@"; do props+=(--reader-property "$p"); done
    bash "$COURIER_REPO/dev/kafka.sh" console-producer --topic "$probe_topic" "${props[@]}" \
        --command-property max.block.ms=10000 <"$COURIER_REPO/dev/debezium-sample/$file" 2>&1 |
        grep -v 'metric names' >&2 || true
}

# probe_wait WHAT SQL EXPECTED — poll SQL in the probe database until it prints EXPECTED.
probe_wait() {
    local what="$1" sql="$2" expected="$3" started=$SECONDS got=""
    while :; do
        got="$(probe_sql -d "$probe_db" -c "$sql" 2>/dev/null || true)"
        if [ "$got" = "$expected" ]; then
            say "probe: $what ($((SECONDS - started))s)"
            return 0
        fi
        [ $((SECONDS - started)) -lt "$PROBE_TIMEOUT_S" ] ||
            die "probe: $what did not happen within ${PROBE_TIMEOUT_S}s (got '${got}'; connector status: $(rest "$CONNECT_URL/connectors/$probe_name/status" 2>/dev/null || true); worker log: $JVM_LOG)"
        sleep 0.3
    done
}

probe_cleanup() {
    curl -sS --max-time 30 -o /dev/null -X DELETE "$CONNECT_URL/connectors/$probe_name" 2>/dev/null || true
    bash "$COURIER_REPO/dev/kafka.sh" topics --delete --topic "$probe_topic" >/dev/null 2>&1 || true
    probe_sql -d postgres -c "DROP DATABASE IF EXISTS $probe_db" >/dev/null 2>&1 || true
}

cmd_probe() {
    local n config started=$SECONDS
    ready || die "the worker is not ready on $CONNECT_URL; run dev/kafka-connect.sh start"
    bash "$COURIER_REPO/dev/pg.sh" status >/dev/null || die "PostgreSQL is not running; run dev/pg.sh start"
    n="$$$RANDOM"
    probe_name="courier-probe-$n"
    probe_topic="probe$n.public.t"
    probe_db="connect_probe_$n"
    trap probe_cleanup EXIT
    probe_sql -d postgres -c "CREATE DATABASE $probe_db" >/dev/null
    bash "$COURIER_REPO/dev/kafka.sh" topics --create --topic "$probe_topic" 2>&1 | grep -v 'metric names' >&2
    probe_produce create.txt
    config="$(mktemp)"
    config_json "$COURIER_REPO/dev/debezium-sample/jdbc-sink.properties" |
        jq --arg topic "$probe_topic" --arg url "jdbc:postgresql://127.0.0.1:${COURIER_PG_PORT:-55432}/$probe_db" \
            '. + {topics: $topic, "connection.url": $url}' >"$config"
    cmd_connector "$probe_name" "$config"
    rm -f "$config"
    probe_wait "the create event inserted row 1" "SELECT name FROM t WHERE id = 1" scarf
    probe_produce update.txt
    probe_wait "the update event changed it" "SELECT name FROM t WHERE id = 1" "wool scarf"
    probe_produce delete.txt null.marker=NULL
    probe_wait "the delete event removed it" "SELECT count(*) FROM t" 0
    say "probe: Debezium change events reach PostgreSQL through the JDBC sink (${probe_topic} -> $probe_db.t, $((SECONDS - started))s in all)"
}

cmd_destroy() {
    jvm_stop
    rm -rf "$CONNECT_CONF" "$CONNECT_DATA" "$CONNECT_LOGS" "$JVM_PIDFILE"
    say "deleted the worker's configuration, offsets and logs (the fetched jars are kept)"
}

usage() {
    sed -n '2,17p' "$(readlink -f "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    mkdir -p "$CONNECT_DIR"
    case "$cmd" in
        url) printf '%s\n' "$CONNECT_URL" ;;
        log) printf '%s\n' "$JVM_LOG" ;;
        connector) cmd_connector "$@" ;;
        connector-status)
            [ $# -eq 1 ] || die "usage: dev/kafka-connect.sh connector-status NAME"
            rest "$CONNECT_URL/connectors/$1/status" | jq .
            ;;
        delete) cmd_delete "$@" ;;
        probe) cmd_probe ;;
        connectors) rest "$CONNECT_URL/connectors" | jq -c . ;;
        start | stop | restart | status | destroy)
            exec 9>"$CONNECT_DIR/.lock"
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
