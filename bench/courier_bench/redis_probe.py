"""Observing when rows land in Redis, for commit-to-sink latency.

Keyspace notifications (`notify-keyspace-events` gains `Kh` for the run and
is restored afterwards) report every HSET on the inserted rows' keys; the
first one per key is when the row became readable. Its reference time is
the row's `ts` column (`clock_timestamp()` of the INSERT, the transaction's
last statement), read from PostgreSQL after the run: PostgreSQL keeps no
per-row commit time unless `track_commit_timestamp` is on, so this start
point is earlier than the commit by the commit itself (its WAL flush).
"""

import socket
import threading
import time

from . import pg


def _cmd(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Resp:
    """A minimal RESP2 reader over a socket."""

    def __init__(self, sock):
        self.f = sock.makefile("rb")

    def read(self):
        line = self.f.readline()
        if not line:
            raise EOFError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            raise RuntimeError(f"redis: {rest.decode(errors='replace')}")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected RESP reply {line!r}")


def _call(sock, resp, *args):
    sock.sendall(_cmd(*args))
    return resp.read()


class RedisProbe:
    #: what a latency is measured from, for the report
    reference = "clock_timestamp() of the INSERT, just before COMMIT"

    def __init__(self, port, db, table="bench_history"):
        self.port, self.db, self.table = port, db, table
        self.first_seen = {}  # key id (bytes) -> unix µs
        self._thread = None

    def start(self, ctx):
        self.db_url = ctx.db_url
        self.min_id = int(pg.psql(ctx.db_url, f"SELECT coalesce(max(id), 0) FROM {self.table}"))
        self.admin = socket.create_connection(("127.0.0.1", self.port))
        self.admin_resp = _Resp(self.admin)
        flags = _call(self.admin, self.admin_resp, "CONFIG", "GET", "notify-keyspace-events")[1]
        self.saved_flags = flags.decode()
        wanted = "".join(sorted(set(self.saved_flags) | set("Kh")))
        _call(self.admin, self.admin_resp, "CONFIG", "SET", "notify-keyspace-events", wanted)
        self.sub = socket.create_connection(("127.0.0.1", self.port))
        self.sub_resp = _Resp(self.sub)
        prefix = f"__keyspace@{self.db}__:public.{self.table}:"
        _call(self.sub, self.sub_resp, "PSUBSCRIBE", prefix + "*")
        self._cut = len(prefix)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                msg = self.sub_resp.read()
                now = time.time_ns() // 1000
                if isinstance(msg, list) and len(msg) == 4 and msg[3] == b"hset":
                    self.first_seen.setdefault(msg[2][self._cut:], now)
        except (EOFError, OSError, ValueError):
            return

    def stop(self):
        try:
            _call(self.admin, self.admin_resp, "CONFIG", "SET", "notify-keyspace-events",
                  self.saved_flags)
        finally:
            self.admin.close()
            try:
                self.sub.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sub.close()
            self._thread.join(timeout=5)

    def latencies_us(self):
        rows = pg.psql(self.db_url, f"SELECT id, (extract(epoch FROM ts) * 1000000)::bigint "
                                    f"FROM {self.table} WHERE id > {self.min_id}")
        out = []
        for line in rows.splitlines():
            key, ts = line.split("|")
            seen = self.first_seen.get(key.encode())
            if seen is not None:
                out.append(seen - int(ts))
        return out
