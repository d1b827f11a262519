"""Fault injection for tests: makes a share of loads fail in the storage layer
itself (a chunk corrupted in place or dropped), so tests prove that failures
become misses and recomputes, never wrong KV. Off unless fault_load_rate > 0.
"""

from __future__ import annotations

import random
import threading

from lmcache.engine import CacheEngine


class LoadFaultInjector:
    def __init__(self, engine: CacheEngine, rate: float, seed: int, max_faults: int = 0) -> None:
        self._engine = engine
        self._rate = rate
        self._max = max_faults
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected = 0

    def maybe_fail(self, request) -> None:
        """With probability `rate`, damages the last cached chunk of `request`
        (token ids or ChunkKeys):
        corrupts its payload (caught by the checksum) or drops it (gone since lookup)."""
        with self._lock:
            if self._max and self.injected >= self._max:
                return
            if self._rng.random() >= self._rate:
                return
            corrupt = self._rng.random() < 0.5
        keys = self._engine.chunk_keys(request)
        hit = self._engine.lookup(request) // self._engine.chunk_size
        if hit == 0:
            return
        victim = keys[hit - 1]
        if corrupt:
            self._engine._runtime.corrupt_chunk_for_testing(victim)
        else:
            self._engine._runtime.drop_chunk_for_testing(victim)
        self.injected += 1
