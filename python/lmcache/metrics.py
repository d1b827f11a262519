"""Prometheus metrics of the caches a process owns, read at scrape time.

The native runtime keeps counters and gauges (CacheEngine.stats()); this
module names them per tier (host, disk, remote) the way an operator
dashboards them, and adds the latency histograms CacheEngine keeps. Nothing
is counted twice: every scrape reads the current values.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from lmcache.latency import OperationLatencies

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ("cache", "model")


class CacheCollector:
    """Collects the metrics of every cache `caches()` returns, as
    (name, CacheEngine) pairs; each series is labelled with the cache's name
    and model."""

    def __init__(self, caches: Callable[[], Iterable[tuple[str, object]]]) -> None:
        self._caches = caches

    def describe(self):
        return []  # collected on demand only (the set of caches may change)

    def collect(self):
        fams = _Families()
        for name, engine in self._caches():
            if engine.closed:
                continue
            labels = [name, engine.config.model_id]
            _add_engine(fams, labels, engine.stats())
            _add_latencies(fams, labels, engine.latencies)
        yield from fams.all()


def exposition(caches: Callable[[], Iterable[tuple[str, object]]]) -> bytes:
    """The text exposition of those caches' metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CacheCollector(caches))
    return generate_latest(registry)


class _Families:
    def __init__(self) -> None:
        tier = LABELS + ("tier",)
        c, g = CounterMetricFamily, GaugeMetricFamily
        self.lookups = c("lmcache_lookups", "Lookups (each asks about one request's tokens).", labels=LABELS)
        self.lookup_tokens = c("lmcache_lookup_tokens", "Tokens asked about by lookups.", labels=LABELS)
        self.hits = c("lmcache_hit_tokens", "Tokens lookups found, by the tier that had them (each tier is asked "
                      "what the tiers above it did not have).", labels=tier)
        self.misses = c("lmcache_miss_tokens", "Tokens a tier was asked for and did not have.", labels=tier)
        self.stored_tokens = c("lmcache_stored_tokens", "Tokens written into a tier.", labels=tier)
        self.stored_bytes = c("lmcache_stored_bytes", "Bytes written into a tier.", labels=tier)
        self.loaded_tokens = c("lmcache_loaded_tokens", "Tokens read out of a tier (host: into the engine; "
                               "disk and remote: into host memory).", labels=tier)
        self.loaded_bytes = c("lmcache_loaded_bytes", "Bytes read out of a tier.", labels=tier)
        self.dropped = c("lmcache_dropped_writes", "Chunks not written to a tier: no room, or a full queue.",
                         labels=tier)
        self.errors = c("lmcache_errors", "Failed or refused operations, by tier and kind.", labels=tier + ("kind",))
        self.evicted = c("lmcache_evicted_chunks", "Chunks evicted to make room.", labels=tier)
        self.queue = g("lmcache_write_queue_depth", "Chunks waiting to be written to a tier.", labels=tier)
        self.used = g("lmcache_used_bytes", "Bytes in use in a tier.", labels=tier)
        self.capacity = g("lmcache_capacity_bytes", "Size of a tier.", labels=tier)
        self.chunks = g("lmcache_chunks", "Chunks held in a tier.", labels=tier)
        self.latency = {op: HistogramMetricFamily(f"lmcache_{op}_seconds", f"Time of a {op} call.", labels=LABELS)
                        for op in OperationLatencies.OPERATIONS}

    def all(self):
        for value in vars(self).values():
            if isinstance(value, dict):
                yield from value.values()
            else:
                yield value


