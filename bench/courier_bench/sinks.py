"""The sinks the runner measures. Adding a sink is one entry in SINKS: its
config settings, how to prepare its server, and (optionally) how to observe
when a change lands in it for the latency figures."""

import os
import re
import subprocess
import time

from . import clickhouse_probe, search_bulk
from .clickhouse_probe import ClickHouseProbe
from .latency_probe import FileProbe
from .redis_probe import RedisProbe


class SinkSpec:
    """A sink type as the runner drives it."""

    #: the `[sinks.NAME]` name and `type`
    name = ""
    type = ""

    def settings(self, workdir, run_id):
        """The `[sinks.NAME]` keys (without `type`) for one Courier run."""
        return {}

    def setup(self, ctx):
        """Start what the sink needs (once per bench run)."""

    def clear(self, workdir, run_id):
        """Remove what one Courier run wrote."""

    #: why latency is not measured, when latency_probe gives None
    no_probe_reason = "no latency probe for this sink yet"

    def latency_probe(self, workdir, run_id):
        """An object with start(ctx), stop() and latencies_us(), or None."""
        return None

    def native_rate(self, ctx, workload, changes):
        """The sink server's own ingest rate for the documents Courier wrote
        in a drain, measured right after it (before `clear`): a dict of
        `native_*` figures, or None."""
        return None

    def native_snapshot(self, ctx, table, rows):
        """The server's own ingest rate for a snapshot's table with nothing
        in between but a pipe: a dict of `native_*` figures, or None."""
        return None


class FileSink(SinkSpec):
    name = type = "file"

    def _path(self, workdir, run_id):
        return os.path.join(workdir, f"{run_id}.jsonl")

    def settings(self, workdir, run_id):
        return {"path": self._path(workdir, run_id)}

    def clear(self, workdir, run_id):
        try:
            os.remove(self._path(workdir, run_id))
        except FileNotFoundError:
            pass

    def latency_probe(self, workdir, run_id):
        return FileProbe(self._path(workdir, run_id))


class RedisSink(SinkSpec):
    name = type = "redis"
    port = 56379
    db = 9

    def settings(self, workdir, run_id):
        return {"url": f"redis://127.0.0.1:{self.port}/{self.db}"}

    def setup(self, ctx):
        subprocess.run([os.path.join(ctx.repo, "dev", "redis.sh"), "start"], check=True,
                       stdout=subprocess.DEVNULL)
        self.clear(None, None)

    def clear(self, workdir, run_id):
        subprocess.run(["redis-cli", "-p", str(self.port), "-n", str(self.db), "FLUSHDB"],
                       check=False, stdout=subprocess.DEVNULL)

    def latency_probe(self, workdir, run_id):
        return RedisProbe(self.port, self.db)


def _dev(ctx, script):
    subprocess.run([os.path.join(ctx.repo, "dev", script), "start"], check=True,
                   stdout=subprocess.DEVNULL)


class ClickHouseSink(SinkSpec):
    """The dev server (`dev/clickhouse.sh`); Courier writes into its own
    database, dropped between runs."""

    name = type = "clickhouse"
    port = int(os.environ.get("COURIER_CLICKHOUSE_HTTP_PORT", "58123"))
    database = "courier_bench"

    def settings(self, workdir, run_id):
        return {"url": f"http://127.0.0.1:{self.port}", "database": self.database}

    def setup(self, ctx):
        _dev(ctx, "clickhouse.sh")
        self.clear(None, None)

    def clear(self, workdir, run_id):
        clickhouse_probe.query(self.port, f"DROP DATABASE IF EXISTS {self.database}")

    def latency_probe(self, workdir, run_id):
        return ClickHouseProbe(self.port, self.database)

    def native_snapshot(self, ctx, table, rows):
        return clickhouse_probe.pipe_copy(ctx, self.port, self.database, table, rows)


