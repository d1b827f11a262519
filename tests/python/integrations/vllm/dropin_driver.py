"""vLLM's built-in LMCacheConnectorV1, configured exactly as vLLM's LMCache
example does (connector name only, LMCache's environment variables and YAML
file), served by this package. Prints one JSON line of results; driven by
test_vllm_dropin.py (vLLM spawns processes, so it runs as its own script).

    python dropin_driver.py MODEL_DIR WORK_DIR
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")


def prompt(seed: int, n: int, vocab: int = 512) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(1, vocab) for _ in range(n)]


def make_llm(model: str, kv_transfer_config, prefix_caching: bool):
    from vllm import LLM

    return LLM(model=model, skip_tokenizer_init=True, enforce_eager=True, gpu_memory_utilization=0.2,
               dtype="float32", enable_prefix_caching=prefix_caching, max_model_len=4096, seed=0,
               max_num_batched_tokens=4096, kv_transfer_config=kv_transfer_config)


def generate(llm, prompts: list[list[int]]) -> list[dict]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), use_tqdm=False)
    return [{"ids": list(o.outputs[0].token_ids), "cached": o.num_cached_tokens or 0} for o in outs]


def main() -> None:
    model, work = sys.argv[1], sys.argv[2]
    from lmcache.demo.vllm_runs import shutdown
    from lmcache.integrations.vllm import query_worker_stats
    from vllm.config import KVTransferConfig

    doc = prompt(1, 2304)                     # 9 chunks of 256
    shared = prompt(2, 1024)
    q1, q2 = shared + prompt(3, 700), shared + prompt(4, 900)
    prompts = [doc, q1, q2]
    res: dict = {}

    llm = make_llm(model, None, prefix_caching=False)
    res["baseline"] = generate(llm, prompts)
    shutdown(llm)

    # vLLM's LMCache example: environment variables ...
    os.environ["LMCACHE_CHUNK_SIZE"] = "256"
    os.environ["LMCACHE_LOCAL_CPU"] = "True"
    os.environ["LMCACHE_MAX_LOCAL_CPU_SIZE"] = "5.0"
    # ... and the YAML file of its disk-offload example.
    disk = os.path.join(work, "disk")
    path = os.path.join(work, "lmcache-config.yaml")
    with open(path, "w") as f:
        f.write(f"chunk_size: 256\nlocal_cpu: true\nmax_local_cpu_size: 5.0\nlocal_disk: \"file://{disk}/\"\n"
                "max_local_disk_size: 5.0\n")
    os.environ["LMCACHE_CONFIG_FILE"] = path
    ktc = KVTransferConfig(kv_connector="LMCacheConnectorV1", kv_role="kv_both")

    # vLLM's own prefix cache off, so every repeat must come from lmcache.
    llm = make_llm(model, ktc, prefix_caching=False)
    eid = llm.llm_engine.vllm_config.kv_transfer_config.engine_id
    res["first"] = [generate(llm, [p])[0] for p in prompts]
    res["second"] = [generate(llm, [p])[0] for p in prompts]
    stats = query_worker_stats(eid)
    deadline = time.monotonic() + 60
    while stats.get("disk_writes", 0) < stats.get("stored_chunks", 0) and time.monotonic() < deadline:
        time.sleep(0.1)  # write-behind to disk is asynchronous
        stats = query_worker_stats(eid)
    res["stats"] = stats
    shutdown(llm)

    # A new engine process with vLLM's defaults (its prefix cache on) on the
    # same configuration: the documents come from lmcache's disk tier.
    llm = make_llm(model, ktc, prefix_caching=True)
    eid = llm.llm_engine.vllm_config.kv_transfer_config.engine_id
    res["new_process"] = [generate(llm, [p])[0] for p in prompts]
    res["stats_new_process"] = query_worker_stats(eid)
    shutdown(llm)
    print("RESULTS " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
