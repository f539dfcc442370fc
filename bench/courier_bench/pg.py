"""PostgreSQL helpers: one-off statements through psql, a long-lived psql
session for cheap polling, and the bench's replication slots."""

import subprocess

PG_BIN = "/usr/lib/postgresql/15/bin"
PSQL = f"{PG_BIN}/psql"
SLOT_PREFIX = "courier_bench_"


class PgError(RuntimeError):
    pass


def psql(url, sql, *, check=True):
    """Runs SQL (one or more statements) and returns psql's unaligned output."""
    p = subprocess.run(
        [PSQL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True, text=True,
    )
    if check and p.returncode != 0:
        raise PgError(f"psql failed ({p.returncode}): {p.stderr.strip()}\nSQL: {sql[:300]}")
    return p.stdout.strip()


def psql_file(url, script):
    """Runs a multi-statement script (stdin), stopping at the first error."""
    p = subprocess.run(
        [PSQL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url],
        input=script, capture_output=True, text=True,
    )
    if p.returncode != 0:
        raise PgError(f"psql script failed: {p.stderr.strip()}")
    return p.stdout.strip()


class Session:
    """A psql process kept open, so polling costs one query, not a connection."""

    _MARK = "__courier_bench_done__"

    def __init__(self, url):
        self.proc = subprocess.Popen(
            [PSQL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )

    def query(self, sql):
        """Returns the result's lines (unaligned, tuples only)."""
        self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self._MARK + "\n")
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if line == "":
                raise PgError(f"psql session ended: {self.proc.stderr.read().strip()}")
            line = line.rstrip("\n")
            if line == self._MARK:
                return lines
            lines.append(line)

    def value(self, sql):
        lines = self.query(sql)
        return lines[0] if lines else None

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


def current_lsn(url):
    """The end of the WAL written so far, committed or not: the insert
    position. (pg_current_wal_lsn() is the *write* position, which lags it
    while commits are asynchronous: an END taken from it can fall before the
    backlog's last commit, and a reader stopping there gets none of it.)"""
    return psql(url, "SELECT pg_current_wal_insert_lsn()")


def wait_flushed(url, lsn, timeout=30):
    """Until WAL through lsn is flushed (and so visible to walsenders); the
    bench database commits asynchronously to build backlogs quickly."""
    psql(url, f"""DO $$ BEGIN
        FOR i IN 1..{timeout * 100} LOOP
          EXIT WHEN pg_current_wal_flush_lsn() >= '{lsn}'::pg_lsn;
          PERFORM pg_sleep(0.01);
        END LOOP; END $$""")


def create_pgoutput_slot(url, slot):
    psql(url, f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")


def drop_slot(url, slot):
    """Drops the slot if it exists, ending whatever still holds it."""
    psql(url, f"""
        SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
         WHERE slot_name = '{slot}' AND active_pid IS NOT NULL;
        DO $$ BEGIN
          FOR i IN 1..50 LOOP
            EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_replication_slots
                                   WHERE slot_name = '{slot}' AND active);
            PERFORM pg_sleep(0.1);
          END LOOP; END $$;
        SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
         WHERE slot_name = '{slot}' AND NOT active;""", check=False)


def drop_bench_slots(url):
    """Drops every slot this runner creates (their names share one prefix)."""
    names = psql(url, f"SELECT slot_name FROM pg_replication_slots "
                      f"WHERE slot_name LIKE '{SLOT_PREFIX}%'", check=False)
    for name in filter(None, names.splitlines()):
        drop_slot(url, name)
    return [n for n in names.splitlines() if n]


def server_version(url):
    return psql(url, "SHOW server_version")