def _add_engine(f: _Families, labels: list, stats: dict) -> None:
    # A counter a cache does not report (a node-server client that has not
    # reached its server yet) reads as 0, never a failed scrape.
    s = defaultdict(int, stats)
    cs, rec = s["chunk_size"], s["record_bytes"]
    f.lookups.add_metric(labels, s["lookups"])
    f.lookup_tokens.add_metric(labels, s["lookup_tokens"])
    disk_hits = s.get("lookup_disk_hit_tokens", 0)
    host_hits = s["lookup_hit_tokens"] - disk_hits
    remote_hits = s.get("remote_lookup_hit_chunks", 0) * cs
    asked = s["lookup_tokens"]
    tiers = [("host", host_hits)]
    if s["disk_enabled"]:
        tiers.append(("disk", disk_hits))
    if s["remote_enabled"]:
        tiers.append(("remote", remote_hits))
    for tier, hits in tiers:
        f.hits.add_metric(labels + [tier], hits)
        f.misses.add_metric(labels + [tier], max(asked - hits, 0))
        asked = max(asked - hits, 0)  # what the next tier is asked for

    host = labels + ["host"]
    _add_flows(f, host, s["stored_chunks"] * cs, s["stored_chunks"] * rec, s["loaded_tokens"],
               s["loaded_chunks"] * rec, s["store_dropped_chunks"])
    f.errors.add_metric(host + ["corrupt"], s["l1_corrupt_chunks"])
    f.errors.add_metric(host + ["invalid_record"], s["load_errors"])
    f.evicted.add_metric(host, s["evicted_chunks"])
    f.used.add_metric(host, s["l1_used_bytes"])
    f.capacity.add_metric(host, s["l1_capacity_bytes"])
    f.chunks.add_metric(host, s["l1_chunks"])

    if s["disk_enabled"]:
        disk = labels + ["disk"]
        _add_flows(f, disk, s["disk_writes"] * cs, s["disk_write_bytes"], s["disk_reads"] * cs,
                   s["disk_read_bytes"], s["write_behind_dropped"])
        f.errors.add_metric(disk + ["read"], s["disk_read_errors"])
        f.errors.add_metric(disk + ["write"], s["disk_write_errors"] - s["disk_write_enospc"])
        f.errors.add_metric(disk + ["no_space"], s["disk_write_enospc"])
        f.errors.add_metric(disk + ["corrupt"], s["disk_removed_corrupt"])
        f.errors.add_metric(disk + ["prefetch_dropped"], s["prefetch_dropped"])
        f.evicted.add_metric(disk, s["disk_evictions"])
        f.queue.add_metric(disk, s["write_behind_queued"])
        f.used.add_metric(disk, s["disk_used_bytes"])
        f.capacity.add_metric(disk, s["disk_capacity_bytes"])
        f.chunks.add_metric(disk, s["disk_records"])

    if s["remote_enabled"]:
        remote = labels + ["remote"]
        _add_flows(f, remote, s["remote_puts"] * cs, s["remote_put_bytes"], s["remote_gets"] * cs,
                   s["remote_get_bytes"], s["remote_put_dropped"])
        for kind, key in (("lookup", "remote_exists_errors"), ("read", "remote_get_errors"),
                          ("write", "remote_put_errors"), ("bad_value", "remote_bad_values"),
                          ("not_ours", "remote_get_not_ours")):
            f.errors.add_metric(remote + [kind], s[key])
        f.queue.add_metric(remote, s["remote_put_queued"])


def _add_flows(f: _Families, labels: list, stored_tokens: int, stored_bytes: int, loaded_tokens: int,
               loaded_bytes: int, dropped: int) -> None:
    f.stored_tokens.add_metric(labels, stored_tokens)
    f.stored_bytes.add_metric(labels, stored_bytes)
    f.loaded_tokens.add_metric(labels, loaded_tokens)
    f.loaded_bytes.add_metric(labels, loaded_bytes)
    f.dropped.add_metric(labels, dropped)


def _add_latencies(f: _Families, labels: list, latencies: OperationLatencies) -> None:
    for op, hist in latencies.by_operation.items():
        buckets, total, _ = hist.snapshot()
        f.latency[op].add_metric(labels, [(_bound(b), n) for b, n in buckets], total)


def _bound(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(b)
