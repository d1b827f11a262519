"""lmcache's figures in vLLM's own KV-connector stats: vLLM logs them with
its periodic stats ("KV Transfer metrics: lmcache hit rate=...") and exports
them as vllm:lmcache_* Prometheus counters beside its own metrics.

Each side reports what happened since its last report: the scheduler its
lookups (so the hit rate), worker rank 0 what it loaded and stored (every
rank moves the same tokens, each its own heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
)

# Counter name -> what it counts. The same names are the keys of the stats'
# data, summed across the scheduler and the workers of an interval.
COUNTERS = {
    "lookup_tokens": "Prompt tokens lmcache was asked about.",
    "hit_tokens": "Prompt tokens lmcache found cached.",
    "loaded_tokens": "Tokens lmcache loaded into vLLM's KV cache.",
    "load_failed_tokens": "Tokens lmcache promised but could not load (recomputed).",
    "stored_tokens": "Tokens lmcache stored.",
}


@dataclass
class LMCacheConnectorStats(KVConnectorStats):
    def __post_init__(self) -> None:
        if not self.data:
            self.reset()

    def reset(self) -> None:
        self.data = {name: 0 for name in COUNTERS}

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        for name, value in other.data.items():
            if name in COUNTERS:
                self.data[name] = self.data.get(name, 0) + int(value)
        return self

    def reduce(self) -> dict[str, int | float]:
        asked = self.data.get("lookup_tokens", 0)
        out: dict[str, int | float] = {f"lmcache {name.replace('_', ' ')}": self.data.get(name, 0)
                                       for name in COUNTERS}
        out["lmcache hit rate"] = round(self.data.get("hit_tokens", 0) / asked, 3) if asked else 0.0
        return out

    def is_empty(self) -> bool:
        return not any(self.data.get(name, 0) for name in COUNTERS)


class Deltas:
    """Turns running counters into what changed since the last call."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def take(self, current: dict[str, int]) -> LMCacheConnectorStats | None:
        delta = {name: current.get(name, 0) - self._last.get(name, 0) for name in COUNTERS}
        self._last = {name: current.get(name, 0) for name in COUNTERS}
        stats = LMCacheConnectorStats(data=delta)
        return None if stats.is_empty() else stats


class LMCachePromMetrics(KVConnectorPromMetrics):
    def __init__(self, vllm_config: Any, metric_types: dict, labelnames: list[str],
                 per_engine_labelvalues: dict[int, list[object]]) -> None:
        from vllm.v1.metrics.utils import create_metric_per_engine

        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._counters = {
            name: create_metric_per_engine(
                self._counter_cls(name=f"vllm:lmcache_{name}", documentation=doc, labelnames=labelnames),
                self.per_engine_labelvalues)
            for name, doc in COUNTERS.items()
        }

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        for name, value in transfer_stats_data.items():
            if name in self._counters and value > 0:
                self._counters[name][engine_idx].inc(value)
