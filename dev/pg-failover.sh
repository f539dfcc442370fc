#!/usr/bin/env bash
# A PostgreSQL 17 primary and its physical standby, set up for failover
# slots, to rehearse a failover with Courier.
#
#   dev/pg-failover.sh start     create the pair on first run and start both (idempotent)
#   dev/pg-failover.sh promote   promote the standby (it becomes the primary)
#   dev/pg-failover.sh kill      stop the primary with an immediate shutdown, as a crash would
#   dev/pg-failover.sh stop      fast shutdown of both; no-op for a node that is down
#   dev/pg-failover.sh destroy   stop both and delete the pair
#   dev/pg-failover.sh status    one line per node; exit 0 iff both run
#   dev/pg-failover.sh url [db] [role]   multi-host URL, target_session_attrs=read-write
#   dev/pg-failover.sh port primary|standby
#   dev/pg-failover.sh psql primary|standby [args]   psql as the superuser
#
# The primary listens on 127.0.0.1:55471, the standby on 127.0.0.1:55472
# (COURIER_PG_FAILOVER_PORT and COURIER_PG_FAILOVER_STANDBY_PORT override
# them); both live in <repo>/.dev/pg-failover/ (COURIER_PG_FAILOVER_HOME
# overrides it). The server is the PostgreSQL 17 build `dev/pg.sh` fetches
# (COURIER_PG_FAILOVER_VERSION=18: the 18 build); the standby starts as a
# copy of the stopped primary's data folder. The primary has
# wal_level=logical, a physical slot for the standby and
# synchronized_standby_slots naming it; the standby streams through that
# slot with hot_standby_feedback=on and sync_replication_slots=on, so it
# keeps failover slots in step.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=pg-failover
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

FO_HOME="${COURIER_PG_FAILOVER_HOME:-$COURIER_REPO/.dev/pg-failover}"
# Failover slots need PostgreSQL 17 or later.
FO_VERSION="${COURIER_PG_FAILOVER_VERSION:-17}"
case "$FO_VERSION" in
    17 | 18) ;;
    *) die "COURIER_PG_FAILOVER_VERSION=$FO_VERSION: failover slots need PostgreSQL 17 or 18" ;;
esac
PRIMARY_PORT="${COURIER_PG_FAILOVER_PORT:-55471}"
STANDBY_PORT="${COURIER_PG_FAILOVER_STANDBY_PORT:-55472}"
PG_HOST=127.0.0.1
PG_CLIENT_BIN=/usr/lib/postgresql/15/bin
PG_SH="$COURIER_REPO/dev/pg.sh"
# The standby's physical slot on the primary, and its application_name.
STANDBY_SLOT=courier_standby

# Local development credentials (role -> password). Not secrets.
declare -A PG_PASSWORDS=([postgres]=postgres [courier]=courier)

# Unix socket paths are limited to 107 bytes (see dev/pg.sh).
FO_SOCK="$FO_HOME/run"
if [ "${#FO_SOCK}" -gt 90 ]; then
    FO_SOCK="/tmp/courier-pgfo-$(printf '%s' "$FO_HOME" | cksum | cut -d' ' -f1)"
fi

PG_ENV_UNSET=(-u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE
    -u PGSERVICE -u PGSERVICEFILE -u PGPASSFILE -u PGDATA -u PGOPTIONS -u PGSSLMODE
    -u PGSSLROOTCERT -u PGREQUIRESSL -u PGTARGETSESSIONATTRS)

as_postgres() {
    (cd / && runuser -u postgres -- env "${PG_ENV_UNSET[@]}" "$@" 9>&-)
}

# node_* NODE — the data folder, log and port of `primary` or `standby`.
node_data() { echo "$FO_HOME/$1/data"; }
node_log() { echo "$FO_HOME/$1/log"; }
node_port() {
    case "$1" in
        primary) echo "$PRIMARY_PORT" ;;
        standby) echo "$STANDBY_PORT" ;;
        *) die "unknown node $1; use primary or standby" ;;
    esac
}

# The server programs (dev/pg.sh fetches them).
PG_BIN="$(COURIER_PG_VERSION="$FO_VERSION" "$PG_SH" bin)"
pg_bin() {
    echo "$PG_BIN"
}

