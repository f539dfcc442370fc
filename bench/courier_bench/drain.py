"""Drain rate (DESIGN §6): slots created first, the workload builds a backlog
nobody reads, then pg_recvlogical and Courier each drain it, timed."""

import os
import subprocess
import time

from . import pg, procs, worker
from .courier import Courier

RECVLOGICAL = f"{pg.PG_BIN}/pg_recvlogical"


def publication(workload):
    return f"{pg.SLOT_PREFIX}{workload.name}"


def time_recvlogical(ctx, slot, pub, end_lsn):
    """Seconds, peak RSS (KiB) and CPU seconds of pg_recvlogical draining
    `slot` to end_lsn."""
    rss_file = os.path.join(ctx.workdir, "recvlogical.rss")
    args = ["/usr/bin/time", "-f", "%U %S %M", "-o", rss_file, RECVLOGICAL, "-d", ctx.db_url,
            "--start", "-S", slot, "-o", "proto_version=1", "-o", f"publication_names={pub}",
            "-f", "/dev/null", f"--endpos={end_lsn}", "--no-loop"]
    t0 = time.perf_counter()
    p = procs.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=900)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"pg_recvlogical failed ({p.returncode}): {err.strip()}")
    with open(rss_file) as f:
        user, system, rss = f.read().split()[-3:]
    return secs, int(rss), float(user) + float(system)


class InvalidRun(RuntimeError):
    """A run whose figures cannot be trusted; the runner repeats it."""


