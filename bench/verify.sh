#!/usr/bin/env bash
# The verify and rebuild benchmark: a table of 1,000,000 rows snapshotted by Courier into a Redis
# cache and an OpenSearch index, then `courier verify` of each store equal and with 1% of its rows
# deleted behind Courier's back (rows per second of the table), and `courier rebuild` of the
# drifted store as a ratio to its snapshot time, with peak RSS. It prints a table (see
# crates/courier/tests/verify_bench.rs for what each figure means).
#
#   bench/verify.sh                          1,000,000 rows
#   COURIER_BENCH_ROWS=200000 bench/verify.sh
#
# It uses the dev/ services (PostgreSQL, Redis logical database 9, OpenSearch), its own database
# bench_verify (dropped at the end) and index bench_verify_items. Takes a few minutes after the
# release build.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
bash dev/pg.sh start
bash dev/redis.sh start
bash dev/opensearch.sh start
cargo test --release -p courier --test verify_bench -- --ignored --nocapture --test-threads=1
