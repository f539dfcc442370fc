"""Kafka workers draining a topic backlog into Redis: the topics the Kafka
sink just wrote for a drain's backlog, read by a new consumer group
(`start = "earliest"`) of one, then two, Courier workers into Redis, timed
until the group has applied and committed every partition's end. Compared
with Courier's direct-mode Redis drain of the same changes in the same run."""

import json
import os
import re
import subprocess
import time
import urllib.request

from . import procs
from .courier import CourierError, free_port, toml_value

#: a fresh Redis logical database for the workers (the redis sink's is 9)
REDIS_DB = 10


def topics(ctx, prefix):
    """The topics of `prefix` on the dev broker."""
    out = subprocess.run(["bash", os.path.join(ctx.repo, "dev", "kafka.sh"), "topics", "--list"],
                         capture_output=True, text=True, check=True).stdout
    return [t for t in out.split() if t.startswith(prefix + ".")]


def partitions(ctx, topic):
    out = subprocess.run(["bash", os.path.join(ctx.repo, "dev", "kafka.sh"), "topics", "--describe",
                          "--topic", topic], capture_output=True, text=True, check=True).stdout
    m = re.search(r"PartitionCount:\s*(\d+)", out)
    return int(m.group(1)) if m else 1


class Worker:
    def __init__(self, ctx, run_id, n, brokers, group, pattern, redis_port):
        self.workdir = os.path.join(ctx.workdir, f"{run_id}_worker{n}")
        os.makedirs(self.workdir, exist_ok=True)
        self.api_port = free_port()
        self.log_path = os.path.join(self.workdir, "courier.log")
        config = "\n".join([
            "[source]",
            'type = "kafka"',
            f"brokers = {toml_value(brokers)}",
            f"group = {toml_value(group)}",
            f"topic_pattern = {toml_value(pattern)}",
            'start = "earliest"',
            'commit_interval = "100ms"',
            "",
            "[api]",
            f'listen = "127.0.0.1:{self.api_port}"',
            "",
            "[state]",
            f"dir = {toml_value(os.path.join(self.workdir, 'state'))}",
            "",
            "[sinks.redis]",
            'type = "redis"',
            f'url = "redis://127.0.0.1:{redis_port}/{REDIS_DB}"',
        ]) + "\n"
        self.config_path = os.path.join(self.workdir, "courier.toml")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.ctx = ctx
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = procs.start([self.ctx.binary, "run", "--config", self.config_path],
                                stdout=subprocess.DEVNULL, stderr=self.log)

    def partitions(self):
        """(topic, partition) → (committed offset, end) as the worker reports them."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/v1/status",
                                        timeout=2) as r:
                s = json.load(r)
        except Exception:
            return {}
        parts = (s.get("source", {}).get("kafka") or {}).get("partitions", [])
        return {(p["topic"], p["partition"]): (p.get("committed_offset"), p.get("high_watermark"))
                for p in parts}

    def alive(self):
        if self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                tail = "".join(f.readlines()[-30:])
            raise CourierError(f"worker exited with {self.proc.returncode}; log:\n{tail}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def clear_redis(port):
    subprocess.run(["redis-cli", "-p", str(port), "-n", str(REDIS_DB), "FLUSHDB"],
                   check=False, stdout=subprocess.DEVNULL)


def time_workers(ctx, kafka_sink, redis_port, run_id, n):
    """Seconds for a new group of `n` workers to apply and commit the whole
    of the kafka sink's topics of `run_id`, and the workers' peak RSS (KiB)."""
    prefix = kafka_sink.prefix_of(run_id)
    names = topics(ctx, prefix)
    if not names:
        raise RuntimeError(f"no topics of {prefix} to read")
    expected = sum(partitions(ctx, t) for t in names)
    clear_redis(redis_port)
    group = f"{prefix}_workers{n}_{int(time.time())}"
    pattern = "^" + re.escape(prefix) + r"\..*"
    workers = [Worker(ctx, run_id, i, kafka_sink.brokers, group, pattern, redis_port)
               for i in range(n)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            for w in workers:
                w.alive()
            seen = {}
            for w in workers:
                seen.update(w.partitions())
            done = len(seen) == expected and all(
                c is not None and e is not None and c >= e for c, e in seen.values())
            if done:
                secs = time.perf_counter() - t0
                rss = max(procs.peak_rss_kb(w.proc.pid) for w in workers)
                return secs, rss
            time.sleep(0.05)
        raise CourierError(f"{n} worker(s) did not commit every partition of {prefix} in 900 s")
    finally:
        for w in workers:
            w.stop()
        clear_redis(redis_port)
