"""LMCacheConnectorV1Impl: what vLLM's built-in `LMCacheConnectorV1` builds
and calls, so that `--kv-transfer-config '{"kv_connector":"LMCacheConnectorV1",
"kv_role":"kv_both"}'` runs lmcache with LMCache's configuration (its YAML
file through LMCACHE_CONFIG_FILE, its LMCACHE_* variables; see
lmcache.lmcache_compat).

The work is lmcache's vLLM connector (lmcache.integrations.vllm): the same
scheduler side and worker side. Only the calling convention differs: vLLM's
wrapper constructs this as (vllm_config, role, parent_connector), passes no
block list to update_state_after_alloc (the scheduler side takes block ids
from the step's scheduler output instead), expects a plain int from
get_num_new_matched_tokens, and forwards neither handle_preemptions nor
update_connector_output (both are done from bind_connector_metadata and
get_finished here).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from lmcache import lmcache_compat
from lmcache.config import Config
from lmcache.integrations.vllm.compat import KVConnectorRole
from lmcache.integrations.vllm.metadata import LMCacheConnectorMetadata

logger = logging.getLogger(__name__)

# Extra-config keys vLLM's wrapper itself reads, and LMCache's connector-only
# keys that have no meaning here (named once in a warning by translate()).
_WRAPPER_KEYS = {"use_native"}


def config_from_extra(extra: Optional[dict]) -> Config:
    """lmcache's config from the YAML file and environment (LMCache's names
    accepted) and kv_connector_extra_config, whose keys may be LMCache's too,
    bare or prefixed "lmcache." as LMCache accepts them."""
    given = {}
    for key, value in (extra or {}).items():
        if key in _WRAPPER_KEYS:
            continue
        given[key[len("lmcache."):] if key.startswith("lmcache.") else key] = value
    translated = lmcache_compat.translate(given, "kv_connector_extra_config")
    known = set(Config.keys())
    for key in [k for k in translated if k not in known]:
        logger.warning("ignoring kv_connector_extra_config key %r: neither an lmcache key nor an LMCache key "
                       "lmcache maps", key)
        del translated[key]
    return Config.load(overrides=translated)


class LMCacheConnectorV1Impl:
    def __init__(self, vllm_config: Any, role: Any, parent: Any) -> None:
        self._parent = parent
        self._config = config_from_extra(vllm_config.kv_transfer_config.kv_connector_extra_config)
        self._scheduler = self._worker = None
        if role == KVConnectorRole.SCHEDULER:
            from lmcache.integrations.vllm.scheduler_side import SchedulerSide

            vllm_config.kv_transfer_config.kv_load_failure_policy = self._config.vllm.load_failure_policy
            self._scheduler = SchedulerSide(vllm_config, self._config, sees_connector_output=False)
        else:
            from lmcache.integrations.vllm.worker_side import WorkerSide

            self._worker = WorkerSide(vllm_config, self._config)
        logger.info("lmcache: serving vLLM's LMCacheConnectorV1 (%s side)",
                    "scheduler" if self._scheduler else "worker")

    # ======================================================= scheduler side
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> int:
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)[0]

    def update_state_after_alloc(self, request: Any, num_external_tokens: int) -> None:
        self._scheduler.update_state_after_alloc(request, None, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> LMCacheConnectorMetadata:
        return self._scheduler.build_connector_meta(scheduler_output)

    def request_finished(self, request: Any, block_ids: list[int]) -> tuple[bool, Optional[dict[str, Any]]]:
        return self._scheduler.request_finished(request, block_ids)

    # ======================================================= worker side
    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self._worker.register_kv_caches(kv_caches)

    def bind_connector_metadata(self, meta: LMCacheConnectorMetadata) -> None:
        # vLLM calls handle_preemptions just before this, but its wrapper does
        # not forward it: blocks of preempted requests must not be reused
        # while an asynchronous store still reads them.
        if self._worker is not None:
            self._worker.handle_preemptions(meta)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self._worker.start_load_kv(self._metadata())

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._worker.wait_for_layer_load(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        return  # a chunk holds every layer: stored once the forward pass is done (wait_for_save)

    def wait_for_save(self) -> None:
        self._worker.wait_for_save(self._metadata())

    def get_finished(self, finished_req_ids: set[str]) -> tuple[Optional[set[str]], Optional[set[str]]]:
        return self._worker.get_finished(finished_req_ids), None

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker.take_load_error_blocks() if self._worker else set()

    def get_kv_events(self) -> list:
        return []  # lmcache does not publish KV events

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.close()
        if self._scheduler is not None:
            self._scheduler.close()

    def _metadata(self) -> LMCacheConnectorMetadata:
        meta = self._parent._get_connector_metadata()
        assert isinstance(meta, LMCacheConnectorMetadata)
        return meta
