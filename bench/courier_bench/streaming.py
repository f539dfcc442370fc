"""bench/streaming.sh: one large transaction committed while Courier runs with
source.streaming "on" and "off" (python3 -m courier_bench.streaming --help).

For each mode and run: a fresh database with one empty table, Courier (the
release build, the file sink, snapshot "never") streaming from it, then one
transaction of --rows inserts. With streaming on PostgreSQL sends the
transaction while it runs; the runner commits once Courier has received what
was streamed (its streamed-block counter stood still for a second), so the
figures start from the same point: the COMMIT's return.

- first: COMMIT returned -> the file sink's file grew (first change applied);
- last: COMMIT returned -> the slot's confirmed_flush_lsn reached the end of
  the WAL after the commit (every change applied and acknowledged);
- rss: Courier's peak RSS (VmHWM) over the run;
- blocks: streamed blocks Courier received (0 with streaming off).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from . import pg, procs
from .courier import Courier

DB = "courier_bench_stream"
ROW_SQL = "SELECT g, g % 1000, repeat('p', 200) || g, g * 0.01 FROM generate_series(1, {rows}) g"


class Context:
    def __init__(self, binary, db_url, workdir):
        self.binary, self.db_url, self.workdir = binary, db_url, workdir


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(prog="bench/streaming.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin-url", required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--work-mem", default=None,
                   help="logical_decoding_work_mem for the database (default: the server's)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--modes", default="on,off")
    p.add_argument("--binary", default=None, help="the courier binary (default: target/release/courier)")
    return p.parse_args()


def fresh_db(args):
    pg.psql(args.admin_url, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.psql(args.admin_url, f"CREATE DATABASE {DB}")
    if args.work_mem:
        pg.psql(args.admin_url, f"ALTER DATABASE {DB} SET logical_decoding_work_mem = '{args.work_mem}'")
    pg.psql(args.db_url, "CREATE TABLE items (id bigint PRIMARY KEY, val int NOT NULL, note text, "
                         "amount numeric(12,2))")


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def run_once(args, ctx, mode, run):
    slot = f"courier_bench_stream_{mode}"
    pg.drop_slot(args.admin_url, slot)
    fresh_db(args)
    out = os.path.join(ctx.workdir, f"{mode}-{run}.jsonl")
    courier = Courier(ctx, f"{mode}-{run}", slot, slot, ["items"], "out", "file", {"path": out},
                      source_settings={"streaming": mode})
    session = pg.Session(args.db_url)
    poll = pg.Session(args.db_url)
    try:
        courier.start()
        courier.wait_streaming()
        session.query("BEGIN")
        session.query("INSERT INTO items " + ROW_SQL.format(rows=args.rows))
        if mode == "on":
            blocks, still_since = -1, time.monotonic()
            while time.monotonic() - still_since < 1.0:
                now = courier.metric("courier_streamed_blocks_total")
                if now != blocks:
                    blocks, still_since = now, time.monotonic()
                time.sleep(0.05)
        before = file_size(out)
        session.query("COMMIT")
        committed = time.perf_counter()
        end = pg.current_lsn(args.db_url)
        while file_size(out) <= before:
            courier._alive()
            time.sleep(0.005)
        first = time.perf_counter() - committed
        last = courier.wait_confirmed(poll, end, timeout=1800) - committed
        blocks = courier.metric("courier_streamed_blocks_total")
        rss = courier.peak_rss_kb()
        courier.stop()
    finally:
        session.close()
        poll.close()
        procs.end_all()
        pg.drop_slot(args.admin_url, slot)
    return {"first": first, "last": last, "rss_kb": rss, "blocks": int(blocks)}


def main():
    args = parse_args()
    binary = args.binary or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "target", "release", "courier")
    workdir = tempfile.mkdtemp(prefix="courier-bench-stream-")
    ctx = Context(binary, args.db_url, workdir)
    version = pg.server_version(args.admin_url)
    work_mem = args.work_mem or pg.psql(args.admin_url, "SHOW logical_decoding_work_mem")
    results = {}
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is missing: build it with cargo build --release -p courier")
    try:
        for run in range(args.repeat):
            for mode in args.modes.split(","):
                log(f"streaming {mode}, run {run + 1}/{args.repeat}: {args.rows} rows in one transaction")
                r = run_once(args, ctx, mode, run)
                log(f"  first {r['first']:.2f}s, last {r['last']:.2f}s, "
                    f"peak RSS {r['rss_kb'] / 1024:.0f} MiB, {r['blocks']} streamed blocks")
                results.setdefault(mode, []).append(r)
    finally:
        pg.psql(args.admin_url, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nOne {args.rows}-row transaction, PostgreSQL {version}, logical_decoding_work_mem "
          f"{work_mem}, {os.path.relpath(binary)}, file sink; median of {args.repeat} (min-max)\n")
    print("| source.streaming | commit -> first change applied | commit -> last change applied "
          "| peak RSS | streamed blocks |")
    print("| --- | --- | --- | --- | --- |")
    for mode, rs in results.items():
        def cell(key, fmt):
            xs = [r[key] for r in rs]
            med = fmt(statistics.median(xs))
            return med if len(xs) == 1 else f"{med} ({fmt(min(xs))}-{fmt(max(xs))})"
        print(f"| {mode} | {cell('first', lambda x: f'{x:.2f} s')} | {cell('last', lambda x: f'{x:.2f} s')} "
              f"| {cell('rss_kb', lambda x: f'{x / 1024:.0f} MiB')} | {cell('blocks', lambda x: f'{x:.0f}')} |")


if __name__ == "__main__":
    main()
