"""ClickHouse for the runner: one statement over the HTTP interface, and
observing when rows land, for commit-to-sink latency.

The probe polls `SELECT max(_version)` of the `bench_history` table every
few milliseconds and remembers (time, max version). Each batch becomes one
INSERT per table, sent one after the other in stream order, so a table's
rows become readable in version order: a row counts as written at the first
poll that saw the table's greatest `_version` reach the row's own. Its
reference time is the row's `ts` column (`clock_timestamp()` of the INSERT,
the transaction's last statement), as for Redis: PostgreSQL keeps no
per-row commit time unless `track_commit_timestamp` is on. The poll interval
plus one query bounds the error (late, never early).
"""

import bisect
import http.client
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from . import pg

POLL_S = 0.005


class ClickHouseError(RuntimeError):
    pass


def query(port, sql, timeout=60):
    """Runs one statement; returns the response body (TabSeparated text)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=sql.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace").strip()
        raise ClickHouseError(f"ClickHouse {e.code}: {body[:500]}\nSQL: {sql[:200]}") from None


class ClickHouseProbe:
    #: what a latency is measured from, for the report
    reference = "clock_timestamp() of the INSERT, just before COMMIT"

    def __init__(self, port, database, table="bench_history"):
        self.port, self.database, self.table = port, database, table
        self.samples = []  # (unix µs, greatest _version seen so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, ctx):
        self.db_url = ctx.db_url
        self.min_id = int(pg.psql(ctx.db_url, f"SELECT coalesce(max(id), 0) FROM {self.table}"))
        self._thread.start()

    def _run(self):
        sql = f"SELECT max(_version) FROM {self.database}.{self.table}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        last = -1
        while not self._stop.is_set():
            try:
                conn.request("POST", "/", body=sql.encode())
                r = conn.getresponse()
                body = r.read()
                now = time.time_ns() // 1000
                if r.status == 200:
                    v = int(body.strip() or 0)
                    if v > last:
                        self.samples.append((now, v))
                        last = v
            except (OSError, http.client.HTTPException, ValueError):
                # the table does not exist yet, or the connection was closed
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            time.sleep(POLL_S)
        conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def latencies_us(self):
        """Row `ts` → first poll that saw the row's version, for every
        bench_history row inserted during the run, in µs."""
        versions = {}
        out = query(self.port, f"SELECT id, _version FROM {self.database}.{self.table} "
                               f"WHERE id > {self.min_id} FORMAT TabSeparated")
        for line in out.splitlines():
            i, v = line.split("\t")
            versions[int(i)] = int(v)
        seen = [v for _, v in self.samples]
        rows = pg.psql(self.db_url, f"SELECT id, (extract(epoch FROM ts) * 1000000)::bigint "
                                    f"FROM {self.table} WHERE id > {self.min_id}")
        lat = []
        for line in rows.splitlines():
            i, ts = line.split("|")
            v = versions.get(int(i))
            if v is None:
                continue
            k = bisect.bisect_left(seen, v)
            if k < len(seen):
                lat.append(self.samples[k][0] - int(ts))
        return lat


def pipe_copy(ctx, port, database, table, rows, settings=""):
    """The floor of any PostgreSQL -> ClickHouse copy on this machine: psql's
    COPY text of the table piped unchanged into one ClickHouse INSERT
    (FORMAT TabSeparated, every column as String, so nothing is converted),
    timed from start to the INSERT's answer. `settings` are further URL
    parameters of the INSERT (`&name=value...`). The body streams as a
    chunked POST (26.x answers a PUT with 501)."""
    cols = pg.psql(ctx.db_url, f"""
        SELECT string_agg(quote_ident(attname) || CASE WHEN attnotnull THEN ' String'
                                                      ELSE ' Nullable(String)' END, ', '
                          ORDER BY attnum)
          FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0
           AND NOT attisdropped""").strip()
    raw = f"{database}.raw_{table}"
    query(port, f"CREATE DATABASE IF NOT EXISTS {database}")
    query(port, f"DROP TABLE IF EXISTS {raw}")
    query(port, f"CREATE TABLE {raw} ({cols}) ENGINE = MergeTree ORDER BY tuple()")
    insert = urllib.parse.quote(f"INSERT INTO {raw} FORMAT TabSeparated")
    copy = "\\copy " + table + " TO STDOUT"
    script = (f"set -o pipefail; {shlex.quote(pg.PSQL)} -X -q -v ON_ERROR_STOP=1 "
              f"-d {shlex.quote(ctx.db_url)} -c {shlex.quote(copy)} | "
              f"curl -sS --fail -X POST -T - 'http://127.0.0.1:{port}/?query={insert}{settings}'")
    try:
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, stdout=subprocess.DEVNULL)
        secs = time.perf_counter() - t0
        got = int(query(port, f"SELECT count() FROM {raw}").strip())
    finally:
        query(port, f"DROP TABLE IF EXISTS {raw}")
    if got != rows:
        raise ClickHouseError(f"the piped copy landed {got} rows of {rows}")
    return {"native_seconds": secs, "native_rate": rows / secs,
            "native_what": "psql COPY text piped unchanged into one ClickHouse INSERT "
                           "(all columns String)"}
