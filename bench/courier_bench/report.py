"""The markdown table and the JSON document of a run."""

import json

from . import timing


def _k(v):
    return f"{v / 1000:,.1f}k"


def _spread(s, fmt):
    if s is None:
        return "n/a"
    if s["n"] == 1:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def _mb(kb):
    return "n/a" if kb is None else f"{kb / 1024:.0f}"


def markdown(doc):
    m = doc["machine"]
    out = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"PostgreSQL {m['postgresql']}, Linux {m['kernel']}; Courier {m['courier_commit']}; "
        f"{doc['repeat']} run(s) per figure, median (min–max); {doc['started']}; "
        f"1-minute load average {m.get('load_at_start', '?')} at start, "
        f"{m.get('load_at_end', '?')} at end (other work on the machine adds noise).",
        "",
        "| workload | sink | changes | reference | reference rate/s | Courier rate/s | ratio | Courier peak RSS MB | reference peak RSS MB | slot's longest stall s |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in doc["drain"]:
        ref = "psql \\copy" if w["workload"] == "snapshot" else "pg_recvlogical"
        for sink, s in w["sinks"].items():
            out.append(
                f"| {w['workload']} | {sink} | {w['changes']:,} | {ref} | "
                f"{_spread(w['recv_rate'], _k)} | {_spread(s['rate'], _k)} | "
                f"{_spread(s['ratio'], lambda v: f'{v:.2f}')} | "
                f"{_spread(s['rss_kb'], _mb)} | {_spread(w['recv_rss_kb'], _mb)} | "
                f"{_spread(s.get('stall_s'), lambda v: f'{v:.2f}')} |")
    native = [(w, sink, s) for w in doc["drain"] for sink, s in w["sinks"].items()
              if s.get("native_rate")]
    if native:
        out += [
            "",
            "The sink server's own ingest rate for the same rows, measured in the same run:",
            "",
            "| workload | sink | rows | server's own rate/s | Courier rate/s | Courier / server | how the server was fed |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for w, sink, s in native:
            out.append(
                f"| {w['workload']} | {sink} | {w['changes']:,} | {_spread(s['native_rate'], _k)} | "
                f"{_spread(s['rate'], _k)} | {_spread(s['native_ratio'], lambda v: f'{v:.2f}')} | "
                f"{s['native_what']} |")
    out += _peers(doc)
    workers = [(w, n, s) for w in doc["drain"] for n, s in w.get("workers", {}).items()]
    if workers:
        out += [
            "",
            "Kafka workers (`source.type = \"kafka\"`, a new group from the earliest offset) "
            "draining the Kafka sink's topics of the same backlog into Redis:",
            "",
            "| workload | workers | changes | rate/s | / pg_recvlogical | / direct Redis drain | peak RSS MB (largest worker) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        f2 = lambda v: f"{v:.2f}"
        for w, n, s in workers:
            out.append(
                f"| {w['workload']} | {n} | {w['changes']:,} | {_spread(s['rate'], _k)} | "
                f"{_spread(s['ratio'], f2)} | {_spread(s['direct_ratio'], f2)} | "
                f"{_spread(s['rss_kb'], _mb)} |")
    for w in doc["drain"]:
        for run in w.get("runs", []):
            for sink, r in run["sinks"].items():
                if r.get("anomaly"):
                    out.append(f"\n**Anomaly** ({w['workload']} → {sink}): {r['anomaly']}.")
    if doc.get("skipped"):
        out.append("")
    for w in doc.get("skipped", []):
        out.append(f"Not run: {w['sink']} ({w['workload']}): {w['reason']}.  ")
    if doc["latency"]:
        out += [
            "",
            "Commit → written to the sink (ms), under a steady OLTP load (2 changes per transaction):",
            "",
            "| target tx/s | achieved tx/s | sink | p50 | p95 | p99 | max | Courier peak RSS MB | measured from |",
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        f1 = lambda v: f"{v:.1f}"
        for l in doc["latency"]:
            out.append(
                f"| {l['target_tps']:,} | {_spread(l['achieved_tps'], lambda v: f'{v:,.0f}')} | "
                f"{l['sink']} | {_spread(l['p50_ms'], f1)} | {_spread(l['p95_ms'], f1)} | "
                f"{_spread(l['p99_ms'], f1)} | {_spread(l['max_ms'], f1)} | "
                f"{_spread(l['rss_kb'], _mb)} | {l.get('measured_from', '')} |")
    if any(l.get("visible_p99_ms") for l in doc["latency"]):
        out += [
            "",
            "The consistency window as Courier measures it (commit → visible to the store's readers, "
            "from `/v1/status`, within 10%), and the wait API's wake-up (from the acknowledgement "
            "that reached a waiter's position to its answer; one reader waiting on its own position "
            "again and again during the run), ms:",
            "",
            "| target tx/s | sink | visible p50 | p95 | p99 | wake-up p50 | wake-up p99 |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        f2 = lambda v: "–" if v is None else f"{v:.2f}"
        for l in doc["latency"]:
            out.append(
                f"| {l['target_tps']:,} | {l['sink']} | {_spread(l['visible_p50_ms'], f2)} | "
                f"{_spread(l['visible_p95_ms'], f2)} | {_spread(l['visible_p99_ms'], f2)} | "
                f"{_spread(l['wakeup_p50_ms'], f2)} | {_spread(l['wakeup_p99_ms'], f2)} |")
    if doc.get("elapsed"):
        out += ["", f"Run time: {timing.describe(doc['elapsed'])}."]
    out += ["", "Workloads:", ""]
    for name, text in doc["workloads"].items():
        out.append(f"- **{name}**: {text}")
    return "\n".join(out) + "\n"


def _peers(doc):
    """The peer table and each peer's configuration, when a peer ran."""
    rows = [(w, name, p) for w in doc["drain"] for name, p in w.get("peers", {}).items()]
    if not rows:
        return []
    out = [
        "",
        "Peer: another engine draining the same backlog from its own slot (pgoutput, same "
        "publication), timed from its process start to the last change of the backlog "
        "consumed; not Courier:",
        "",
        "| workload | peer | changes | pg_recvlogical rate/s | peer rate/s | peer / pg_recvlogical "
        "| peer's first record after s | peer peak RSS MB | peer CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w, name, p in rows:
        label = doc.get("peers", {}).get(name, {}).get("label", name)
        out.append(
            f"| {w['workload']} | {label} | {w['changes']:,} | {_spread(w['recv_rate'], _k)} | "
            f"{_spread(p['rate'], _k)} | {_spread(p['ratio'], lambda v: f'{v:.2f}')} | "
            f"{_spread(p.get('first_record_s'), lambda v: f'{v:.1f}')} | "
            f"{_spread(p['rss_kb'], _mb)} | {_spread(p['cpu_s'], lambda v: f'{v:.1f}')} |")
    for name, cfg in doc.get("peers", {}).items():
        out += ["", f"Configuration of {cfg['label']}: {cfg['runtime']}; {cfg['engine']}; "
                    f"consumer: {cfg['consumer']}; properties:", "", "```properties"]
        out += [f"{k}={v}" for k, v in cfg["properties"].items()]
        out.append("```")
    return out


def write(doc, md_path, json_path):
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")
    with open(md_path, "w") as f:
        f.write("# Courier benchmark: latest run\n\n")
        f.write("Produced by `bench/run.sh`; method in `bench/README.md`.\n\n")
        f.write(markdown(doc))
        f.write("\n![rates and latencies](latest.svg)\n")
