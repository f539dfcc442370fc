"""The workloads: tables, preloaded rows (written before any slot exists, so
not part of a backlog) and the changes that make up the measured backlog.

Each `generate` returns the number of row changes it wrote."""

import os
import re
import subprocess

from .pg import PG_BIN, psql, psql_file

PGBENCH = f"{PG_BIN}/pgbench"

OLTP_SCRIPT = """\\set aid random(1, {accounts})
BEGIN;
UPDATE bench_accounts SET balance = balance + 1, updated_at = now() WHERE id = :aid;
INSERT INTO bench_history (aid, delta, note) VALUES (:aid, 1, 'payment reference 0123456789 abcdefghij');
END;
"""

WIDE_SCRIPT = """\\set id random(1, {rows})
UPDATE bench_wide SET counter = counter + 1 WHERE id = :id;
"""


def pipelined(script_text):
    """The same transactions sent in one round trip each (pgbench pipeline
    mode; needs `-M prepared`): a backlog is built ~4x faster, and the WAL
    it leaves is the same."""
    lines = script_text.splitlines()
    sets = [l for l in lines if l.startswith("\\")]
    sql = [l for l in lines if not l.startswith("\\")]
    return "\n".join(sets + ["\\startpipeline"] + sql + ["\\endpipeline"]) + "\n"


def backlog_url(ctx):
    """Where pgbench builds a backlog from: without TLS, whose cost per round
    trip would be most of the time on 2 cores; nothing measured goes through
    this connection."""
    return ctx.db_url + "?sslmode=disable"


def pgbench(ctx, script_text, name, args, env=None, url=None):
    """Runs pgbench with a custom script; returns (processed transactions, tps)."""
    path = os.path.join(ctx.workdir, f"{name}.pgbench")
    with open(path, "w") as f:
        f.write(script_text)
    p = subprocess.run([PGBENCH, "-n", "-f", path, *args, url or ctx.db_url],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise RuntimeError(f"pgbench failed: {p.stderr.strip()[-2000:]}")
    done = re.search(r"number of transactions actually processed: (\d+)", p.stdout)
    tps = re.search(r"tps = ([\d.]+)", p.stdout)
    return int(done.group(1)), float(tps.group(1)) if tps else None


class Oltp:
    name = "oltp"
    tables = ["bench_accounts", "bench_history"]
    accounts = 100_000

    def __init__(self, quick):
        self.transactions = 20_000 if quick else 100_000

    def describe(self):
        return (f"{self.transactions:,} transactions of 2 changes: UPDATE of a ~350-byte "
                f"row (of {self.accounts:,}) + INSERT of a ~100-byte row; pgbench, 4 clients")

    def prepare(self, ctx):
        psql_file(ctx.db_url, f"""
            DROP TABLE IF EXISTS bench_accounts, bench_history;
            CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL,
                updated_at timestamptz NOT NULL, filler text NOT NULL);
            CREATE TABLE bench_history (id bigserial PRIMARY KEY, aid int NOT NULL,
                delta int NOT NULL, ts timestamptz NOT NULL DEFAULT clock_timestamp(), note text);
            INSERT INTO bench_accounts
              SELECT g, 0, now(), repeat(md5(g::text), 10) FROM generate_series(1, {self.accounts}) g;
            VACUUM ANALYZE bench_accounts;
        """)

    def reset(self, ctx):
        pass

    def generate(self, ctx):
        clients = 4
        done, _ = pgbench(ctx, pipelined(OLTP_SCRIPT.format(accounts=self.accounts)), "oltp",
                          ["-M", "prepared", "-c", str(clients), "-j", "2",
                           "-t", str(self.transactions // clients)], url=backlog_url(ctx))
        return 2 * done


class Bulk:
    name = "bulk"
    tables = ["bench_bulk"]

    def __init__(self, quick):
        self.rows = 100_000 if quick else 400_000

    def describe(self):
        return f"one transaction inserting {self.rows:,} rows of ~100 bytes"

    def prepare(self, ctx):
        psql(ctx.db_url, "DROP TABLE IF EXISTS bench_bulk; CREATE TABLE bench_bulk "
                         "(id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, note text)")

    def reset(self, ctx):
        psql(ctx.db_url, "TRUNCATE bench_bulk")

    def generate(self, ctx):
        psql(ctx.db_url, f"INSERT INTO bench_bulk SELECT g, g % 1000, md5(g::text), now(), "
                         f"'bulk row ' || g FROM generate_series(1, {self.rows}) g")
        return self.rows


class Wide:
    name = "toast"
    tables = ["bench_wide"]
    doc_kb = 3

    def __init__(self, quick):
        self.rows = 5_000 if quick else 20_000
        self.updates = 10_000 if quick else 120_000

    def describe(self):
        return (f"{self.updates:,} single-row UPDATEs of an int column on rows carrying "
                f"{self.doc_kb} KB of out-of-line TOASTed text that the UPDATE leaves alone "
                f"({self.rows:,} rows, REPLICA IDENTITY DEFAULT)")

    def prepare(self, ctx):
        md5s = self.doc_kb * 1024 // 32
        psql_file(ctx.db_url, f"""
            DROP TABLE IF EXISTS bench_wide;
            CREATE TABLE bench_wide (id int PRIMARY KEY, counter int NOT NULL, doc text NOT NULL);
            ALTER TABLE bench_wide ALTER COLUMN doc SET STORAGE EXTERNAL;
            INSERT INTO bench_wide
              SELECT g, 0, (SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, {md5s}) i WHERE g > 0)
              FROM generate_series(1, {self.rows}) g;
            VACUUM ANALYZE bench_wide;
        """)

    def reset(self, ctx):
        pass

    def generate(self, ctx):
        clients = 4
        done, _ = pgbench(ctx, pipelined(WIDE_SCRIPT.format(rows=self.rows)), "toast",
                          ["-M", "prepared", "-c", str(clients), "-j", "2",
                           "-t", str(self.updates // clients)], url=backlog_url(ctx))
        return done


class Snapshot:
    name = "snapshot"
    tables = ["bench_snap"]

    def __init__(self, quick):
        self.rows = 100_000 if quick else 250_000

    def describe(self):
        return f"initial snapshot of a {self.rows:,}-row table (~100-byte rows)"

    def prepare(self, ctx):
        psql_file(ctx.db_url, f"""
            DROP TABLE IF EXISTS bench_snap;
            CREATE TABLE bench_snap (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL,
                c timestamptz NOT NULL, note text);
            INSERT INTO bench_snap SELECT g, g % 1000, md5(g::text), now(), 'snapshot row ' || g
              FROM generate_series(1, {self.rows}) g;
            VACUUM ANALYZE bench_snap;
        """)


DRAIN_WORKLOADS = [Oltp, Bulk, Wide]
