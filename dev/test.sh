#!/usr/bin/env bash
# Runs Courier's whole test suite against real local services:
# starts PostgreSQL, Redis (standalone and cluster), ClickHouse (18.16 and 26.9), OpenSearch (the main node, the
# deliberately overloaded one, and 1.x and 3.x nodes), Elasticsearch (8.x, 7.x and 9.x), and Kafka
# with a Kafka Connect worker (Debezium's JDBC sink and PostgreSQL connector) with the dev/ scripts,
# checks formatting and lints, then runs every unit and end-to-end test (the Kafka decoder's tests,
# courier-kafka's `debezium` and `courier_sink`, and the outbox's side by side with Debezium's
# EventRouter, `outbox_debezium`, need the broker, the worker and PostgreSQL). The tests that exercise
# what differs between PostgreSQL versions also run against PostgreSQL 14, 16, 17 and 18
# (dev/pg-matrix.sh), in the background while the suite runs against 15. The failover test and
# the test of decoding on a standby (logical_standby) each start a PostgreSQL 17 primary and standby of
# their own (dev/pg-failover.sh, on free ports) and remove them.
#
#   dev/test.sh            the whole suite (what CI runs)
#   dev/test.sh -- FILTER  pass arguments on to `cargo test`
#
# COURIER_TEST_PG_VERSIONS (e.g. "14 18", or "" for none) names the versions besides 15 that
# dev/pg-matrix.sh runs; the whole suite runs all four, a narrowed run none unless it is set.
#
# The whole suite (no FILTER, no COURIER_TEST_SEARCH_NODES) sets COURIER_TEST_REQUIRE_ALL=1: a test
# that finds something it needs missing fails and says how to provide it. A narrowed run lets such
# tests skip, and lists them at the end (see "Skipped tests" in dev/README.md).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services"
# The overloaded OpenSearch node, the Elasticsearch node, the search nodes of other versions
# (OpenSearch 1 and 3, Elasticsearch 7 and 9), and Kafka with Kafka Connect start in the background
# while the others start.
# COURIER_TEST_SEARCH_NODES (e.g. "opensearch-1 elasticsearch-9") narrows the search tests, and the
# nodes of other versions started here, to the nodes it names.
background=()
start_in_background() {
    "$@" &
    background+=("$!:$*")
}
start_in_background env COURIER_OPENSEARCH_INSTANCE=overload bash dev/opensearch.sh start
# The Kafka broker, then the Kafka Connect worker on it (kafka-connect.sh starts the broker first).
start_in_background bash dev/kafka-connect.sh start
start_in_background bash dev/elasticsearch.sh start
# ClickHouse 26.9 beside the 18.16 server (its first start installs it with pip).
start_in_background env COURIER_CLICKHOUSE_INSTANCE=26 bash dev/clickhouse.sh start
for node in opensearch-1 opensearch-3 elasticsearch-7 elasticsearch-9; do
    case " ${COURIER_TEST_SEARCH_NODES:-$node} " in
        *" $node "*) ;;
        *) continue ;;
    esac
    flavour="${node%-*}"
    start_in_background env "COURIER_${flavour^^}_INSTANCE=${node##*-}" bash "dev/$flavour.sh" start
done
# The clusters of the other PostgreSQL versions.
if [ $# -eq 0 ]; then
    read -ra pg_versions <<<"${COURIER_TEST_PG_VERSIONS-14 16 17 18}"
else
    read -ra pg_versions <<<"${COURIER_TEST_PG_VERSIONS-}"
fi
for version in "${pg_versions[@]}"; do
    start_in_background env "COURIER_PG_VERSION=$version" bash dev/pg.sh start
done
bash dev/pg.sh start
bash dev/redis.sh start
bash dev/redis-cluster.sh start
bash dev/clickhouse.sh start
bash dev/opensearch.sh start
for job in "${background[@]}"; do
    wait "${job%%:*}" || {
        echo "${job#*:} failed (output above)" >&2
        exit 1
    }
done

# The end-to-end tests leave their replication slots (each drops its own at its next start);
# once the suite is over, inactive ones would only hold WAL back.
drop_test_slots() {
    local version
    for version in 15 "${pg_versions[@]}"; do
        COURIER_PG_VERSION="$version" bash dev/pg.sh psql -X -q -d postgres -c "SELECT \
            count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
            WHERE NOT active AND database LIKE 'e2e\_%'" >/dev/null 2>&1 || true
    done
}
skipped="$(mktemp)"
matrix="$(mktemp -d)"
trap 'drop_test_slots; rm -rf "$skipped" "$matrix"' EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test"
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ] && [ -z "${COURIER_TEST_SEARCH_NODES:-}" ]; then
    export COURIER_TEST_REQUIRE_ALL="${COURIER_TEST_REQUIRE_ALL:-1}"
fi
matrix_pid=""
if [ "${#pg_versions[@]}" -gt 0 ]; then
    # One build for both: the matrix runs its binaries from target/ beside the suite's cargo test.
    bash dev/pg-matrix.sh --list >"$matrix/binaries"
    COURIER_PG_MATRIX_BINARIES="$matrix/binaries" COURIER_PG_MATRIX_LOGS="$matrix" \
        COURIER_TEST_SKIPPED="$skipped" bash dev/pg-matrix.sh "${pg_versions[@]}" >"$matrix/out" 2>&1 &
    matrix_pid=$!
fi
status=0
COURIER_TEST_SKIPPED="$skipped" cargo test --workspace --all-features "$@" || status=$?
if [ -n "$matrix_pid" ]; then
    step "the same tests on PostgreSQL ${pg_versions[*]} (dev/pg-matrix.sh)"
    wait "$matrix_pid" || status=1
    cat "$matrix/out"
fi
if [ -s "$skipped" ]; then
    step "skipped tests: $(wc -l <"$skipped") (cargo test reported them ok, but they tested nothing)"
    sort "$skipped"
fi
exit "$status"
