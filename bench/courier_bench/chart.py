"""A hand-written SVG of a run: drain ratios (left) and latencies (right)."""

from xml.sax.saxutils import escape

W, ROW, TOP, LEFT = 460, 34, 56, 150
COLORS = {"p50": "#4c9a2a", "p95": "#e0a100", "p99": "#c0392b"}


def _text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(str(s))}</text>')


def _ratios(doc, x0):
    rows = [(f"{w['workload']} → {sink}", s["ratio"]) for w in doc["drain"]
            for sink, s in w["sinks"].items() if s["ratio"]]
    rows += [(f"{w['workload']}: {name} (peer)", p["ratio"]) for w in doc["drain"]
             for name, p in w.get("peers", {}).items() if p["ratio"]]
    top = max([1.2] + [r["max"] * 1.1 for _, r in rows])
    plot_w = W - LEFT - 20
    sx = lambda v: x0 + LEFT + v / top * plot_w
    h = TOP + ROW * max(1, len(rows)) + 40
    out = [_text(x0 + 10, 24, "Drain rate as a ratio of pg_recvlogical", 15, weight="bold"),
           _text(x0 + 10, 42, "(snapshot: of psql \\copy to /dev/null); median, bar = min–max", 11,
                 fill="#555")]
    for i, (label, r) in enumerate(rows):
        y = TOP + i * ROW
        out.append(_text(x0 + LEFT - 8, y + 17, label, 12, "end"))
        out.append(f'<rect x="{sx(0):.1f}" y="{y + 5}" width="{sx(r["median"]) - sx(0):.1f}" '
                   f'height="18" fill="#3b6ea5"/>')
        out.append(f'<line x1="{sx(r["min"]):.1f}" x2="{sx(r["max"]):.1f}" y1="{y + 14}" '
                   f'y2="{y + 14}" stroke="#111" stroke-width="2"/>')
        out.append(_text(sx(r["median"]) + 4, y + 4, f"{r['median']:.2f}", 11))
    bottom = TOP + ROW * max(1, len(rows))
    for v, label, dash, anchor, dx in ((1.0, "1.0", "", "start", 3),
                                       (0.9, "target 0.9", "4,3", "end", -3)):
        out.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{TOP - 2}" y2="{bottom}" '
                   f'stroke="#888" stroke-dasharray="{dash}"/>')
        out.append(_text(sx(v) + dx, bottom + 14, label, 10, anchor, fill="#555"))
    return out, h


def _latency(doc, x0):
    rows = [(f"{l['target_tps']:,} tx/s → {l['sink']}", l) for l in doc["latency"]]
    vals = [l[k]["median"] for _, l in rows for k in ("p50_ms", "p95_ms", "p99_ms") if l[k]]
    top = max([1.0] + [v * 1.15 for v in vals])
    plot_w = W - LEFT - 60
    sx = lambda v: x0 + LEFT + min(v, top) / top * plot_w
    out = [_text(x0 + 10, 24, "Commit → written to sink (ms)", 15, weight="bold"),
           _text(x0 + 10, 42, "medians of p50 / p95 / p99 over runs; max in text", 11, fill="#555")]
    y = TOP
    for label, l in rows:
        out.append(_text(x0 + LEFT - 8, y + 17, label, 12, "end"))
        if l["achieved_tps"]:
            out.append(_text(x0 + LEFT - 8, y + 31, f"achieved {l['achieved_tps']['median']:,.0f} tx/s",
                             10, "end", fill="#555"))
        for j, k in enumerate(("p50", "p95", "p99")):
            s = l[f"{k}_ms"]
            if not s:
                continue
            v = s["median"]
            out.append(f'<rect x="{sx(0):.1f}" y="{y + 3 + j * 11}" width="{sx(v) - sx(0):.1f}" '
                       f'height="10" fill="{COLORS[k]}"/>')
            out.append(_text(sx(v) + 3, y + 12 + j * 11, f"{k} {v:.1f}", 9))
        if l["max_ms"]:
            out.append(_text(x0 + W - 8, y + 22, f"max {l['max_ms']['median']:.0f}", 10, "end",
                             fill="#555"))
        y += ROW + 8
    return out, y + 30


def svg(doc):
    left, h1 = _ratios(doc, 0)
    right, h2 = _latency(doc, W) if doc["latency"] else ([], 0)
    width = W * (2 if right else 1)
    m = doc["machine"]
    h = max(h1, h2) + 24
    foot = (f"{m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB, PostgreSQL {m['postgresql']}, "
            f"Courier {m['courier_commit']}, {doc['started']}")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}" font-family="sans-serif">',
             f'<rect width="{width}" height="{h}" fill="white"/>', *left, *right,
             _text(10, h - 8, foot, 10, fill="#666"), "</svg>"]
    return "\n".join(parts) + "\n"
