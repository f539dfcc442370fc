#!/usr/bin/env bash
# The Courier demo in one command: starts the local PostgreSQL, Redis and ClickHouse,
# (re)loads the sample shop database, keeps a writer changing it, and runs
# Courier, which snapshots the shop, then prints every change as a JSON line
# keeps the products in Redis (redis-cli -p 56379 HGET product:42 row) and
# every table in ClickHouse (dev/clickhouse.sh client -q 'SELECT count() FROM shop.orders_current')
# and every change in Kafka topics (dev/kafka.sh console-consumer --topic shop.public.orders --from-beginning).
# Ctrl-C stops Courier and the writer.
#
#   dev/demo.sh
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

bash dev/pg.sh start >&2
bash dev/redis.sh start >&2
bash dev/clickhouse.sh start >&2
bash dev/opensearch.sh start >&2
bash dev/kafka.sh start >&2
echo "building courier (release)" >&2
cargo build --release -q -p courier

# A fresh demo each time: forget the previous demo's slot, publication and state.
bash dev/pg.sh psql -q -d shop -c "SELECT pg_drop_replication_slot('courier_demo') FROM pg_replication_slots WHERE slot_name = 'courier_demo'" \
    -c "DROP PUBLICATION IF EXISTS courier_demo" >/dev/null
rm -rf .dev/demo-state
# ... and the previous demo's cache (its versions belong to the dropped slot).
redis-cli -p 56379 --scan --pattern 'product:*' | xargs -r redis-cli -p 56379 UNLINK >/dev/null
# ... and the previous demo's analytics tables.
curl -fsS http://127.0.0.1:58123/ --data-binary 'DROP DATABASE IF EXISTS shop' >/dev/null
# ... and the previous demo's search index.
curl -fsS -X DELETE 'http://127.0.0.1:59200/products_v*' >/dev/null 2>&1 || true
# ... and the previous demo's Kafka topics.
bash dev/kafka.sh topics --delete --if-exists --topic 'shop\..*' >/dev/null 2>&1 || true
bash dev/kafka.sh topics --delete --if-exists --topic '__debezium-heartbeat\.shop' >/dev/null 2>&1 || true
bash examples/shop/load.sh >&2

bash examples/shop/writer.sh --rate 5 >/dev/null &
writer=$!
trap 'kill $writer 2>/dev/null || true' EXIT
echo "writer started; Courier's status: curl -s localhost:7070/v1/status" >&2
target/release/courier run --config examples/shop/courier.toml
