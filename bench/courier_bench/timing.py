"""Where a benchmark run's wall time goes: the elapsed time of each part,
and one run at a time on a machine (two runs would drop each other's
database, slots and sink data)."""

import fcntl
import os
import time


class Clock:
    """Wall time of the whole run and of each part, in the order run."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.parts = {}  # name -> seconds
        self._current = None

    def start(self, name):
        self._finish()
        self._current = (name, time.monotonic())

    def _finish(self):
        if self._current:
            name, t = self._current
            self.parts[name] = self.parts.get(name, 0.0) + time.monotonic() - t
            self._current = None

    def total(self):
        return time.monotonic() - self.t0

    def summary(self):
        """{"total_s": .., "parts_s": {name: seconds}} of what has run so far."""
        self._finish()
        return {"total_s": round(self.total(), 1),
                "parts_s": {k: round(v, 1) for k, v in self.parts.items()}}


def mmss(seconds):
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def describe(summary):
    """One line: total, then each part."""
    parts = ", ".join(f"{k} {mmss(v)}" for k, v in summary["parts_s"].items())
    return f"{mmss(summary['total_s'])} in all ({parts})"


class RunLock:
    """An exclusive lock on a file: a second runner on the same machine
    fails at once instead of clearing the first one's database and slots."""

    def __init__(self, path):
        self.path = path
        self.f = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.f = open(self.path, "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.seek(0)
            holder = self.f.read().strip() or "?"
            self.f.close()
            raise SystemExit(f"another benchmark run holds {self.path} (pid {holder}); "
                             "wait for it to finish") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(str(os.getpid()))
        self.f.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()