running() {
    local data
    data="$(node_data "$1")"
    [ -f "$data/PG_VERSION" ] && as_postgres "$(pg_bin)/pg_ctl" status -D "$data" >/dev/null 2>&1
}

ready() {
    "$PG_CLIENT_BIN/pg_isready" -q -h "$PG_HOST" -p "$(node_port "$1")" -d postgres -U postgres
}

# sql NODE SQL — one value from NODE, as the superuser over its socket.
sql() {
    as_postgres "$PG_CLIENT_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$FO_SOCK" \
        -p "$(node_port "$1")" -U postgres -d postgres -c "$2"
}

# A standby promoted earlier has no standby.signal any more.
promoted() {
    [ -f "$(node_data standby)/PG_VERSION" ] && [ ! -f "$(node_data standby)/standby.signal" ]
}

prepare_dirs() {
    mkdir -p "$FO_HOME/primary" "$FO_HOME/standby" "$FO_SOCK"
    touch "$(node_log primary)" "$(node_log standby)"
    chown postgres:postgres "$FO_HOME" "$FO_HOME/primary" "$FO_HOME/standby" "$FO_SOCK" \
        "$(node_log primary)" "$(node_log standby)"
    chmod 0755 "$FO_HOME" "$FO_HOME/primary" "$FO_HOME/standby" "$FO_SOCK"
    make_reachable_by postgres "$FO_HOME"
    make_reachable_by postgres "$FO_SOCK"
}

init_primary() {
    local data
    data="$(node_data primary)"
    if [ -f "$data/PG_VERSION" ]; then
        [ "$(cat "$data/PG_VERSION")" = "$FO_VERSION" ] ||
            die "$FO_HOME holds a PostgreSQL $(cat "$data/PG_VERSION") pair; remove it with: dev/pg-failover.sh destroy"
        return 0
    fi
    say "creating the primary in $data"
    rm -rf "$data"
    mkdir -p "$data"
    chown postgres:postgres "$data"
    chmod 0700 "$data"
    local pwfile="$FO_HOME/initdb.pw" locale=C
    locale -a 2>/dev/null | grep -qix 'c.utf-\?8' && locale=C.UTF-8
    printf '%s\n' "${PG_PASSWORDS[postgres]}" >"$pwfile"
    chown postgres:postgres "$pwfile"
    chmod 0600 "$pwfile"
    if ! as_postgres "$(pg_bin)/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale="$locale" \
        --no-instructions >"$FO_HOME/initdb.log" 2>&1; then
        rm -f "$pwfile"
        cat "$FO_HOME/initdb.log" >&2
        rm -rf "$data"
        die "initdb failed (output above)"
    fi
    rm -f "$pwfile"
    echo "include_if_exists = 'courier.conf'" >>"$data/postgresql.conf"
}

# write_config NODE — settings and client authentication, rewritten on every
# start (the standby's copy of the primary's files included).
write_config() {
    local node=$1 data
    data="$(node_data "$node")"
    {
        echo "# Written by dev/pg-failover.sh on every start: change the script, not this file."
        echo "listen_addresses = '$PG_HOST'"
        echo "port = $(node_port "$node")"
        echo "unix_socket_directories = $(sql_quote "$FO_SOCK")"
        echo "max_connections = 100"
        echo "wal_level = logical"
        echo "max_replication_slots = 16"
        echo "max_wal_senders = 16"
        echo "max_slot_wal_keep_size = 4GB"
        echo "hot_standby = on"
        echo "password_encryption = 'scram-sha-256'"
        echo "timezone = 'UTC'"
        echo "log_timezone = 'UTC'"
        echo "lc_messages = 'C'"
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
        if [ "$node" = primary ]; then
            echo "# Logical walsenders send nothing the standby has not flushed: a failover"
            echo "# slot never gets ahead of its copy on the standby."
            echo "synchronized_standby_slots = '$STANDBY_SLOT'"
        else
            # Slot synchronization needs a dbname in primary_conninfo.
            local conninfo="host=$PG_HOST port=$PRIMARY_PORT user=postgres password=${PG_PASSWORDS[postgres]} dbname=postgres application_name=$STANDBY_SLOT"
            echo "primary_conninfo = $(sql_quote "$conninfo")"
            echo "primary_slot_name = '$STANDBY_SLOT'"
            echo "hot_standby_feedback = on"
            echo "sync_replication_slots = on"
        fi
    } >"$data/courier.conf"
    cat >"$data/pg_hba.conf" <<'EOF'
# Written by dev/pg-failover.sh on every start: change the script, not this file.
# TYPE  DATABASE     USER          ADDRESS        METHOD
local   all          postgres                     peer
local   replication  postgres                     peer
local   all          all                          scram-sha-256
local   replication  all                          scram-sha-256
host    all          all           127.0.0.1/32   scram-sha-256
host    replication  all           127.0.0.1/32   scram-sha-256
host    all          all           ::1/128        scram-sha-256
host    replication  all           ::1/128        scram-sha-256
EOF
    chown postgres:postgres "$data/courier.conf" "$data/pg_hba.conf"
    chmod 0600 "$data/courier.conf" "$data/pg_hba.conf"
}

