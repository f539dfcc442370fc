"""Starting and stopping Courier for one measurement: its config, its slot,
its admin API, its peak RSS."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from . import procs



def free_port():
    """A loopback port nobody listens on now (for Courier's admin API)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class CourierError(RuntimeError):
    pass


class Courier:
    """One Courier process with one sink, on its own slot and state dir."""

    def __init__(self, ctx, run_id, slot, publication, tables, sink, sink_type,
                 sink_settings, snapshot="never", source_settings=None):
        self.ctx = ctx
        self.slot = slot
        self.sink = sink
        self.workdir = os.path.join(ctx.workdir, run_id)
        os.makedirs(self.workdir, exist_ok=True)
        self.api_port = free_port()
        self.config_path = os.path.join(self.workdir, "courier.toml")
        self.log_path = os.path.join(self.workdir, "courier.log")
        lines = [
            "[source]",
            f"url = {toml_value(ctx.db_url)}",
            f"slot = {toml_value(slot)}",
            f"publication = {toml_value(publication)}",
            f"tables = {toml_value(['public.' + t for t in tables])}",
            f"snapshot = {toml_value(snapshot)}",
            'status_interval = "20ms"',
            *(f"{k} = {toml_value(v)}" for k, v in (source_settings or {}).items()),
            "",
            "[api]",
            f'listen = "127.0.0.1:{self.api_port}"',
            "",
            "[state]",
            f"dir = {toml_value(os.path.join(self.workdir, 'state'))}",
            "",
            f"[sinks.{sink}]",
            f"type = {toml_value(sink_type)}",
        ]
        lines += [f"{k} = {toml_value(v)}" for k, v in sink_settings.items()]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None
        self.started_at = None

    def start(self):
        self.log = open(self.log_path, "ab")
        env = {**os.environ, "RUST_LOG": os.environ.get("COURIER_BENCH_LOG", "info")}
        self.started_at = time.perf_counter()
        self.proc = procs.start([self.ctx.binary, "run", "--config", self.config_path],
                                stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        return self.started_at

    def status(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/v1/status", timeout=2) as r:
                return json.load(r)
        except Exception:
            return None

    def _alive(self):
        if self.proc.poll() is not None:
            raise CourierError(f"courier exited with {self.proc.returncode}; log:\n{self.log_tail()}")

    def wait_streaming(self, timeout=60):
        """Until /healthz answers 200 (the slot exists and changes stream)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.05)
        raise CourierError(f"courier not streaming after {timeout}s; log:\n{self.log_tail()}")

    def wait_confirmed(self, session, lsn, timeout, poll=0.02):
        """Until the slot's confirmed_flush_lsn >= lsn; returns perf_counter then."""
        sql = (f"SELECT confirmed_flush_lsn >= '{lsn}'::pg_lsn, confirmed_flush_lsn "
               f"FROM pg_replication_slots WHERE slot_name = '{self.slot}'")
        #: distinct confirmed_flush_lsn values seen while waiting: how often
        #: the slot moved during the drain (1-2 means only at the end)
        self.positions_seen = set()
        #: the longest the slot stood still while the backlog drained: how
        #: much WAL PostgreSQL keeps because acknowledgements lag
        self.longest_stall_s = 0.0
        deadline = time.monotonic() + timeout
        last_move = time.monotonic()
        while time.monotonic() < deadline:
            done, position = (session.value(sql) or "f|").split("|")
            now = time.monotonic()
            if position not in self.positions_seen:
                self.positions_seen.add(position)
                self.longest_stall_s = max(self.longest_stall_s, now - last_move)
                last_move = now
            if done == "t":
                return time.perf_counter()
            self._alive()
            time.sleep(poll)
        raise CourierError(f"slot {self.slot} not at {lsn} after {timeout}s; log:\n{self.log_tail()}")

    def wait_events(self, n, timeout, poll=0.05):
        """Until the sink reports n applied events; returns perf_counter then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if s and s.get("sinks", {}).get(self.sink, {}).get("events", 0) >= n:
                return time.perf_counter()
            self._alive()
            time.sleep(poll)
        raise CourierError(f"sink {self.sink} did not apply {n} events in {timeout}s; "
                           f"log:\n{self.log_tail()}")

    def metric(self, name):
        """The sum of a counter's series in /metrics (0 when absent)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except Exception:
            return 0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def peak_rss_kb(self):
        return procs.peak_rss_kb(self.proc.pid)

    def cpu_seconds(self):
        return procs.cpu_seconds(self.proc.pid)

    def stop(self):
        """SIGTERM (drain, ack, exit 0); returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        if code != 0:
            raise CourierError(f"courier exited with {code} after SIGTERM; log:\n{self.log_tail()}")
        return code

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"
