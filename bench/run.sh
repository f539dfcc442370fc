#!/usr/bin/env bash
# Courier's benchmark runner (method: bench/README.md).
#
#   bench/run.sh [--quick] [--sinks file,redis,clickhouse,opensearch] [--repeat N]
#                [--only oltp,bulk,toast,snapshot,latency] [--peer debezium] [--out DIR]
#
# Builds the release binary, starts the project's PostgreSQL, measures, and
# writes bench/results/latest.{md,json,svg}. Its replication slots (named
# courier_bench_*) and its database (courier_bench) are dropped on exit, even
# after a failure or Ctrl-C; so are the sinks' bench data (ClickHouse database
# courier_bench, search indexes courier_bench_*) unless the runner was killed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# One runner at a time: a second one must not reach the clean-up below,
# which would drop the first one's slots mid-run. Commands below get
# `9>&-` so that no service they start keeps the lock after this script.
mkdir -p "$REPO/.dev/bench"
exec 9>"$REPO/.dev/bench/run.sh.lock"
if ! flock -n 9; then
    echo "another bench/run.sh is running on this machine; wait for it to finish" >&2
    exit 1
fi

cleanup() {
    # Backstop for a runner killed before its own clean-up ran: slots left
    # behind would retain WAL forever.
    "$REPO/dev/pg.sh" psql -q -At -d postgres -c "
        SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
         WHERE slot_name LIKE 'courier\_bench\_%' AND active_pid IS NOT NULL;" >/dev/null 2>&1 || true
    sleep 0.2
    "$REPO/dev/pg.sh" psql -q -At -d postgres -c "
        SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
         WHERE slot_name LIKE 'courier\_bench\_%' AND NOT active;" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "[bench] building target/release/courier" >&2
cargo build --release -p courier --quiet 9>&-
echo "[bench] starting PostgreSQL" >&2
dev/pg.sh start >/dev/null 9>&-

PYTHONPATH="$REPO/bench${PYTHONPATH:+:$PYTHONPATH}" python3 -m courier_bench "$@" 9>&-
