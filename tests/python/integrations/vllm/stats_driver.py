"""lmcache's figures in vLLM's own metrics: a real vLLM CPU engine with
LMCacheConnector and vLLM's stats on; prints vLLM's vllm:lmcache_* counters
as one JSON line. Driven by test_vllm_stats.py.

    python stats_driver.py MODEL_DIR
"""

from __future__ import annotations

import json
import os
import sys
import uuid

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")


def main() -> None:
    import random

    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig
    from vllm.inputs import TokensPrompt

    from lmcache.demo.vllm_runs import shutdown

    rng = random.Random(1)
    doc = [rng.randrange(1, 512) for _ in range(1280)]  # 5 chunks of 256
    ktc = KVTransferConfig(kv_connector="LMCacheConnector", kv_connector_module_path="lmcache.integrations.vllm",
                           kv_role="kv_both", engine_id=f"stats-{uuid.uuid4()}",
                           kv_connector_extra_config={"chunk_size": 256, "l1_capacity_gb": 0.25})
    llm = LLM(model=sys.argv[1], skip_tokenizer_init=True, enforce_eager=True, gpu_memory_utilization=0.2,
              dtype="float32", enable_prefix_caching=False, max_model_len=2048, seed=0, kv_transfer_config=ktc,
              disable_log_stats=False)
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    for _ in range(2):
        llm.generate([TokensPrompt(prompt_token_ids=doc)], params, use_tqdm=False)
    counters = {}
    for metric in llm.get_metrics():
        if metric.name.startswith("vllm:lmcache_"):
            counters[metric.name] = getattr(metric, "value", None)
    shutdown(llm)
    print("RESULTS " + json.dumps(counters), flush=True)


if __name__ == "__main__":
    main()
