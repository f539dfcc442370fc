"""Latency under a steady load: Courier streams while pgbench runs the OLTP
transaction at a fixed rate (-R); a probe records when each change becomes
visible in the sink, compared with its transaction's commit timestamp.
Beside the load, a reader waits on its own position again and again through
the wait API (`GET /v1/wait`), as an application reading its writes would:
its answers' `wakeup_ms` (from the acknowledgement that reached the position
to the answer) is the wait API's overhead; Courier's own commit → visible
quantiles come from `/v1/status` (`window`, within 10%)."""

import json
import threading
import time
import urllib.error
import urllib.request

from . import pg, stats
from .workloads import OLTP_SCRIPT, pgbench


def run_once(ctx, workload, sink, rate, seconds, repeat):
    slot = f"{pg.SLOT_PREFIX}latency_{sink.name}"
    run_id = f"latency_{sink.name}_{rate}_{repeat}"
    sink.clear(ctx.workdir, run_id)
    probe = sink.latency_probe(ctx.workdir, run_id)
    c = ctx.courier(workload, sink, slot, run_id)
    session = pg.Session(ctx.db_url)
    probe_started = probe_stopped = False
    try:
        c.start()
        c.wait_streaming()
        probe.start(ctx)
        probe_started = True
        waiter = Waiter(ctx.db_url, c.api_port, sink.name)
        waiter.start()
        done, tps = pgbench(ctx, OLTP_SCRIPT.format(accounts=workload.accounts), "latency",
                            ["-c", "16", "-j", "2", "-R", str(rate), "-T", str(seconds)],
                            # applications commit durably: WAL reaches the walsender at commit
                            env={"PGOPTIONS": "-c synchronous_commit=on"})
        end_lsn = pg.current_lsn(ctx.db_url)
        pg.wait_flushed(ctx.db_url, end_lsn)
        c.wait_confirmed(session, end_lsn, timeout=600)
        waiter.stop()
        window = (c.status() or {}).get("sinks", {}).get(sink.name, {}).get("window", {})
        time.sleep(0.05)
        probe_stopped = True
        probe.stop()
        rss = c.peak_rss_kb()
        c.stop()
        lat = sorted(probe.latencies_us())
    finally:
        if not probe_stopped and probe_started:
            probe.stop()
        session.close()
        if c.proc is not None and c.proc.poll() is None:
            c.proc.kill()
        pg.drop_slot(ctx.db_url, slot)
    sink.clear(ctx.workdir, run_id)
    ms = lambda us: None if us is None else us / 1000.0
    return {
        "target_tps": rate, "achieved_tps": tps, "transactions": done, "changes": len(lat),
        "p50_ms": ms(stats.percentile(lat, 50)), "p95_ms": ms(stats.percentile(lat, 95)),
        "p99_ms": ms(stats.percentile(lat, 99)), "max_ms": ms(lat[-1] if lat else None),
        "rss_kb": rss, "measured_from": probe.reference,
        "visible_p50_ms": window.get("visible_p50_ms"), "visible_p95_ms": window.get("visible_p95_ms"),
        "visible_p99_ms": window.get("visible_p99_ms"),
        "waits": len(waiter.wakeups_ms), "timeouts": waiter.timeouts,
        "wakeup_p50_ms": stats.percentile(sorted(waiter.wakeups_ms), 50),
        "wakeup_p99_ms": stats.percentile(sorted(waiter.wakeups_ms), 99),
    }


class Waiter:
    """Takes the insert position, waits on it through the wait API, repeats."""

    def __init__(self, db_url, api_port, sink):
        self.url = f"http://127.0.0.1:{api_port}/v1/wait?sinks={sink}&timeout=5s&lsn="
        self.session = pg.Session(db_url)
        self.wakeups_ms = []
        self.timeouts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            lsn = self.session.value("SELECT pg_current_wal_insert_lsn()")
            try:
                with urllib.request.urlopen(self.url + lsn, timeout=10) as r:
                    answer = json.load(r)
                if answer.get("wakeup_ms") is not None:
                    self.wakeups_ms.append(answer["wakeup_ms"])
            except urllib.error.HTTPError as e:
                if e.code != 504:
                    raise
                self.timeouts += 1
            time.sleep(0.005)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.session.close()
