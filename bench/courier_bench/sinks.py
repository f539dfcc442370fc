"""The sinks the runner measures. Adding a sink is one entry in SINKS: its
config settings, how to prepare its server, and (optionally) how to observe
when a change lands in it for the latency figures."""

import os
import re
import subprocess
import time

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

    def latency_probe(self, workdir, run_id):
        """An object with start(ctx), stop() and latencies_us(), or None."""
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


SINKS = [FileSink(), RedisSink()]


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
