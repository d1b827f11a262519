"""Latency histograms of a cache's operations, kept without any metrics
library so that the engine's hot path costs two clock reads and a few adds;
lmcache.metrics exports them for Prometheus."""

from __future__ import annotations

import bisect
import threading

# Upper bounds in seconds: from a host-memory lookup (tens of microseconds)
# to a disk or remote load of a long prompt (seconds).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(BUCKETS) + 1)  # the last one: above every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """Cumulative (upper bound, count) pairs ending with +Inf, the sum, and the count."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip(BUCKETS + (float("inf"),), counts):
            running += n
            cumulative.append((bound, running))
        return cumulative, total, running


class OperationLatencies:
    """One histogram per operation a cache times."""

    OPERATIONS = ("lookup", "load", "store")

    def __init__(self) -> None:
        self.by_operation = {op: LatencyHistogram() for op in self.OPERATIONS}

    def observe(self, operation: str, seconds: float) -> None:
        self.by_operation[operation].observe(seconds)
