"""Processes the runner starts: tracked so a failure or Ctrl-C ends exactly
those (by pid), plus peak-RSS readings."""

import os
import signal
import subprocess

_started = []


def start(args, **kw):
    """Popen, remembered for `end_all`."""
    p = subprocess.Popen(args, **kw)
    _started.append(p)
    return p


def end_all():
    """SIGTERM, then SIGKILL, every process started here that still runs."""
    for p in _started:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except ProcessLookupError:
                pass
    _started.clear()


def peak_rss_kb(pid):
    """VmHWM (the peak resident set so far) of a running process, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """User + system CPU time a running process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def ensure_gnu_time():
    """/usr/bin/time (Debian package `time`) reports a child's peak RSS."""
    if os.access("/usr/bin/time", os.X_OK):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", "time"], check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not os.access("/usr/bin/time", os.X_OK):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "time"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
