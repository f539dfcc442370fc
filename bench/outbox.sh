#!/usr/bin/env bash
# The outbox benchmark: outbox events routed end to end (the application's INSERT INTO outbox →
# records in Kafka), the drain rate of a backlog of OLTP-style transactions beside pg_recvlogical's
# on the same backlog, Courier's peak RSS, and commit → Kafka latency at a steady rate; for the
# Kafka sink with and without exactly_once. It prints a table (see the benchmark's module
# documentation in crates/courier/tests/outbox_bench.rs for what each figure means).
#
#   bench/outbox.sh                                   50,000 events, latency at 1,000 tx/s for 10 s
#   COURIER_BENCH_EVENTS=200000 COURIER_BENCH_RATE=2000 bench/outbox.sh
#
# It uses the dev/ services (PostgreSQL, Kafka), its own database bench_outbox and topics of its own
# prefix, both dropped at the end. Takes 1-2 minutes after the release build.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
bash dev/pg.sh start
bash dev/kafka.sh start
cargo test --release -p courier --test outbox_bench -- --ignored --nocapture --test-threads=1
