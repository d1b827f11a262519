"""Worker-side half of the connector: owns the CacheEngine (and so the host
tier) of this worker, moves KV between vLLM's paged cache and lmcache, and
answers the scheduler's lookups.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from lmcache import _core
from lmcache.config import Config
from lmcache.engine import CacheEngine
from lmcache.integrations.vllm import compat
from lmcache.integrations.vllm.device_staging import DeviceStaging
from lmcache.integrations.vllm.lookup_rpc import LookupServer, socket_name
from lmcache.integrations.vllm.metadata import LMCacheConnectorMetadata, RequestWork
from lmcache.keys import sglang_page_hashes

logger = logging.getLogger(__name__)


def layout_of(kv: Any) -> str:
    """The lmcache layout name of one of vLLM's per-layer KV tensors."""
    if kv.device.type == "cpu" and kv.dim() == 4:
        return "vllm_cpu"  # CPU attention: (blocks, heads, block_size, 2*head_size), kernel-arranged
    if kv.dim() == 5 and kv.shape[0] == 2:
        return "vllm_flash_attn"  # (2, blocks, block_size, heads, head_size)
    if kv.dim() == 5 and kv.shape[1] == 2:
        return "vllm_flashinfer"  # (blocks, 2, block_size, heads, head_size)
    if kv.dim() == 3:
        return "vllm_mla"  # (blocks, block_size, latent)
    raise NotImplementedError(f"lmcache does not know vLLM's KV layout of shape {tuple(kv.shape)} on {kv.device}")


