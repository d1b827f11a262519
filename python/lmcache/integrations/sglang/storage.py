"""LMCacheHiCacheStorage: SGLang's HiCache storage API on lmcache's tiers.

SGLang names every page by a hash chain of its token ids and hands the
backend those hashes and the page's slots in its host pool. lmcache keeps one
chunk per page (chunk_size = page size), keyed by the page hash mapped into
lmcache's namespace (model, KV shape, TP shard unless MLA, tenant), and moves
bytes with the native copy engine described by the host pool's own tensor:
the zero-copy batch_get_v1 / batch_set_v1 go straight between the host pool
and lmcache's tiers, one native call per batch. Stored payloads are
token-major, so a page stored from one host layout loads into any other.
"""

from __future__ import annotations

import logging
import time
from typing import Any, List, Optional

import torch
from sglang.srt.mem_cache.hicache_storage import HiCacheStorage, HiCacheStorageConfig

from lmcache.config import Config
from lmcache.errors import ConfigError
from lmcache.engine import CacheEngine

logger = logging.getLogger(__name__)

# lmcache's config inside SGLang's --hicache-storage-backend-extra-config:
# a sub-dict of its own, so the rest stays SGLang's whatever keys it grows.
CONFIG_KEY = "lmcache"

_MHA_LAYOUTS = {"layer_first": "sglang_layer_first", "page_first": "sglang_page_first",
                "page_first_direct": "sglang_page_first_direct"}
_MLA_LAYOUTS = {"layer_first": "sglang_mla_layer_first", "page_first": "sglang_mla_page_first",
                "page_first_direct": "sglang_mla_page_first_direct"}


def lmcache_config_of(extra_config: Optional[dict]) -> dict:
    """lmcache's keys from SGLang's extra-config: its "lmcache" sub-dict. An
    lmcache key given at the top level instead is refused, naming the fix
    (silently ignoring it would run with another config than intended)."""
    extra = dict(extra_config or {})
    sub = extra.pop(CONFIG_KEY, None) or {}
    if not isinstance(sub, dict):
        raise ConfigError(f"SGLang extra-config: {CONFIG_KEY!r} must be a mapping of lmcache config keys")
    misplaced = sorted(set(extra) & set(Config.keys()))
    if misplaced:
        raise ConfigError(f"SGLang extra-config: lmcache keys {', '.join(misplaced)} belong under "
                          f"{CONFIG_KEY!r}, e.g. {{\"{CONFIG_KEY}\": {{\"{misplaced[0]}\": ...}}}}")
    return sub


