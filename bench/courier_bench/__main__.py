"""bench/run.sh entry point: python3 -m courier_bench [--quick] [--sinks a,b] [--repeat N]."""

import argparse
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import (chart, drain, latency, machine, peer_debezium, pg, procs, report, snapshot, stats,
               timing)
from .courier import Courier, CourierError
from .sinks import SINKS, by_names, supported_by_binary
from .workloads import DRAIN_WORKLOADS, Oltp, Snapshot

DB = "courier_bench"
ADMIN_URL = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Context:
    def __init__(self, repo, binary, admin_url, db_url, workdir):
        self.repo, self.binary, self.admin_url = repo, binary, admin_url
        self.db_url, self.workdir = db_url, workdir

    def courier(self, workload, sink, slot, run_id, snapshot="never"):
        return Courier(self, run_id, slot, drain.publication(workload), workload.tables,
                       sink.name, sink.type, sink.settings(self.workdir, run_id), snapshot)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small workloads, one run each (~2 min)")
    p.add_argument("--sinks", default=",".join(s.name for s in SINKS),
                   help="comma-separated sinks to measure (default: all the runner knows)")
    p.add_argument("--repeat", type=int, help="runs per figure (default 3, --quick 1)")
    p.add_argument("--only", default="oltp,bulk,toast,snapshot,latency",
                   help="comma-separated parts to run (default: all)")
    p.add_argument("--out", default=None, help="results folder (default bench/results)")
    p.add_argument("--peer", choices=["debezium"], action="append", default=[],
                   help="also drain the OLTP and bulk backlogs with a peer (off by default; "
                        "debezium: its embedded engine, built with Maven the first time)")
    return p.parse_args()


def aggregate_drain(name, describe, runs):
    sinks = {}
    for sink in runs[0]["sinks"]:
        rs = [r["sinks"][sink] for r in runs]
        sinks[sink] = {k: stats.summary([x[k] for x in rs])
                       for k in ("rate", "ratio", "seconds", "rss_kb", "cpu_s")}
        if all("stall_s" in x for x in rs):
            sinks[sink]["stall_s"] = stats.summary([x["stall_s"] for x in rs])
        if any(x.get("native_rate") for x in rs):
            for k in ("native_rate", "native_ratio", "native_seconds", "native_ref_ratio"):
                if any(x.get(k) is not None for x in rs):
                    sinks[sink][k] = stats.summary([x.get(k) for x in rs])
            sinks[sink]["native_what"] = next(x["native_what"] for x in rs if x.get("native_what"))
    peers = {}
    for peer in runs[0].get("peers", {}):
        rs = [r["peers"][peer] for r in runs]
        peers[peer] = {k: stats.summary([x[k] for x in rs])
                       for k in ("rate", "ratio", "seconds", "first_record_s", "rss_kb",
                                 "cpu_s")}
    workers = {}
    for n in runs[0].get("workers", {}):
        rs = [r["workers"][n] for r in runs if n in r.get("workers", {})]
        workers[n] = {k: stats.summary([x.get(k) for x in rs])
                      for k in ("rate", "ratio", "direct_ratio", "seconds", "rss_kb")}
    return {"workload": name, "description": describe, "changes": runs[0]["changes"],
            "workers": workers,
            "recv_rate": stats.summary([r["recv"]["rate"] for r in runs]),
            "recv_seconds": stats.summary([r["recv"]["seconds"] for r in runs]),
            "recv_rss_kb": stats.summary([r["recv"]["rss_kb"] for r in runs]),
            "recv_cpu_s": stats.summary([r["recv"]["cpu_s"] for r in runs]),
            "sinks": sinks, "peers": peers, "runs": runs}


def attempt(what, fn, tries=3):
    """Runs one measurement, again after a failure (the server restarted, a
    run without a valid reference): shared machines are noisy. The last
    failure is raised."""
    for i in range(tries):
        try:
            return fn()
        except (drain.InvalidRun, pg.PgError, CourierError, RuntimeError) as e:
            if i == tries - 1:
                raise
            log(f"{what} failed, running it again: {str(e).splitlines()[0]}")
            procs.end_all()
            pg.drop_bench_slots(ADMIN_URL)
            subprocess.run([os.path.join(REPO, "dev", "pg.sh"), "start"],
                           stdout=subprocess.DEVNULL, check=False)
            time.sleep(2)


