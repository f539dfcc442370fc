#!/usr/bin/env bash
# Keep changing the shop demo's rows at a modest rate until stopped, the way a
# live shop would: orders are placed, paid, shipped and now and then deleted,
# prices and stock change, customers log in, a long description is revised.
#
#   examples/shop/writer.sh [--rate N] [--count N] [DB_URL]
#
#   DB_URL     defaults to $PGURL, then to the local development cluster's shop
#              database as the `courier` role
#   --rate N   transactions per second (default $WRITER_RATE, else 5)
#   --count N  stop after N transactions (default $WRITER_COUNT, else 0 = never)
#
# Each transaction is its own short psql call, so a restarted or briefly
# unreachable server costs a few failed transactions, never the writer: it
# reports failures on stderr (at most one line every 10 s) and keeps going.
# SIGINT or SIGTERM stops it cleanly with exit status 0.
set -uo pipefail

rate="${WRITER_RATE:-5}"
count="${WRITER_COUNT:-0}"
url="${PGURL:-postgres://courier:courier@127.0.0.1:55432/shop}"
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) rate="${2:?--rate needs a number}"; shift 2 ;;
        --count) count="${2:?--count needs a number}"; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "writer: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) url="$1"; shift ;;
    esac
done
interval="$(awk -v r="$rate" 'BEGIN { if (r + 0 <= 0) exit 1; printf "%.3f", 1 / r }')" ||
    { echo "writer: --rate must be a positive number, got '$rate'" >&2; exit 2; }
[[ "$count" =~ ^[0-9]+$ ]] || { echo "writer: --count must be a whole number, got '$count'" >&2; exit 2; }

psql_bin=psql
[ -x /usr/lib/postgresql/15/bin/psql ] && psql_bin=/usr/lib/postgresql/15/bin/psql
# A server that is down or a lock held by a test must not stall the writer.
export PGCONNECT_TIMEOUT=5
export PGOPTIONS="${PGOPTIONS:-} -c statement_timeout=10s -c lock_timeout=5s"
export PGAPPNAME=shop-writer

# A random existing order (optionally matching FILTER, an "AND ..." clause) at
# or after a random point of the id range; cheap on a table that keeps
# growing, since min and max come from the primary key index.
random_order() {
    echo "(SELECT id FROM orders
            WHERE id >= (SELECT min(id) + floor(random() * (max(id) - min(id) + 1))::bigint FROM orders)
              ${1:-}
            ORDER BY id LIMIT 1)"
}
random_product="(SELECT id FROM products ORDER BY random() LIMIT 1)"
random_customer="(SELECT id FROM customers ORDER BY random() LIMIT 1)"

# An order of 1 to 3 in-stock products, and its customer's login time, in one
# statement (so one transaction touches two tables).
sql_place_order="
WITH buyer AS $random_customer,
placed AS (
    INSERT INTO orders (customer_id, total, items, note)
    SELECT buyer.id, line.total, line.items,
           CASE WHEN random() < 0.1 THEN 'Ring twice, please' END
      FROM buyer
     CROSS JOIN LATERAL (
           SELECT sum(p.price * q.qty),
                  jsonb_agg(jsonb_build_object('sku', p.sku, 'qty', q.qty, 'unit_price', p.price))
             FROM (SELECT sku, price FROM products WHERE in_stock
                    ORDER BY random() LIMIT 1 + floor(random() * 3)::int) AS p
            CROSS JOIN LATERAL (SELECT 1 + floor(random() * 4)::int) AS q(qty)
           ) AS line(total, items)
     WHERE line.items IS NOT NULL
    RETURNING customer_id)
UPDATE customers SET last_login = now() WHERE id IN (SELECT customer_id FROM placed)"

sql_advance_order="
UPDATE orders
   SET status = CASE status WHEN 'placed' THEN 'paid' WHEN 'paid' THEN 'shipped' ELSE 'delivered' END
 WHERE id = $(random_order "AND status IN ('placed', 'paid', 'shipped')")"

sql_delete_order="DELETE FROM orders WHERE id = $(random_order)"

sql_change_price="
UPDATE products
   SET price = greatest(0.99, round(price * (0.9 + random() * 0.2)::numeric, 2)), updated_at = now()
 WHERE id = $random_product"

sql_toggle_stock="UPDATE products SET in_stock = NOT in_stock, updated_at = now() WHERE id = $random_product"

sql_customer_login="
UPDATE customers
   SET last_login = now(), ip = ('203.0.113.' || (1 + floor(random() * 254))::int)::inet
 WHERE id = $random_customer"

sql_revise_description="
UPDATE products
   SET description = 'Long description, revised. '
                     || (SELECT string_agg(md5(random()::text), ' ') FROM generate_series(1, 200)),
       updated_at = now()
 WHERE id = (SELECT id FROM products WHERE length(description) > 2000 ORDER BY random() LIMIT 1)"

# Weighted choice of what the next transaction does (weights sum to 100).
pick_sql() {
    local roll=$((RANDOM % 100))
    if [ "$roll" -lt 35 ]; then echo "$sql_place_order"
    elif [ "$roll" -lt 55 ]; then echo "$sql_advance_order"
    elif [ "$roll" -lt 73 ]; then echo "$sql_change_price"
    elif [ "$roll" -lt 81 ]; then echo "$sql_toggle_stock"
    elif [ "$roll" -lt 93 ]; then echo "$sql_customer_login"
    elif [ "$roll" -lt 98 ]; then echo "$sql_delete_order"
    else echo "$sql_revise_description"
    fi
}

# Sleeping in the background and waiting for it lets a signal stop the writer
# at once, without the shell reporting a killed sleep.
pause() {
    sleep "$1" &
    wait $! 2>/dev/null
}

stop=0
trap 'stop=1' INT TERM
done_count=0
failed=0
last_report=0

while [ "$stop" -eq 0 ]; do
    if err="$("$psql_bin" "$url" -X -q -v ON_ERROR_STOP=1 -c "$(pick_sql)" 2>&1 >/dev/null)"; then
        pause "$interval"
    else
        failed=$((failed + 1))
        now="$(date +%s)"
        if [ $((now - last_report)) -ge 10 ]; then
            echo "writer: a transaction failed ($failed so far), retrying: ${err%%$'\n'*}" >&2
            last_report="$now"
        fi
        pause 1
    fi
    done_count=$((done_count + 1))
    if [ "$count" -gt 0 ] && [ "$done_count" -ge "$count" ]; then
        break
    fi
done
echo "writer: stopped after $done_count transactions ($failed failed)" >&2
exit 0