start_node() {
    local node=$1
    running "$node" && return 0
    port_open "$PG_HOST" "$(node_port "$node")" &&
        die "port $(node_port "$node") is taken by another server; choose others with COURIER_PG_FAILOVER_PORT / COURIER_PG_FAILOVER_STANDBY_PORT"
    write_config "$node"
    if ! as_postgres "$(pg_bin)/pg_ctl" start -D "$(node_data "$node")" -l "$(node_log "$node")" \
        -w -t 120 >/dev/null 2>&1; then
        tail -n 30 "$(node_log "$node")" >&2
        die "the $node did not start (log above, full log in $(node_log "$node"))"
    fi
    for _ in $(seq 1 120); do
        ready "$node" && return 0
        sleep 0.5
    done
    die "the $node started but does not accept connections; see $(node_log "$node")"
}

stop_node() {
    local node=$1 mode=$2
    running "$node" || return 0
    as_postgres "$(pg_bin)/pg_ctl" stop -D "$(node_data "$node")" -m "$mode" -w -t 120 >/dev/null ||
        die "the $node did not stop; see $(node_log "$node")"
}

# Roles, a database and the standby's physical slot; safe to run again.
bootstrap() {
    as_postgres "$PG_CLIENT_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$FO_SOCK" -p "$PRIMARY_PORT" \
        -U postgres -d postgres >/dev/null <<EOF
SET client_min_messages = warning;
ALTER ROLE postgres PASSWORD $(sql_quote "${PG_PASSWORDS[postgres]}");
SELECT 'CREATE ROLE courier' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'courier') \gexec
ALTER ROLE courier LOGIN REPLICATION NOSUPERUSER PASSWORD $(sql_quote "${PG_PASSWORDS[courier]}");
SELECT 'CREATE DATABASE courier_test OWNER courier'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'courier_test') \gexec
SELECT pg_create_physical_replication_slot('$STANDBY_SLOT', true)
 WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '$STANDBY_SLOT');
EOF
}

# The standby's data folder: a copy of the stopped primary's, without its
# slots (the standby's slots are the ones it synchronizes).
make_standby() {
    local data
    data="$(node_data standby)"
    say "creating the standby in $data from a copy of the primary"
    stop_node primary fast
    rm -rf "$data"
    cp -a "$(node_data primary)" "$data"
    rm -f "$data/postmaster.pid" "$data/postmaster.opts"
    rm -rf "${data:?}/pg_replslot/"*
    touch "$data/standby.signal"
    chown postgres:postgres "$data/standby.signal"
}

