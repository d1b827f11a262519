"""Helpers shared by the demo and the vLLM benchmark: build a vLLM CPU engine
with or without lmcache, and time requests one at a time (time to first token)."""

from __future__ import annotations

import gc
import os
import time
import uuid
from dataclasses import dataclass
from typing import Optional

# vLLM reserves an extra core when a KV connector is configured; on a 2-core
# machine that changes the worker's threads and halves its speed, so every
# configuration reserves the same one core.
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


@dataclass
class Timed:
    ttft_s: float
    cached_tokens: int
    prompt_tokens: int
    output_ids: list[int]


def make_llm(model: str, *, lmcache: Optional[dict], prefix_caching: bool = False, dtype: str = "auto",
             max_model_len: int = 16384, engine_id: Optional[str] = None, tensor_parallel_size: int = 1):
    from vllm import LLM
    from vllm.config import KVTransferConfig

    kw = {}
    if lmcache is not None:
        kw["kv_transfer_config"] = KVTransferConfig(
            kv_connector="LMCacheConnector",
            kv_connector_module_path="lmcache.integrations.vllm",
            kv_role="kv_both",
            engine_id=engine_id or f"lmcache-{uuid.uuid4()}",
            kv_connector_extra_config=lmcache,
        )
    return LLM(model=model, skip_tokenizer_init=True, enforce_eager=True, gpu_memory_utilization=0.2,
               dtype=dtype, enable_prefix_caching=prefix_caching, max_model_len=max_model_len, seed=0,
               max_num_batched_tokens=max_model_len, tensor_parallel_size=tensor_parallel_size, **kw)


def time_first_token(llm, prompt: list[int]) -> Timed:
    """Sends one request and returns when its first token is out: the time to first token."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    t0 = time.perf_counter()
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)],
                       SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)[0]
    dt = time.perf_counter() - t0
    return Timed(dt, out.num_cached_tokens or 0, len(prompt), list(out.outputs[0].token_ids))


def shutdown(llm) -> None:
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:
        pass
    del llm
    gc.collect()
