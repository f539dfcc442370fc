"""Courier's benchmark runner: drain rates against pg_recvlogical, snapshot
against psql \\copy, commit-to-sink latency, peak RSS (see bench/README.md)."""
