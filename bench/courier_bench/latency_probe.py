"""Observing when changes land in a sink, for commit-to-sink latency.

FileProbe polls the file sink's size every few milliseconds and remembers
(time, size). A line counts as written at the first poll that saw the file
reach the line's end; its commit time is the envelope's `source.ts_us`
(PostgreSQL's commit timestamp). The poll interval bounds the error (late,
never early).
"""

import bisect
import os
import re
import threading
import time

POLL_S = 0.002
_TS_US = re.compile(rb'"ts_us":(\d+)')
_OP = re.compile(rb'"op":"([a-z])"')


class FileProbe:
    #: what a latency is measured from, for the report
    reference = "commit timestamp (source.ts_us)"

    def __init__(self, path):
        self.path = path
        self.samples = []  # (unix time in µs, size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, ctx):
        self._thread.start()

    def _run(self):
        last = -1
        while not self._stop.is_set():
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                size = 0
            if size != last:
                self.samples.append((time.time_ns() // 1000, size))
                last = size
            time.sleep(POLL_S)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def latencies_us(self):
        """Commit-to-written latency of every insert/update/delete line, in µs."""
        sizes = [s for _, s in self.samples]
        out = []
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                offset += len(line)
                op = _OP.search(line)
                if not op or op.group(1) not in (b"c", b"u", b"d"):
                    continue
                i = bisect.bisect_left(sizes, offset)
                if i == len(sizes):
                    continue
                commit = int(_TS_US.search(line).group(1))
                out.append(self.samples[i][0] - commit)
        return out
