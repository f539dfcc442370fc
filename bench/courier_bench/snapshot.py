"""Snapshot rate: Courier's initial snapshot of a table into a sink, against
`psql \\copy (SELECT * FROM t) TO /dev/null` of the same table."""

import statistics
import subprocess
import time

from . import pg


#: copies timed per run; the reference is their median (one copy takes
#: well under a second, so a single one would be noisy)
COPIES = 3


def time_psql_copy(ctx, table):
    t0 = time.perf_counter()
    subprocess.run([pg.PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.db_url, "-c",
                    f"\\copy (SELECT * FROM {table}) TO /dev/null"], check=True)
    return time.perf_counter() - t0


def run_once(ctx, workload, sinks, repeat):
    rows = workload.rows
    secs = statistics.median(time_psql_copy(ctx, workload.tables[0]) for _ in range(COPIES))
    result = {"changes": rows, "recv": {"seconds": secs, "rate": rows / secs, "rss_kb": None,
                                 "cpu_s": None},
              "sinks": {}}
    for s in sinks:
        slot = f"{pg.SLOT_PREFIX}snapshot_{s.name}"
        run_id = f"snapshot_{s.name}_{repeat}"
        s.clear(ctx.workdir, run_id)
        c = ctx.courier(workload, s, slot, run_id, snapshot="initial")
        try:
            t0 = c.start()
            t1 = c.wait_events(rows, timeout=900)
            rss, cpu = c.peak_rss_kb(), c.cpu_seconds()
            c.stop()
        finally:
            pg.drop_slot(ctx.db_url, slot)
            s.clear(ctx.workdir, run_id)
        rate = rows / (t1 - t0)
        result["sinks"][s.name] = {"seconds": t1 - t0, "rate": rate, "rss_kb": rss, "cpu_s": cpu,
                                   "ratio": rate / result["recv"]["rate"]}
        native = s.native_snapshot(ctx, workload.tables[0], rows)
        if native:
            native["native_ratio"] = rate / native["native_rate"]
            native["native_ref_ratio"] = native["native_rate"] / result["recv"]["rate"]
            result["sinks"][s.name].update(native)
    return result