class WorkerSide:
    def __init__(self, vllm_config: Any, config: Config) -> None:
        self.rank, tp_size = compat.tp_rank_and_size(vllm_config)
        self.engine = CacheEngine(config, model_id=compat.model_id(vllm_config), tp_rank=self.rank, tp_size=tp_size)
        self._engine_id = vllm_config.kv_transfer_config.engine_id
        self._block_size = vllm_config.cache_config.block_size
        self._server: LookupServer | None = None
        self._load_error_blocks: set[int] = set()
        self._faults = None
        self._staging: DeviceStaging | None = None
        self._store_stream = None  # GPU caches: the side stream stores copy on
        if config.fault_load_rate > 0:
            from lmcache.faults import LoadFaultInjector

            self._faults = LoadFaultInjector(self.engine, config.fault_load_rate, config.fault_seed)
        self.stats = {"load_requests": 0, "loaded_tokens": 0, "load_failed_tokens": 0, "store_requests": 0,
                      "stored_tokens": 0}

    def register_kv_caches(self, kv_caches: dict) -> None:
        layers = compat.ordered_layers(kv_caches)
        layout = layout_of(layers[0])
        self._layers, self._layout = layers, layout
        if layers[0].device.type == "cpu" or _core.device_backend() == "cuda":
            # The native copy engine, or on a GPU lmcache's CUDA kernels.
            self._block_size = self.engine.register_kv_caches(layers, layout).block_size
            if layers[0].device.type == "cuda":
                import torch

                # Stores run here, so the compute stream only records the event they wait on.
                self._store_stream = torch.cuda.Stream(layers[0].device)
        else:
            # A build without CUDA on a GPU engine: torch gathers on the device, one copy through pinned memory.
            self._block_size = layers[0].shape[DeviceStaging.block_size_dim(layout)]
            self._staging = DeviceStaging(self.engine, layers, layout, self._block_size)
        self._server = LookupServer(socket_name(self._engine_id, self.rank), self.lookup, self.all_stats,
                                    lambda include_disk: self.engine.clear(include_disk=include_disk))
        logger.info("lmcache: registered %d layers as %s; lookups served for rank %d; disk tier: %s", len(layers),
                    layout, self.rank, self.engine.disk_backend or "off")

    # ---------------------------------------------------------------- key scheme
    def _ids(self, token_ids) -> list[str] | None:
        """SGLang page names of the whole chunks, when the config shares keys with SGLang."""
        if self.engine.config.key_scheme != "sglang":
            return None
        return sglang_page_hashes(token_ids, self.engine.chunk_size)

    def lookup(self, token_ids) -> int:
        ids = self._ids(token_ids)
        if ids is None:
            return self.engine.lookup(token_ids)
        return self.engine.lookup_ids(ids) * self.engine.chunk_size

    # ---------------------------------------------------------------- loads
    def start_load_kv(self, meta: LMCacheConnectorMetadata) -> None:
        for work in meta.requests:
            if work.load_until > 0:
                self._load(work)

    def _load(self, work: RequestWork) -> None:
        self.stats["load_requests"] += 1
        slots = self._slots(work.block_ids, work.load_until)
        slots[: work.load_from] = -1  # vLLM already holds these
        if self._faults is not None:
            self._faults.maybe_fail(work.token_ids[: work.load_until])
        try:
            if self._staging is not None:
                loaded = self._staging.load(work.token_ids, work.block_ids, work.load_from, work.load_until,
                                            self._ids(work.token_ids))
            elif (ids := self._ids(work.token_ids)) is not None:
                loaded = self.engine.load_ids(ids, slot_mapping=slots)
            else:
                loaded = self.engine.load(work.token_ids, slot_mapping=slots)
        except Exception as e:  # a failed load is a miss, never a crash
            logger.warning("lmcache load for %s failed: %s", work.req_id, e)
            loaded = work.load_from
        self.stats["loaded_tokens"] += max(0, loaded - work.load_from)
        if loaded < work.load_until:
            # Promised but not delivered: name the blocks so vLLM recomputes them.
            first_bad = max(loaded, work.load_from) // self._block_size
            last = (work.load_until - 1) // self._block_size
            bad_blocks = work.block_ids[first_bad : last + 1]
            self._load_error_blocks.update(bad_blocks)
            if self._faults is not None:
                self._poison(bad_blocks)
            self.stats["load_failed_tokens"] += work.load_until - max(loaded, work.load_from)

    def _poison(self, block_ids: list[int]) -> None:
        """Fault-injection runs only: fills blocks whose load failed with NaN, so
        a test would see garbage if vLLM used them instead of recomputing."""
        block_dim = {"vllm_cpu": 0, "vllm_flashinfer": 0, "vllm_mla": 0, "vllm_flash_attn": 1}[self._layout]
        index = [slice(None)] * block_dim + [block_ids]
        for t in self._layers:
            t[tuple(index)] = float("nan")

    def take_load_error_blocks(self) -> set[int]:
        errors, self._load_error_blocks = self._load_error_blocks, set()
        return errors

    # ---------------------------------------------------------------- stores
    def wait_for_save(self, meta: LMCacheConnectorMetadata) -> None:
        stream = None
        if self._store_stream is not None and any(w.store_until > 0 for w in meta.requests):
            import torch

            self._store_stream.wait_stream(torch.cuda.current_stream(self._store_stream.device))
            stream = self._store_stream.cuda_stream
        for work in meta.requests:
            if work.store_until <= 0:
                continue
            self.stats["store_requests"] += 1
            try:
                if self._staging is not None:
                    stored = self._staging.store(work.token_ids, work.block_ids, work.store_until,
                                                 self._ids(work.token_ids[: work.store_until]))
                elif (ids := self._ids(work.token_ids[: work.store_until])) is not None:
                    stored = self.engine.store_ids(ids, slot_mapping=self._slots(work.block_ids, work.store_until),
                                                   stream=stream)
                else:
                    stored = self.engine.store(work.token_ids[: work.store_until],
                                               slot_mapping=self._slots(work.block_ids, work.store_until),
                                               stream=stream)
                self.stats["stored_tokens"] += stored
            except Exception as e:  # a failed store only costs a future hit
                logger.warning("lmcache store for %s failed: %s", work.req_id, e)

    # ---------------------------------------------------------------- helpers
    def _slots(self, block_ids: list[int], num_tokens: int) -> np.ndarray:
        bs = self._block_size
        blocks = np.asarray(block_ids[: (num_tokens + bs - 1) // bs], dtype=np.int64)
        return (blocks[:, None] * bs + np.arange(bs, dtype=np.int64)).reshape(-1)[:num_tokens].copy()

    def all_stats(self) -> dict:
        s = dict(self.engine.stats())
        s.update({"connector_" + k: v for k, v in self.stats.items()})
        return s

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.engine.close()
