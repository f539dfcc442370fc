"""The machine a run happened on."""

import os
import platform
import subprocess

from . import pg


def describe(ctx):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem_gib = round(kb / 1024 / 1024, 1)
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ctx.repo, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ctx.repo, "status", "--porcelain", "--", "crates"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "memory_gib": mem_gib,
        "cpu": cpu,
        "kernel": platform.release(),
        "postgresql": pg.server_version(ctx.db_url),
        "courier_commit": commit + ("+local changes" if dirty else ""),
        "load_at_start": round(os.getloadavg()[0], 1),
    }
