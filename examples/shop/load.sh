#!/usr/bin/env bash
# Load (or reload) the shop demo: drops and recreates its tables, then inserts
# the deterministic demo rows, in one transaction.
#
#   examples/shop/load.sh [DB_URL]
#
# DB_URL defaults to $PGURL, then to the local development cluster's shop
# database as the `courier` role (started with dev/pg.sh start).
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
url="${1:-${PGURL:-postgres://courier:courier@127.0.0.1:55432/shop}}"
psql_bin=psql
[ -x /usr/lib/postgresql/15/bin/psql ] && psql_bin=/usr/lib/postgresql/15/bin/psql

"$psql_bin" "$url" -X -q -v ON_ERROR_STOP=1 --single-transaction \
    -f "$here/schema.sql" -f "$here/seed.sql"
echo "shop demo loaded: $("$psql_bin" "$url" -X -tA -c \
    "SELECT (SELECT count(*) FROM products) || ' products, '
         || (SELECT count(*) FROM customers) || ' customers, '
         || (SELECT count(*) FROM orders) || ' orders'")"