wait_streaming() {
    for _ in $(seq 1 240); do
        if [ "$(sql primary "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$STANDBY_SLOT' AND state = 'streaming'" 2>/dev/null)" = 1 ]; then
            return 0
        fi
        sleep 0.5
    done
    die "the standby does not stream from the primary; see $(node_log standby)"
}

cmd_start() {
    COURIER_PG_VERSION="$FO_VERSION" "$PG_SH" install
    prepare_dirs
    exec 9>"$FO_HOME/lock"
    flock 9
    if promoted; then
        # The old primary must not come back beside the new one.
        start_node standby
        say "the standby was promoted and runs as the primary on $PG_HOST:$STANDBY_PORT; the old primary stays down (destroy, then start, for a new pair)"
        return 0
    fi
    init_primary
    start_node primary
    bootstrap || die "could not create the roles and the standby's slot; see $(node_log primary)"
    if [ ! -f "$(node_data standby)/PG_VERSION" ]; then
        make_standby
        start_node primary
    fi
    start_node standby
    wait_streaming
    say "PostgreSQL $FO_VERSION primary on $PG_HOST:$PRIMARY_PORT, standby on $PG_HOST:$STANDBY_PORT (data in $FO_HOME)"
}

cmd_promote() {
    [ -d "$FO_HOME" ] || die "no pair in $FO_HOME; run dev/pg-failover.sh start"
    exec 9>"$FO_HOME/lock"
    flock 9
    running standby || die "the standby is not running; run dev/pg-failover.sh start"
    promoted && { say "the standby is already promoted"; return 0; }
    as_postgres "$(pg_bin)/pg_ctl" promote -D "$(node_data standby)" -w -t 120 >/dev/null ||
        die "the standby could not be promoted; see $(node_log standby)"
    for _ in $(seq 1 240); do
        [ "$(sql standby "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && {
            say "the standby on $PG_HOST:$STANDBY_PORT is the primary now"
            return 0
        }
        sleep 0.5
    done
    die "the standby is still in recovery after promotion; see $(node_log standby)"
}

cmd_kill() {
    [ -d "$FO_HOME" ] || return 0
    exec 9>"$FO_HOME/lock"
    flock 9
    stop_node primary immediate
    say "primary stopped (immediate)"
}

cmd_stop() {
    [ -d "$FO_HOME" ] || return 0
    exec 9>"$FO_HOME/lock"
    flock 9
    stop_node standby fast
    stop_node primary fast
    say "stopped"
}

cmd_destroy() {
    [ -d "$FO_HOME" ] || return 0
    (
        exec 9>"$FO_HOME/lock"
        flock 9
        stop_node standby immediate
        stop_node primary immediate
    )
    rm -rf "$FO_HOME"
    case "$FO_SOCK" in /tmp/courier-pgfo-*) rm -rf "$FO_SOCK" ;; esac
    say "removed $FO_HOME"
}

cmd_status() {
    local node all=0 role
    for node in primary standby; do
        if running "$node"; then
            role="$(sql "$node" "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END" 2>/dev/null || echo unknown)"
            echo "$node: running on $PG_HOST:$(node_port "$node") as $role (data in $(node_data "$node"))"
        else
            echo "$node: stopped"
            all=1
        fi
    done
    return "$all"
}

cmd_url() {
    local db="${1:-postgres}" role="${2:-postgres}"
    [ -n "${PG_PASSWORDS[$role]:-}" ] || die "unknown role $role (known: ${!PG_PASSWORDS[*]})"
    echo "postgres://$role:${PG_PASSWORDS[$role]}@$PG_HOST:$PRIMARY_PORT,$PG_HOST:$STANDBY_PORT/$db?target_session_attrs=read-write"
}

cmd_psql() {
    local node="${1:-}"
    [ $# -gt 0 ] && shift
    PGHOST="$PG_HOST" PGPORT="$(node_port "$node")" PGUSER=postgres PGPASSWORD="${PG_PASSWORDS[postgres]}" \
        PGDATABASE="${PGDATABASE:-postgres}" exec "$PG_CLIENT_BIN/psql" -X "$@"
}

usage() {
    sed -n '2,24p' "$(readlink -f "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        start) cmd_start ;;
        promote) cmd_promote ;;
        kill) cmd_kill ;;
        stop) cmd_stop ;;
        destroy) cmd_destroy ;;
        status) cmd_status ;;
        url) cmd_url "$@" ;;
        port) node_port "${1:-}" ;;
        psql) cmd_psql "$@" ;;
        *) usage ;;
    esac
}

main "$@"
