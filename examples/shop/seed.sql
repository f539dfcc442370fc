-- Deterministic demo rows for the `shop` schema (schema.sql): 200 products,
-- 300 customers, 600 orders. Every value is a function of the row number, so
-- every load produces the same rows. Values include NULLs, empty and quoted
-- array elements, non-ASCII text, IPv4 and IPv6 addresses, and descriptions
-- long enough to be TOASTed (every 10th product).

SET client_min_messages = warning;

INSERT INTO products (sku, name, description, price, tags, attributes, in_stock,
                      weight_kg, created_at, updated_at)
SELECT 'SKU-' || lpad(i::text, 5, '0'),
       (ARRAY['Classic', 'Organic', 'Vintage', 'Compact', 'Deluxe', 'Crème',
              'Nordic', 'Smart', 'Über', 'Rustic', 'Café', 'Zen'])[1 + i % 12]
         || ' ' ||
       (ARRAY['Teapot', 'Mug', 'Lamp', 'Backpack', 'Notebook', 'Headphones',
              'Chair', 'Blender', 'Kettle', 'Umbrella', 'Sushi Set 寿司',
              'Matryoshka Матрёшка', 'Desk', 'Pillow'])[1 + (i / 12) % 14],
       CASE
           WHEN i % 10 = 0 THEN
               'Long description, part of the TOAST exercise. '
               || (SELECT string_agg(md5(i || '-' || j), ' ')
                     FROM generate_series(1, 200) AS j)
           WHEN i % 7 = 0 THEN NULL
           ELSE 'A dependable everyday item (#' || i || '), made to last.'
       END,
       round(4.99 + (i * 37 % 995) + (i % 100) / 100.0, 2),
       CASE
           WHEN i % 11 = 0 THEN '{}'::text[]
           WHEN i % 13 = 0 THEN ARRAY['kids, teens', 'say "hi"', 'back\slash']
           ELSE ARRAY[(ARRAY['kitchen', 'office', 'outdoor', 'home', 'travel'])[1 + i % 5],
                      (ARRAY['red', 'green', 'blue', 'black', 'white', 'oak'])[1 + i % 6]]
       END,
       jsonb_build_object(
           'color', (ARRAY['red', 'green', 'blue', 'black', 'white', 'oak'])[1 + i % 6],
           'dimensions_cm', jsonb_build_object('w', 5 + i % 40, 'h', 3 + i % 25, 'd', 1 + i % 15),
           'warranty_years', i % 4,
           'fragile', i % 5 = 0,
           'materials', CASE WHEN i % 3 = 0 THEN '["steel", "glass"]'::jsonb
                             ELSE '["cotton"]'::jsonb END,
           'rating', CASE WHEN i % 8 = 0 THEN NULL ELSE round(1 + (i * 7 % 40) / 10.0, 1) END),
       i % 9 <> 0,
       CASE WHEN i % 17 = 0 THEN NULL ELSE (0.1 + (i * 13 % 500) / 10.0)::real END,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '7 hours 13 minutes',
       timestamptz '2024-01-01 00:00:00+00' + i * interval '7 hours 13 minutes'
         + (i % 30) * interval '1 day 0.25 seconds'
  FROM generate_series(1, 200) AS i;

INSERT INTO customers (id, email, name, country, tier, signup_date, last_login, ip)
SELECT md5('customer-' || i)::uuid,
       'customer' || i || '@example.' || (ARRAY['com', 'org', 'net'])[1 + i % 3],
       (ARRAY['Ada', 'José', 'Zoë', 'Grace', 'Linus', 'Amélie', 'Kenji', 'Olu',
              'Priya', 'Søren', 'Mei', 'Nguyễn'])[1 + i % 12]
         || ' ' ||
       (ARRAY['Lovelace', 'García', 'Ōtsuka', 'Hopper', 'O''Brien', 'Müller',
              'Silva', 'Okafor', 'Sharma', 'Kierkegaard'])[1 + (i / 12) % 10],
       (ARRAY['US', 'GB', 'DE', 'FR', 'JP', 'BR', 'IN', 'NL', 'SE', 'CA'])[1 + i % 10],
       (CASE WHEN i % 20 = 0 THEN 'enterprise' WHEN i % 5 = 0 THEN 'pro' ELSE 'free' END)::customer_tier,
       date '2023-01-01' + i * 2,
       CASE WHEN i % 6 = 0 THEN NULL
            ELSE timestamptz '2024-06-01 00:00:00+00' + i * interval '3 hours 7 minutes 0.5 seconds'
       END,
       CASE i % 8
           WHEN 0 THEN NULL
           WHEN 1 THEN ('2001:db8::' || to_hex(i))::inet
           ELSE ('198.51.100.' || (1 + i % 250))::inet
       END
  FROM generate_series(1, 300) AS i;

INSERT INTO orders (customer_id, status, total, items, placed_at, note)
SELECT md5('customer-' || (1 + (o.i * 7) % 300))::uuid,
       (ARRAY['placed', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + o.i % 5],
       line.total,
       line.items,
       timestamptz '2024-03-01 00:00:00+00' + o.i * interval '2 hours 11 minutes',
       CASE WHEN o.i % 9 = 0 THEN 'Please leave it at the door'
            WHEN o.i % 23 = 0 THEN 'Gift — wrap it, please'
       END
  FROM generate_series(1, 600) AS o(i)
 CROSS JOIN LATERAL (
       SELECT sum(p.price * q.qty),
              jsonb_agg(jsonb_build_object('sku', p.sku, 'qty', q.qty, 'unit_price', p.price)
                        ORDER BY l.n)
         FROM generate_series(1, 1 + o.i % 3) AS l(n)
        CROSS JOIN LATERAL (SELECT 1 + (o.i * l.n) % 4) AS q(qty)
         JOIN products p
           ON p.sku = 'SKU-' || lpad((1 + (o.i * 31 + l.n * 17) % 200)::text, 5, '0')
       ) AS line(total, items);

ANALYZE products, customers, orders;