class ClickHouse26Sink(ClickHouseSink):
    """ClickHouse 26.9, the engine of PyPI's chdb-core
    (`COURIER_CLICKHOUSE_INSTANCE=26 dev/clickhouse.sh`), beside 18.16."""

    name = "clickhouse26"
    type = "clickhouse"
    port = int(os.environ.get("COURIER_CLICKHOUSE_26_PORT", "58124"))

    def setup(self, ctx):
        subprocess.run([os.path.join(ctx.repo, "dev", "clickhouse.sh"), "start"], check=True,
                       stdout=subprocess.DEVNULL,
                       env={**os.environ, "COURIER_CLICKHOUSE_INSTANCE": "26"})
        self.clear(None, None)

    def native_snapshot(self, ctx, table, rows):
        # Stored when answered, as Courier's INSERTs (this engine defaults
        # to asynchronous inserts and runs no queue for them).
        return clickhouse_probe.pipe_copy(ctx, self.port, self.database, table, rows,
                                          settings="&async_insert=0")


class OpenSearchSink(SinkSpec):
    """The dev node (`dev/opensearch.sh`); Courier's aliases and indexes are
    named `courier_bench_<table>` (`_v1` behind the alias) and deleted
    between runs. Other indexes on the node are left alone."""

    name = type = "opensearch"
    host = "127.0.0.1"
    port = int(os.environ.get("COURIER_OPENSEARCH_PORT", "59200"))
    prefix = "courier_bench_"
    no_probe_reason = ("documents become searchable only at the index's refresh (every 1 s by "
                       "default), which would be most of the figure; not measured")

    @property
    def base(self):
        return f"http://{self.host}:{self.port}"

    def settings(self, workdir, run_id):
        return {"url": self.base, "index": self.prefix + "{table}",
                "dead_letter_index": self.prefix + "dead_letter"}

    def setup(self, ctx):
        _dev(ctx, "opensearch.sh")
        self.clear(None, None)

    def clear(self, workdir, run_id):
        search_bulk.delete_indexes(self.base, self.prefix)

    def native_rate(self, ctx, workload, changes):
        return search_bulk.raw_bulk(ctx, self.base, self.host, self.port, self.prefix, workload,
                                    changes)


class KafkaSink(SinkSpec):
    """The dev broker (`dev/kafka.sh`, 127.0.0.1:59092). Each Courier run
    writes topics of its own prefix (`courier_bench_<run>`, four partitions
    per table as the sink creates them, so two workers can share them),
    deleted again after the run."""

    name = type = "kafka"
    brokers = "127.0.0.1:" + os.environ.get("COURIER_KAFKA_PORT", "59092")
    exactly_once = False

    def prefix_of(self, run_id):
        return re.sub(r"[^a-z0-9_]", "_", f"courier_bench_{self.name}_{run_id}".lower())

    def settings(self, workdir, run_id):
        return {"brokers": self.brokers, "topic_prefix": self.prefix_of(run_id),
                "exactly_once": self.exactly_once, "partitions": 4}

    def setup(self, ctx):
        self.repo = ctx.repo
        _dev(ctx, "kafka.sh")

    def clear(self, workdir, run_id):
        if run_id is None:
            return
        subprocess.run(["bash", os.path.join(self.repo, "dev", "kafka.sh"), "topics", "--delete",
                        "--if-exists", "--topic", self.prefix_of(run_id) + r"\..*"],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class KafkaExactlyOnceSink(KafkaSink):
    """The Kafka sink with `exactly_once = true`: one Kafka transaction per
    group of batches, the covered position written inside it."""

    name = "kafka_eos"
    exactly_once = True


SINKS = [FileSink(), RedisSink(), ClickHouseSink(), ClickHouse26Sink(), OpenSearchSink(), KafkaSink(),
         KafkaExactlyOnceSink()]


def by_names(names):
    known = {s.name: s for s in SINKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown sink(s) {', '.join(unknown)}: the runner knows "
                         f"{', '.join(known)}")
    return [known[n] for n in names]


def supported_by_binary(ctx, sink):
    """Whether this Courier build knows the sink type (`courier check` says
    "not a sink type" otherwise)."""
    from .courier import toml_value
    path = os.path.join(ctx.workdir, f"check_{sink.name}.toml")
    with open(path, "w") as f:
        f.write(f"[source]\nurl = {toml_value(ctx.db_url)}\ntables = [\"public.x\"]\n"
                f"[api]\nlisten = \"off\"\n[sinks.{sink.name}]\ntype = \"{sink.type}\"\n")
        for k, v in sink.settings(ctx.workdir, "check").items():
            f.write(f"{k} = {toml_value(v)}\n")
    p = subprocess.run([ctx.binary, "check", "--config", path], capture_output=True, text=True)
    out = p.stdout + p.stderr
    return not re.search(r"not a sink type", out)
