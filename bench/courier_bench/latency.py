"""Latency under a steady load: Courier streams while pgbench runs the OLTP
transaction at a fixed rate (-R); a probe records when each change becomes
visible in the sink, compared with its transaction's commit timestamp."""

import time

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
        done, tps = pgbench(ctx, OLTP_SCRIPT.format(accounts=workload.accounts), "latency",
                            ["-c", "16", "-j", "2", "-R", str(rate), "-T", str(seconds)],
                            # applications commit durably: WAL reaches the walsender at commit
                            env={"PGOPTIONS": "-c synchronous_commit=on"})
        end_lsn = pg.current_lsn(ctx.db_url)
        pg.wait_flushed(ctx.db_url, end_lsn)
        c.wait_confirmed(session, end_lsn, timeout=600)
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
    }
