"""LMCacheConnector: vLLM's v1 KV-connector API, split into a scheduler side
(bookkeeping, lookups over RPC) and a worker side (data movement), linked only
by LMCacheConnectorMetadata.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from lmcache.config import Config
from lmcache.integrations.vllm.compat import KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole
from lmcache.integrations.vllm.metadata import LMCacheConnectorMetadata

logger = logging.getLogger(__name__)


class LMCacheConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = dict(vllm_config.kv_transfer_config.kv_connector_extra_config or {})
        self._config = Config.load(overrides=extra)
        self._scheduler = self._worker = None
        self._stats_deltas = None  # vLLM's KV-connector stats (connector_stats), set up on first use
        if role == KVConnectorRole.SCHEDULER:
            from lmcache.integrations.vllm.scheduler_side import SchedulerSide

            # lmcache is a cache: a load that fails after it was promised must
            # become a recompute, not a failed request. vLLM reads this policy
            # right after it builds the scheduler-side connector.
            vllm_config.kv_transfer_config.kv_load_failure_policy = self._config.vllm.load_failure_policy
            self._scheduler = SchedulerSide(vllm_config, self._config)
        else:
            from lmcache.integrations.vllm.worker_side import WorkerSide

            self._worker = WorkerSide(vllm_config, self._config)

    # ======================================================= scheduler side
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[Optional[int], bool]:
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        self._scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        return self._scheduler.build_connector_meta(scheduler_output)

    def request_finished(self, request: Any, block_ids: list[int]) -> tuple[bool, Optional[dict[str, Any]]]:
        return self._scheduler.request_finished(request, block_ids)

    def update_connector_output(self, connector_output: Any) -> None:
        super().update_connector_output(connector_output)
        self._scheduler.update_connector_output(connector_output)

    def has_pending_block_frees(self) -> bool:
        return self._scheduler.has_pending_block_frees()

    # ======================================================= worker side
    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self._worker.register_kv_caches(kv_caches)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        # Begins the step's loads before the forward pass: all of them here, or
        # (layerwise_load) each layer in wait_for_layer_load, before its attention.
        meta = self._get_connector_metadata()
        assert isinstance(meta, LMCacheConnectorMetadata)
        self._worker.start_load_kv(meta)

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._worker.wait_for_layer_load(layer_name)

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config: dict[str, Any]) -> bool:
        # Layer-wise loads run between layers, which a full CUDA graph would skip.
        return Config.load(overrides=extra_config or {}).vllm.layerwise_load != "off"

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        return  # a chunk holds every layer: stored once the forward pass is done (wait_for_save)

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, LMCacheConnectorMetadata)
        self._worker.wait_for_save(meta)

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        if self._worker is not None:
            assert isinstance(kv_connector_metadata, LMCacheConnectorMetadata)
            self._worker.handle_preemptions(kv_connector_metadata)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[Optional[set[str]], Optional[set[str]]]:
        # finished_sending: requests whose asynchronous stores are done (their
        # blocks were held for them); loads are never asynchronous.
        return self._worker.get_finished(finished_req_ids), None

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker.take_load_error_blocks() if self._worker else set()

    # ======================================================= vLLM's stats and metrics
    def get_kv_connector_stats(self):
        from lmcache.integrations.vllm.connector_stats import Deltas

        if self._stats_deltas is None:
            self._stats_deltas = Deltas()
        if self._scheduler is not None:
            s = self._scheduler.stats
            return self._stats_deltas.take({"lookup_tokens": s["lookup_tokens"], "hit_tokens": s["hit_tokens"]})
        if self._worker is None or self._worker.rank != 0:
            return None  # every rank moves the same tokens: rank 0 speaks for them
        return self._stats_deltas.take(self._worker.stats)

    @classmethod
    def build_kv_connector_stats(cls, data: Optional[dict[str, Any]] = None):
        from lmcache.integrations.vllm.connector_stats import LMCacheConnectorStats

        return LMCacheConnectorStats(data=dict(data)) if data is not None else LMCacheConnectorStats()

    @classmethod
    def build_prom_metrics(cls, vllm_config: Any, metric_types: dict, labelnames: list[str],
                           per_engine_labelvalues: dict[int, list[object]]):
        from lmcache.integrations.vllm.connector_stats import LMCachePromMetrics

        return LMCachePromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.close()
        if self._scheduler is not None:
            self._scheduler.close()