def main():
    args = parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    repeat = args.repeat or (1 if args.quick else 3)
    only = set(args.only.split(","))
    out_dir = args.out or os.path.join(repo, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    procs.ensure_gnu_time()

    global ADMIN_URL
    admin_url = ADMIN_URL = f"postgres://postgres:postgres@127.0.0.1:{os.environ.get('COURIER_PG_PORT', '55432')}/postgres"
    db_url = admin_url.rsplit("/", 1)[0] + "/" + DB
    workdir = tempfile.mkdtemp(prefix="courier-bench-")
    ctx = Context(repo, os.path.join(repo, "target", "release", "courier"), admin_url, db_url, workdir)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    sinks = []
    clock = timing.Clock()
    clock.start("setup")
    try:
        pg.drop_bench_slots(admin_url)
        pg.psql(admin_url, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        pg.psql(admin_url, f"CREATE DATABASE {DB}")
        # Only this database: generating the backlog fast is not what is measured.
        pg.psql(admin_url, f"ALTER DATABASE {DB} SET synchronous_commit = off")
        doc = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "quick": args.quick, "repeat": repeat, "machine": machine.describe(ctx),
               "drain": [], "latency": [], "skipped": [], "workloads": {}}

        for s in by_names([n for n in args.sinks.split(",") if n]):
            if supported_by_binary(ctx, s):
                try:
                    s.setup(ctx)
                except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
                    log(f"sink {s.name}: its server could not be prepared ({e}); skipped")
                    doc["skipped"].append({"workload": "all", "sink": s.name,
                                           "reason": f"server not available: {str(e).splitlines()[0]}"})
                    continue
                sinks.append(s)
            else:
                log(f"sink {s.name}: this Courier build does not know type {s.type!r}; skipped")
                doc["skipped"].append({"workload": "all", "sink": s.name,
                                       "reason": f"type {s.type!r} not in this build"})
        if not sinks:
            raise SystemExit("no sink to measure")
        peers = [peer_debezium.by_name(n, repo) for n in args.peer]
        for peer in peers:
            try:
                peer.setup(log)
            except peer_debezium.PeerError as e:
                raise SystemExit(f"peer {peer.name}: {e}") from None
        doc["peers"] = {peer.name: peer.describe_config(ctx, peer.workloads) for peer in peers}

        for cls in DRAIN_WORKLOADS:
            w = cls(args.quick)
            if w.name not in only:
                continue
            clock.start(w.name)
            log(f"{w.name}: preparing ({w.describe()})")
            w.prepare(ctx)
            doc["workloads"][w.name] = w.describe()
            runs = []
            for i in range(repeat):
                w_peers = [p for p in peers if w.name in p.workloads]
                r = attempt(f"{w.name} run {i + 1}",
                            lambda: drain.run_once(ctx, w, sinks, i, w_peers))
                log(f"{w.name} run {i + 1}/{repeat}: {r['changes']:,} changes (slots "
                    f"{r['slots_s']:.1f}s, backlog {r['backlog_s']:.1f}s); pg_recvlogical "
                    f"{r['recv']['seconds']:.2f}s ({r['recv']['cpu_s']:.2f} CPU s); " + "; ".join(
                        f"courier→{n} {x['seconds']:.2f}s (ratio {x['ratio']:.2f}, "
                        f"{x['rss_kb'] / 1024:.0f} MB, {x['cpu_s']:.2f} CPU s"
                        + (f"; node's own _bulk {x['native_seconds']:.2f}s, Courier at "
                           f"{x['native_ratio']:.2f} of it" if x.get("native_rate") else "") + ")"
                        for n, x in r["sinks"].items()) + "".join(
                        f"; {n} (peer) {x['seconds']:.2f}s (first record after "
                        f"{x['first_record_s'] or 0:.1f}s; ratio {x['ratio']:.2f}, "
                        f"{x['rss_kb'] / 1024:.0f} MB, {x['cpu_s']:.2f} CPU s)"
                        for n, x in r["peers"].items()))
                runs.append(r)
            doc["drain"].append(aggregate_drain(w.name, w.describe(), runs))

        if "snapshot" in only:
            clock.start("snapshot")
            w = Snapshot(args.quick)
            log(f"snapshot: preparing ({w.describe()})")
            w.prepare(ctx)
            doc["workloads"][w.name] = w.describe() + "; reference: psql \\copy (SELECT * FROM t) TO /dev/null"
            runs = []
            for i in range(repeat):
                r = attempt(f"snapshot run {i + 1}", lambda: snapshot.run_once(ctx, w, sinks, i))
                log(f"snapshot run {i + 1}/{repeat}: psql \\copy {r['recv']['seconds']:.2f}s; " +
                    "; ".join(f"courier→{n} {x['seconds']:.2f}s (ratio {x['ratio']:.2f})"
                              + (f"; psql | {n} pipe {x['native_seconds']:.2f}s (ratio "
                                 f"{x['native_ref_ratio']:.2f}), Courier at "
                                 f"{x['native_ratio']:.2f} of it" if x.get("native_rate") else "")
                              for n, x in r["sinks"].items()))
                runs.append(r)
            doc["drain"].append(aggregate_drain(w.name, w.describe(), runs))

        if "latency" in only:
            clock.start("latency")
            w = Oltp(args.quick)
            if "oltp" not in only:
                w.prepare(ctx)
            seconds = 3 if args.quick else 5
            rates = [2000, 10000]
            doc["workloads"]["latency"] = (
                f"the OLTP transaction at a fixed rate (pgbench -R, 16 clients, synchronous_commit=on) for {seconds}s "
                f"per run while Courier streams; rates {', '.join(map(str, rates))} tx/s")
            for s in sinks:
                if s.latency_probe(workdir, "probe-check") is None:
                    doc["skipped"].append({"workload": "latency", "sink": s.name,
                                           "reason": s.no_probe_reason})
                    continue
                for rate in rates:
                    runs = []
                    for i in range(repeat):
                        r = attempt(f"latency {rate} run {i + 1}",
                                    lambda: latency.run_once(ctx, w, s, rate, seconds, i))
                        log(f"latency {rate} tx/s → {s.name} run {i + 1}/{repeat}: achieved "
                            f"{r['achieved_tps']:.0f} tx/s, p50 {r['p50_ms']:.1f} ms, "
                            f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms")
                        runs.append(r)
                    agg = {"sink": s.name, "target_tps": rate, "runs": runs,
                           "measured_from": runs[0]["measured_from"]}
                    for k in ("achieved_tps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "rss_kb",
                              "visible_p50_ms", "visible_p95_ms", "visible_p99_ms",
                              "wakeup_p50_ms", "wakeup_p99_ms"):
                        agg[k] = stats.summary([r[k] for r in runs])
                    doc["latency"].append(agg)

        clock.start("report")
        doc["elapsed"] = clock.summary()
        doc["machine"]["load_at_end"] = round(os.getloadavg()[0], 1)
        doc["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        report.write(doc, os.path.join(out_dir, "latest.md"), os.path.join(out_dir, "latest.json"))
        with open(os.path.join(out_dir, "latest.svg"), "w") as f:
            f.write(chart.svg(doc))
        print(report.markdown(doc))
        log(f"results in {out_dir}/latest.{{md,json,svg}}")
        log(f"elapsed {timing.describe(clock.summary())}")
    finally:
        procs.end_all()
        for s in sinks:
            try:
                s.clear(workdir, "end")  # what a failed run left in the sink's server
            except Exception as e:
                log(f"sink {s.name}: clean-up failed: {e}")
        left = pg.drop_bench_slots(admin_url)
        if left:
            log(f"dropped slots {', '.join(left)}")
        pg.psql(admin_url, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", check=False)
        if os.environ.get("COURIER_BENCH_KEEP"):
            log(f"kept {workdir} (COURIER_BENCH_KEEP is set)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        with timing.RunLock(os.path.join(REPO, ".dev", "bench", "run.lock")):
            main()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); bench slots dropped")
        sys.exit(130)
