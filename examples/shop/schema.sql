-- The `shop` demo schema: a small web shop whose tables mix the column types
-- Courier maps (identity and uuid keys, numeric, arrays, jsonb, enums, inet,
-- dates and timestamps, nullable columns and long, TOASTed text).
--
-- Loading it drops and recreates the tables: the demo data is disposable.
-- Load it with examples/shop/load.sh, or: psql "$URL" -f schema.sql -f seed.sql

SET client_min_messages = warning;

DROP TABLE IF EXISTS orders, customers, products CASCADE;
DROP TYPE IF EXISTS customer_tier;

CREATE TYPE customer_tier AS ENUM ('free', 'pro', 'enterprise');

CREATE TABLE products (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    name        text NOT NULL,
    -- Some descriptions are several kilobytes, so they are stored out of line
    -- (TOAST) and arrive as "unchanged" in updates that do not touch them.
    description text,
    price       numeric(12,2) NOT NULL CHECK (price >= 0),
    tags        text[] NOT NULL DEFAULT '{}',
    attributes  jsonb NOT NULL DEFAULT '{}',
    in_stock    boolean NOT NULL DEFAULT true,
    weight_kg   real,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    country     char(2) NOT NULL,
    tier        customer_tier NOT NULL DEFAULT 'free',
    signup_date date NOT NULL DEFAULT current_date,
    last_login  timestamptz,
    ip          inet
);

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'placed'
                CHECK (status IN ('placed', 'paid', 'shipped', 'delivered', 'cancelled')),
    total       numeric(12,2) NOT NULL,
    items       jsonb NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now(),
    note        text
);

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX orders_placed_at_idx ON orders (placed_at);