class LMCacheHiCacheStorage(HiCacheStorage):
    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None) -> None:
        self.config = Config.load(overrides=lmcache_config_of(storage_config.extra_config))
        self.storage_config = storage_config
        self.is_mla = bool(storage_config.is_mla_model)
        # MLA: every rank holds the same latent cache; only one writes (as SGLang's own backends do).
        self.is_writer = not self.is_mla or storage_config.tp_rank == 0
        self.engine: Optional[CacheEngine] = None
        self.mem_pool_host = None
        self._layout = ""
        self._metrics = _Metrics()

    # ------------------------------------------------------------ registration
    def register_mem_pool_host(self, mem_pool_host: Any) -> None:
        super().register_mem_pool_host(mem_pool_host)
        layouts = _MLA_LAYOUTS if self.is_mla else _MHA_LAYOUTS
        if mem_pool_host.layout not in layouts:
            raise NotImplementedError(f"lmcache does not support SGLang's host layout {mem_pool_host.layout!r}; "
                                      f"supported: {', '.join(layouts)}")
        page = mem_pool_host.page_size
        sc = self.storage_config
        config = self.config.replace(chunk_size=page)
        self.engine = CacheEngine(config, model_id=config.model_id or str(sc.model_name or ""),
                                  tp_rank=0 if self.is_mla else sc.tp_rank, tp_size=1 if self.is_mla else sc.tp_size)
        self._layout = layouts[mem_pool_host.layout]
        self.engine.register_kv_caches(mem_pool_host.kv_buffer, self._layout, block_size=page)
        self.page_size = page
        logger.info("lmcache: SGLang host pool %s (page %d) registered; disk tier %s", mem_pool_host.layout, page,
                    self.engine.disk_backend or "off")

    # ------------------------------------------------------------ zero-copy API
    def batch_exists(self, keys: List[str], extra_info: Any = None) -> int:
        return self._held_pages(self.engine.keys_from_ids(keys)) if keys else 0

    def batch_get_v1(self, keys: List[str], host_indices: torch.Tensor, extra_info: Any = None) -> List[bool]:
        if not keys:
            return []
        t0 = time.perf_counter()
        try:
            loaded = self.engine.load(self.engine.keys_from_ids(keys), slot_mapping=self._slots(keys, host_indices))
        except Exception as e:  # a failed load is a miss, never a crash in the cache controller
            logger.warning("lmcache batch_get_v1 failed: %s", e)
            loaded = 0
        pages = loaded // self.page_size
        self._metrics.prefetch(pages, pages * self._page_bytes(), time.perf_counter() - t0)
        return [i < pages for i in range(len(keys))]

    def batch_set_v1(self, keys: List[str], host_indices: torch.Tensor, extra_info: Any = None) -> List[bool]:
        if not keys:
            return []
        if not self.is_writer:
            return [True] * len(keys)
        t0 = time.perf_counter()
        try:
            chunk_keys = self.engine.keys_from_ids(keys)
            self.engine.store(chunk_keys, slot_mapping=self._slots(keys, host_indices))
            # Success means "the page is in lmcache now" (it may have been there already).
            held = self._held_pages(chunk_keys)
        except Exception as e:
            logger.warning("lmcache batch_set_v1 failed: %s", e)
            held = 0
        self._metrics.backup(len(keys), len(keys) * self._page_bytes(), time.perf_counter() - t0)
        return [i < held for i in range(len(keys))]

    # ------------------------------------------------------------ generic API (flat pages)
    def get(self, key: str, target_location: Any = None, target_sizes: Any = None) -> Optional[torch.Tensor]:
        return self.batch_get([key], [target_location])[0]

    def batch_get(self, keys: List[str], target_locations: Any = None, target_sizes: Any = None) -> List[Any]:
        out = []
        for key, target in zip(keys, target_locations or [None] * len(keys)):
            page = target if target is not None else self.mem_pool_host.get_dummy_flat_data_page()
            n = self.engine.load(self.engine.keys_from_ids([key]), self._flat_view(page),
                                 slot_mapping=torch.arange(self.page_size), layout=self._layout,
                                 block_size=self.page_size)
            out.append(page if n == self.page_size else None)
            if n != self.page_size:  # the prefix ends at the first miss
                out += [None] * (len(keys) - len(out))
                break
        return out

    def set(self, key: str, value: Any = None, target_location: Any = None, target_sizes: Any = None) -> bool:
        return self.batch_set([key], [value])

    def batch_set(self, keys: List[str], values: Any = None, target_locations: Any = None,
                  target_sizes: Any = None) -> bool:
        if not self.is_writer:
            return True
        chunk_keys = self.engine.keys_from_ids(keys)
        for i, value in zip(range(len(keys)), values):
            self.engine.store(chunk_keys[i:i + 1], self._flat_view(value), slot_mapping=torch.arange(self.page_size),
                              layout=self._layout, block_size=self.page_size)
        return self._held_pages(chunk_keys) == len(keys)

    def exists(self, key: str) -> bool:
        return self._held_pages(self.engine.keys_from_ids([key])) == 1

    def clear(self) -> None:
        if self.engine is not None:
            self.engine.clear()

    def get_stats(self):
        """SGLang's StorageMetrics since the last call (lmcache's own counters: lmcache_stats())."""
        return self._metrics.take()

    def lmcache_stats(self) -> dict:
        return self.engine.stats() if self.engine is not None else {}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    # ------------------------------------------------------------ helpers
    def _held_pages(self, chunk_keys) -> int:
        """Leading pages cached in any tier (one chunk per page)."""
        return self.engine.lookup(chunk_keys) // self.page_size

    def _slots(self, keys: List[str], host_indices: torch.Tensor):
        if host_indices.numel() != len(keys) * self.page_size:
            raise ValueError(f"{len(keys)} pages need {len(keys) * self.page_size} host indices, "
                             f"got {host_indices.numel()}")
        return host_indices.to(torch.int64)

    def _flat_view(self, page: torch.Tensor) -> torch.Tensor:
        """A flat page (get_data_page / get_dummy_flat_data_page) as a one-page pool of the same layout."""
        pool, P = self.mem_pool_host, self.page_size
        L = pool.layer_num
        if self.is_mla:
            C = pool.kv_cache_dim
            shape = {"sglang_mla_layer_first": (L, P, 1, C), "sglang_mla_page_first": (P, L, 1, C),
                     "sglang_mla_page_first_direct": (1, L, P, 1, C)}[self._layout]
        else:
            H, D = pool.head_num, pool.head_dim
            shape = {"sglang_layer_first": (2, L, P, H, D), "sglang_page_first": (2, P, L, H, D),
                     "sglang_page_first_direct": (2, 1, L, P, H, D)}[self._layout]
        return page.view(shape)

    def _page_bytes(self) -> int:
        pool = self.mem_pool_host
        return pool.size_per_token * self.page_size if hasattr(pool, "size_per_token") else 0


class _Metrics:
    """Pages and bandwidths per prefetch/backup batch, as SGLang's StorageMetrics wants them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.prefetch_pgs, self.backup_pgs, self.prefetch_bw, self.backup_bw = [], [], [], []

    def prefetch(self, pages: int, nbytes: int, seconds: float) -> None:
        self.prefetch_pgs.append(pages)
        self.prefetch_bw.append(nbytes / seconds / 1e9 if seconds > 0 else 0.0)

    def backup(self, pages: int, nbytes: int, seconds: float) -> None:
        self.backup_pgs.append(pages)
        self.backup_bw.append(nbytes / seconds / 1e9 if seconds > 0 else 0.0)

    def take(self):
        from sglang.srt.observability.metrics_collector import StorageMetrics

        m = StorageMetrics(prefetch_pgs=self.prefetch_pgs, backup_pgs=self.backup_pgs,
                           prefetch_bandwidth=self.prefetch_bw, backup_bandwidth=self.backup_bw)
        self._reset()
        return m
