"""A peer for the drain figures (`--peer debezium`): Debezium's embedded
engine draining the same backlog as pg_recvlogical, from its own pgoutput
slot created with the others, through the same publication, into a consumer
that only counts records (bench/peer/, a small Java program).

It is built by the runner with Maven into .dev/bench-peer/ (jars from Maven
Central) the first time, and again whenever bench/peer/ changed. Its time is
from starting the JVM until the consumer has counted every change of the
backlog (`done` on its stdout); peak RSS (VmHWM) and CPU seconds are read
from /proc just then.
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse

from . import procs


class PeerError(RuntimeError):
    pass


def _newest_mtime(folder):
    newest = 0.0
    for root, _, files in os.walk(folder):
        for f in files:
            newest = max(newest, os.path.getmtime(os.path.join(root, f)))
    return newest


class Debezium:
    """Debezium's embedded engine (PostgreSQL connector, pgoutput)."""

    name = "debezium"
    #: the workloads it drains (TOAST's unchanged values it would pass on as
    #: placeholders, like pg_recvlogical: no figure of its own)
    workloads = ("oltp", "bulk")

    def __init__(self, repo):
        self.src = os.path.join(repo, "bench", "peer")
        self.out = os.path.join(repo, ".dev", "bench-peer")
        with open(os.path.join(self.src, "pom.xml")) as f:
            self.version = re.search(r"<debezium.version>([^<]+)<", f.read()).group(1)
        self.label = f"Debezium embedded {self.version} (peer)"
        try:
            out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
        except OSError:
            out = ""
        self.java = out.splitlines()[0] if out else "java: not found"

    def _jar(self):
        return os.path.join(self.out, "target", "debezium-drain-1.jar")

    def setup(self, log):
        """Builds the runner with Maven unless the jar is newer than its sources."""
        if self.java == "java: not found" or shutil.which("mvn") is None:
            raise PeerError("the Debezium peer needs java (17 or later) and mvn on PATH "
                            "(Debian: openjdk-17-jdk-headless maven)")
        jar = self._jar()
        if os.path.exists(jar) and os.path.getmtime(jar) >= _newest_mtime(self.src):
            return
        log(f"peer debezium: building bench/peer with Maven into {self.out} (the first time "
            f"it downloads Debezium {self.version} and its dependencies)")
        p = subprocess.run(["mvn", "-q", "-B", "-f", os.path.join(self.src, "pom.xml"), "package"],
                           capture_output=True, text=True)
        if p.returncode != 0 or not os.path.exists(jar):
            raise PeerError(f"mvn package failed ({p.returncode}): {(p.stdout + p.stderr)[-2000:]}")

    def config(self, ctx, workload, slot, publication, workdir):
        """The engine's configuration for one drain (password included)."""
        u = urllib.parse.urlsplit(ctx.db_url)
        return {
            "name": "courier-bench-peer",
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "plugin.name": "pgoutput",
            "slot.name": slot,
            "publication.name": publication,
            "publication.autocreate.mode": "disabled",
            "snapshot.mode": "no_data",
            "table.include.list": ",".join(f"public.{t}" for t in workload.tables),
            "database.hostname": u.hostname,
            "database.port": str(u.port),
            "database.user": urllib.parse.unquote(u.username or ""),
            "database.password": urllib.parse.unquote(u.password or ""),
            "database.dbname": u.path.lstrip("/"),
            # libpq's default, as pg_recvlogical and Courier connect
            "database.sslmode": "prefer",
            "topic.prefix": "courier_bench",
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": os.path.join(workdir, "offsets.dat"),
            "offset.flush.interval.ms": "1000",
            # the records as JSON strings, without the schema in each
            "converter.schemas.enable": "false",
        }

    def describe_config(self, ctx, workload_names):
        """The configuration as printed in the report (no password)."""
        class W:
            tables = ["<the workload's tables>"]
        cfg = self.config(ctx, W, "courier_bench_<workload>_peer_debezium",
                          "courier_bench_<workload>", "<work folder>")
        cfg["database.password"] = "***"
        return {
            "label": self.label,
            "workloads": list(workload_names),
            "runtime": f"{self.java}, JVM defaults (heap up to 1/4 of RAM)",
            "engine": "DebeziumEngine.create(Json.class): the default (async) engine, "
                      "records converted to JSON strings",
            "consumer": "a ChangeConsumer that counts records and the bytes of their values, "
                        "marks each processed and each batch finished",
            "properties": cfg,
        }

    def time_drain(self, ctx, workload, slot, publication, changes, run_id):
        """Seconds from starting the JVM until `changes` records were
        consumed, peak RSS (KiB) and CPU seconds then."""
        workdir = os.path.join(ctx.workdir, run_id)
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "debezium.properties")
        cfg = self.config(ctx, workload, slot, publication, workdir)
        cfg["bench.expected_records"] = str(changes)
        with open(path, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k}={v.replace(chr(92), chr(92) * 2)}\n")
        classpath = f"{self._jar()}:{os.path.join(self.out, 'lib', '*')}"
        log_path = os.path.join(workdir, "debezium.log")
        with open(log_path, "wb") as log:
            t0 = time.perf_counter()
            p = procs.start(["java", "-cp", classpath,
                             "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                             "dev.courier.bench.DebeziumDrain", path],
                            stdout=subprocess.PIPE, stderr=log, text=True)
            lines = _stamped_lines(p)
            try:
                first = None
                t1, line = _next_line(lines, timeout=900)  # "first", then "done RECORDS BYTES"
                if line.startswith("first"):
                    first = t1 - t0
                    t1, line = _next_line(lines, timeout=900)
                rss, cpu = procs.peak_rss_kb(p.pid), procs.cpu_seconds(p.pid)
                if not line.startswith("done "):
                    p.wait(timeout=60)
                    raise PeerError(f"debezium exited with {p.returncode} before the backlog's "
                                    f"end; log:\n{_tail(log_path)}")
                _, records, value_bytes = line.split()
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return {"seconds": t1 - t0, "first_record_s": first, "rss_kb": rss, "cpu_s": cpu,
                "records": int(records),
                "value_bytes": int(value_bytes)}


def _stamped_lines(p):
    """A queue of (perf_counter when read, line) of the process's stdout;
    the line is "" at its end."""
    q = queue.Queue()

    def read():
        for line in p.stdout:
            q.put((time.perf_counter(), line))
        q.put((time.perf_counter(), ""))

    threading.Thread(target=read, daemon=True).start()
    return q


def _next_line(lines, timeout):
    """(time, line) of the next line; line is "" at the end or after timeout."""
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return time.perf_counter(), ""


def _tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def by_name(name, repo):
    if name == "debezium":
        return Debezium(repo)
    raise SystemExit(f"unknown peer {name!r}: the runner knows debezium")