def time_courier(ctx, workload, sink, slot, session, end_lsn, run_id):
    """Seconds from starting Courier until its slot's confirmed_flush_lsn
    reaches end_lsn, its peak RSS (KiB) and CPU seconds."""
    c = ctx.courier(workload, sink, slot, run_id)
    t0 = c.start()
    perf = None
    if os.environ.get("COURIER_BENCH_PERF"):
        # A CPU profile of each timed drain, kept next to the run's log.
        perf = procs.start(["perf", "record", "-g", "-q", "-o",
                            os.path.join(c.workdir, "perf.data"), "-p", str(c.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = c.wait_confirmed(session, end_lsn, timeout=900)
    rss, cpu = c.peak_rss_kb(), c.cpu_seconds()
    c.stop()
    ctx.last_slot_positions = len(c.positions_seen)
    ctx.last_slot_stall_s = c.longest_stall_s
    if perf is not None:
        perf.wait(timeout=60)
    return t1 - t0, rss, cpu


def create_courier_slots(ctx, workload, sinks, slots, repeat):
    """Courier creates its publication and each sink's slot the way it wants
    them: one Courier per sink on the unchanged tables, stopped once it
    streams. The first runs alone (it may create the publication), the
    others together."""
    started = []
    try:
        for i, s in enumerate(sinks):
            run_id = f"{workload.name}_{s.name}_{repeat}"
            s.clear(ctx.workdir, run_id)
            c = ctx.courier(workload, s, slots[s.name], run_id)
            c.start()
            started.append(c)
            if i == 0:
                c.wait_streaming()
        for c in started:
            c.wait_streaming()
    finally:
        for c in started:
            c.stop()


def run_once(ctx, workload, sinks, repeat, peers=()):
    """One backlog, drained by pg_recvlogical, by Courier into each sink and
    by each peer."""
    url = ctx.db_url
    pub = publication(workload)
    recv_slot = f"{pg.SLOT_PREFIX}{workload.name}_recv"
    slots = {s.name: f"{pg.SLOT_PREFIX}{workload.name}_{s.name}" for s in sinks}
    peer_slots = {p.name: f"{pg.SLOT_PREFIX}{workload.name}_peer_{p.name}" for p in peers}
    all_slots = [recv_slot, *slots.values(), *peer_slots.values()]
    for slot in all_slots:
        pg.drop_slot(url, slot)  # left by an interrupted attempt
    t0 = time.perf_counter()
    workload.reset(ctx)
    create_courier_slots(ctx, workload, sinks, slots, repeat)
    for slot in [recv_slot, *peer_slots.values()]:
        pg.create_pgoutput_slot(url, slot)
    t1 = time.perf_counter()
    changes = workload.generate(ctx)
    end_lsn = pg.current_lsn(url)
    pg.wait_flushed(url, end_lsn)

    result = {"changes": changes, "end_lsn": end_lsn, "sinks": {}, "peers": {}, "workers": {},
              # where a run's wall time goes besides the timed drains
              "slots_s": round(t1 - t0, 2), "backlog_s": round(time.perf_counter() - t1, 2)}
    session = pg.Session(url)
    try:
        order = ["recv"] + [s.name for s in sinks] + [f"peer:{p.name}" for p in peers]
        if repeat % 2 == 1:
            order.reverse()  # alternate who reads the WAL first (page cache)
        for who in order:
            if who.startswith("peer:"):
                p = next(x for x in peers if f"peer:{x.name}" == who)
                r = p.time_drain(ctx, workload, peer_slots[p.name], pub, changes,
                                 f"{workload.name}_peer_{p.name}_{repeat}")
                result["peers"][p.name] = {**r, "rate": changes / r["seconds"]}
            elif who == "recv":
                secs, rss, cpu = time_recvlogical(ctx, recv_slot, pub, end_lsn)
                result["recv"] = {"seconds": secs, "rate": changes / secs, "rss_kb": rss,
                                  "cpu_s": cpu}
            else:
                s = next(x for x in sinks if x.name == who)
                run_id = f"{workload.name}_{s.name}_{repeat}"
                secs, rss, cpu = time_courier(ctx, workload, s, slots[who], session, end_lsn,
                                              run_id)
                result["sinks"][who] = {"seconds": secs, "rate": changes / secs, "rss_kb": rss,
                                        "cpu_s": cpu,
                                        "slot_positions_seen": ctx.last_slot_positions,
                                        "stall_s": ctx.last_slot_stall_s}
                # The server's own rate for the same documents, while
                # Courier's output (its mapping, its tables) still exists.
                native = s.native_rate(ctx, workload, changes)
                if native:
                    result["sinks"][who].update(native)
                redis = next((x for x in sinks if x.name == "redis"), None)
                if s.name == "kafka" and redis is not None:
                    # The topics hold the backlog now: Kafka workers drain
                    # them into Redis, compared with the direct Redis drain.
                    for n in (1, 2):
                        w_secs, w_rss = worker.time_workers(ctx, s, redis.port, run_id, n)
                        result["workers"][str(n)] = {"seconds": w_secs, "rate": changes / w_secs,
                                                     "rss_kb": w_rss}
                s.clear(ctx.workdir, run_id)
    finally:
        session.close()
        for slot in all_slots:
            pg.drop_slot(url, slot)
    recv = result["recv"]
    if changes >= 10_000 and recv["cpu_s"] < changes * 1e-6:
        # pg_recvlogical exits at --endpos; one that used no CPU received
        # nothing, so this run has no reference.
        raise InvalidRun(f"pg_recvlogical used {recv['cpu_s']} CPU s for {changes} changes")
    for r in result["peers"].values():
        r["ratio"] = r["rate"] / recv["rate"]
    direct = result["sinks"].get("redis")
    for r in result["workers"].values():
        r["ratio"] = r["rate"] / recv["rate"]
        if direct:
            r["direct_ratio"] = r["rate"] / direct["rate"]
    for name, r in result["sinks"].items():
        if changes >= 10_000 and r["cpu_s"] is not None and r["cpu_s"] < changes * 1e-6:
            # Courier's slot passed END without Courier doing the work: kept
            # and reported, never retried away (it may be a lost backlog).
            r["anomaly"] = (f"slot reached END after {r['seconds']:.1f}s with Courier using "
                            f"{r['cpu_s']} CPU s for {changes} changes")
        r["ratio"] = r["rate"] / result["recv"]["rate"]
        if r.get("native_rate"):
            r["native_ratio"] = r["rate"] / r["native_rate"]
    return result
