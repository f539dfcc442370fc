"""The search node for the runner: its HTTP API, removing the bench's
indexes, and the node's own `_bulk` indexing rate for the documents Courier
indexed in the same run (the reference issue 5's figure is a ratio to).

The raw reference: the same index actions a drain of the workload's backlog
makes (one `index` per change, with the row's primary key as `_id`), the
documents built by PostgreSQL (`json_strip_nulls(row_to_json(row))`, NULLs
left out as Courier leaves them out), sent as `_bulk` requests of
`BATCH_DOCS` documents from `CONNECTIONS` concurrent connections into fresh
indexes with the mapping and settings Courier gave its own. The requests
are built before the clock starts; the time is from the first request to
the last response. No external versions (Courier sends `external_gte`), no
refresh.
"""

import http.client
import json
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request

from . import pg

BATCH_DOCS = 1000
CONNECTIONS = 2


class SearchError(RuntimeError):
    pass


def request(base, method, path, body=None, ok=(200, 201)):
    """One request; returns (status, parsed JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        if e.code in ok:
            return e.code, json.loads(text or "null")
        raise SearchError(f"{method} {path}: {e.code} {text[:500]}") from None


def delete_indexes(base, prefix):
    """Deletes every index named `prefix*` (their aliases go with them),
    by name: the node may refuse wildcard deletes."""
    _, rows = request(base, "GET", f"/_cat/indices/{prefix}*?h=index&format=json")
    names = [r["index"] for r in rows or []]
    for i in range(0, len(names), 50):
        request(base, "DELETE", "/" + ",".join(names[i:i + 50]), ok=(200, 404))
    return names


def _action(id_sql, index):
    return (f"json_build_object('index', json_build_object('_index', '{index}', "
            f"'_id', ({id_sql})::text))::text")


def _doc(alias):
    return f"json_strip_nulls(row_to_json({alias}))::text"


def documents_sql(workload, changes, index_of):
    """A query whose rows are the NDJSON lines (action, newline, document)
    of the drain's index actions, in stream order; None when the runner has
    no equivalent for the workload."""
    if workload.name == "bulk":
        return (f"SELECT {_action('t.id', index_of('bench_bulk'))} || E'\\n' || {_doc('t')} "
                f"FROM bench_bulk t ORDER BY t.id")
    if workload.name == "oltp":
        # Each transaction updated the account its history row names, then
        # inserted that history row: the run's last changes/2 history rows.
        n = changes // 2
        return f"""
            WITH h AS (SELECT * FROM bench_history ORDER BY id DESC LIMIT {n})
            SELECT line FROM (
              SELECT h.id AS n, 0 AS k,
                     {_action('a.id', index_of('bench_accounts'))} || E'\\n' || {_doc('a')} AS line
                FROM h JOIN bench_accounts a ON a.id = h.aid
              UNION ALL
              SELECT h.id, 1, {_action('h.id', index_of('bench_history'))} || E'\\n' || {_doc('h')}
                FROM h) x
            ORDER BY n, k"""
    return None


def _bodies(ctx, sql):
    """The `_bulk` request bodies (BATCH_DOCS documents each) and the count."""
    p = subprocess.Popen([pg.PSQL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", ctx.db_url,
                          "-c", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bodies, chunk, docs = [], [], 0
    for line in p.stdout:
        chunk.append(line)
        if len(chunk) == 2 * BATCH_DOCS:
            bodies.append(b"".join(chunk))
            docs += BATCH_DOCS
            chunk = []
    if chunk:
        bodies.append(b"".join(chunk))
        docs += len(chunk) // 2
    err = p.stderr.read().decode(errors="replace")
    if p.wait() != 0:
        raise pg.PgError(f"documents query failed: {err.strip()}")
    return bodies, docs


def _send_all(host, port, bodies):
    """Sends the bodies from CONNECTIONS connections; returns seconds."""
    work = queue.Queue()
    for b in bodies:
        work.put(b)
    errors = []

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=300)
        try:
            while not errors:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                for attempt in range(20):
                    conn.request("POST", "/_bulk", body=body,
                                 headers={"Content-Type": "application/x-ndjson"})
                    r = conn.getresponse()
                    data = r.read()
                    if r.status != 429:
                        break
                    time.sleep(0.05 * (attempt + 1))
                if r.status != 200:
                    errors.append(f"_bulk answered {r.status}: {data[:300]!r}")
                    return
                resp = json.loads(data)
                if resp.get("errors"):
                    bad = next(i for i in resp["items"] if "error" in next(iter(i.values())))
                    errors.append(f"_bulk item failed: {json.dumps(bad)[:300]}")
                    return
        except (OSError, http.client.HTTPException, ValueError) as e:
            errors.append(f"_bulk request failed: {e}")
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise SearchError(errors[0])
    return secs


def raw_bulk(ctx, base, host, port, prefix, workload, changes):
    """The node's own `_bulk` rate for the drain's documents, measured now
    (while Courier's indexes still exist, to copy their mapping); None when
    the workload has no equivalent documents."""
    courier_alias = lambda table: f"{prefix}{table}"
    raw_index = lambda table: f"{prefix}raw_{table}"
    sql = documents_sql(workload, changes, raw_index)
    if sql is None:
        return None
    try:
        for table in workload.tables:
            _, mapping = request(base, "GET", f"/{courier_alias(table)}/_mapping")
            _, settings = request(base, "GET", f"/{courier_alias(table)}/_settings")
            (concrete, m), = mapping.items()
            index = settings[concrete]["settings"]["index"]
            keep = {k: index[k] for k in ("number_of_shards", "number_of_replicas", "gc_deletes")
                    if k in index}
            request(base, "PUT", f"/{raw_index(table)}",
                    {"settings": {"index": keep}, "mappings": m["mappings"]})
        bodies, docs = _bodies(ctx, sql)
        secs = _send_all(host, port, bodies)
    finally:
        delete_indexes(base, f"{prefix}raw_")
    return {"native_seconds": secs, "native_rate": docs / secs, "native_docs": docs,
            "native_what": f"_bulk of {BATCH_DOCS:,} documents per request, "
                           f"{CONNECTIONS} connections, fresh index with Courier's mapping"}
