#!/usr/bin/env bash
# Streaming of large in-progress transactions, release build: one 1M-row transaction committed while
# Courier streams with source.streaming = "on" and then "off", on PostgreSQL 17 (dev/pg.sh with
# COURIER_PG_VERSION=17), into the file sink. For each it prints Courier's peak RSS, commit -> first
# change applied and commit -> last change applied (the slot's confirmed_flush_lsn past the commit),
# and how many blocks PostgreSQL streamed.
#
#   bench/streaming.sh                               1,000,000 rows, the server's logical_decoding_work_mem
#   bench/streaming.sh --rows 200000 --work-mem 64kB --repeat 3
#
# Its database (courier_bench_stream) and slots (courier_bench_stream_*) are dropped at the end.
# Takes 2-4 minutes after the release build.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export COURIER_PG_VERSION="${COURIER_PG_VERSION:-17}"
echo "[bench] building target/release/courier" >&2
cargo build --release -p courier --quiet
bash dev/pg.sh start >/dev/null
PYTHONPATH="$REPO/bench${PYTHONPATH:+:$PYTHONPATH}" python3 -m courier_bench.streaming \
    --admin-url "$(bash dev/pg.sh url postgres)" --db-url "$(bash dev/pg.sh url courier_bench_stream)" "$@"
