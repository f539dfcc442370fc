#!/usr/bin/env bash
# Runs Courier's whole test suite against real local services:
# starts PostgreSQL, Redis (standalone and cluster), ClickHouse, OpenSearch (the main node and
# the deliberately overloaded one) and Elasticsearch with the dev/ scripts, checks formatting and
# lints, then runs every unit and end-to-end test.
#
#   dev/test.sh            the whole suite (what CI runs)
#   dev/test.sh -- FILTER  pass arguments on to `cargo test`
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services"
# The overloaded OpenSearch node and the Elasticsearch node start in the background while the
# others start.
COURIER_OPENSEARCH_INSTANCE=overload bash dev/opensearch.sh start &
overload_node=$!
bash dev/elasticsearch.sh start &
elasticsearch_node=$!
bash dev/pg.sh start
bash dev/redis.sh start
bash dev/redis-cluster.sh start
bash dev/clickhouse.sh start
bash dev/opensearch.sh start
wait "$overload_node" || {
    echo "COURIER_OPENSEARCH_INSTANCE=overload dev/opensearch.sh start failed (output above)" >&2
    exit 1
}
wait "$elasticsearch_node" || {
    echo "dev/elasticsearch.sh start failed (output above)" >&2
    exit 1
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test"
[ "${1:-}" = "--" ] && shift
cargo test --workspace --all-features "$@"
