"""Runs real vLLM CPU engines, with and without lmcache, on a tiny float32 Llama,
and prints one JSON line of results. Driven by test_vllm_connector.py (vLLM
spawns processes, so it runs as its own script).

    python driver.py MODEL_DIR [REDIS_URL]
"""

from __future__ import annotations

import json
import os
import sys
import uuid

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")

CHUNK = 256


def prompt(seed: int, n: int, vocab: int = 512) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(1, vocab) for _ in range(n)]


def make_llm(model: str, lmcache_extra: dict | None, engine_id: str | None = None, tp: int = 1,
             prefix_caching: bool = False):
    from lmcache.demo.vllm_runs import make_llm as make

    return make(model, lmcache=lmcache_extra, dtype="float32", max_model_len=4096, engine_id=engine_id,
                tensor_parallel_size=tp, prefix_caching=prefix_caching)


def generate(llm, prompts: list[list[int]]) -> list[dict]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), use_tqdm=False)
    return [{"ids": list(o.outputs[0].token_ids), "cached": o.num_cached_tokens or 0} for o in outs]


def settled_stats(engine_id: str, rank: int = 0) -> dict:
    """Worker stats once vLLM has released every request held for lmcache's
    stores (its engine loop keeps stepping until the workers report them)."""
    import time

    from lmcache.integrations.vllm import query_worker_stats

    deadline = time.monotonic() + 60
    stats = query_worker_stats(engine_id, rank)
    while stats.get("connector_requests_holding_blocks", 0) and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = query_worker_stats(engine_id, rank)
    return stats


def main() -> None:
    model = sys.argv[1]
    from lmcache.demo.vllm_runs import shutdown
    from lmcache.integrations.vllm import query_worker_stats

    A = prompt(1, 2304)                       # 9 whole chunks
    shared = prompt(2, 1024)                  # 4 chunks
    B1, B2 = shared + prompt(3, 700), shared + prompt(4, 900)
    C, D = prompt(5, 1500), prompt(6, 600)
    evict_docs = [prompt(10 + i, 1280) for i in range(6)]  # 5 chunks each
    all_prompts = {"A": A, "B1": B1, "B2": B2, "C": C, "D": D, **{f"E{i}": p for i, p in enumerate(evict_docs)}}
    res: dict = {}

    # Reference: no lmcache, vLLM's own prefix cache off.
    llm = make_llm(model, None)
    names = list(all_prompts)
    res["baseline"] = dict(zip(names, generate(llm, [all_prompts[n] for n in names])))
    shutdown(llm)

    # One engine with lmcache: repeat, partial hit, mixed batch.
    eid = f"main-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5}, eid)
    res["repeat_first"] = generate(llm, [A])[0]
    res["repeat_second"] = generate(llm, [A])[0]
    res["stats_after_repeat"] = query_worker_stats(eid)
    res["partial_b1"] = generate(llm, [B1])[0]
    res["partial_b2"] = generate(llm, [B2])[0]
    res["batch"] = dict(zip(["A", "C", "B2", "D"], generate(llm, [A, C, B2, D])))
    res["stats_main"] = query_worker_stats(eid)
    shutdown(llm)

    # With vLLM's own prefix cache on (how lmcache is deployed): what vLLM's
    # cache covers when a request is first scheduled is never sent to the
    # workers to store again.
    eid = f"with-prefix-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5}, eid, prefix_caching=True)
    res["with_prefix"] = [generate(llm, [p])[0] for p in (B1, B2, B1)]
    res["stats_with_prefix"] = query_worker_stats(eid)
    shutdown(llm)

    # L1 far smaller than the working set (room for 6 chunks; 30 chunks of documents).
    eid = f"evict-{uuid.uuid4()}"
    chunk_bytes = 2 * 2 * CHUNK * 2 * 32 * 4 + 4096  # layers * planes * tokens * kv heads * head_dim * fp32 + header page
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 6 * chunk_bytes / 2**30}, eid)
    rounds = []
    for _ in range(2):
        for i, doc in enumerate(evict_docs):
            rounds.append({"doc": f"E{i}", **generate(llm, [doc])[0]})
    res["evict_rounds"] = rounds
    res["evict_again_last"] = generate(llm, [evict_docs[-1]])[0]
    res["stats_evict"] = query_worker_stats(eid)
    shutdown(llm)

    # Every load fails after the lookup promised it: corrupted (checksum) or vanished chunks.
    eid = f"fault-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "verify_l1_checksums": True,
                           "fault_load_rate": 1.0, "fault_seed": 7}, eid)
    res["fault_first"] = generate(llm, [A])[0]
    res["fault_rounds"] = [generate(llm, [A])[0] for _ in range(3)]
    res["stats_fault"] = query_worker_stats(eid)
    shutdown(llm)

    # Layer-wise loads: each layer is loaded in wait_for_layer_load, just
    # before its attention (on a GPU: the compute stream waits on that layer's
    # event); and asynchronous stores, published by lmcache's finisher thread.
    eid = f"layerwise-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "layerwise_load": "on",
                           "async_store": "on"}, eid)
    res["lw_first"] = generate(llm, [A])[0]
    res["lw_second"] = generate(llm, [A])[0]
    res["lw_partial"] = [generate(llm, [B1])[0], generate(llm, [B2])[0]]
    res["lw_batch"] = dict(zip(["A", "C", "B2", "D"], generate(llm, [A, C, B2, D])))
    res["stats_lw"] = settled_stats(eid)
    shutdown(llm)
    # Seed 9: the second round's load meets a corrupted chunk, the third's a dropped one.
    eid = f"layerwise-fault-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "layerwise_load": "on",
                           "verify_l1_checksums": True, "fault_load_rate": 1.0, "fault_seed": 9}, eid)
    res["lw_fault_rounds"] = [generate(llm, [A])[0] for _ in range(3)]
    res["stats_lw_fault"] = query_worker_stats(eid)
    shutdown(llm)

    # Tensor parallel 2: each rank stores and loads its own heads under its
    # own keys; the scheduler takes the smaller hit of the two ranks. vLLM's
    # CPU backend binds one core per rank here (it cannot pick on one NUMA node).
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0|1"
    eid = f"tp2-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.25, "layerwise_load": "on",
                           "async_store": "on"}, eid, tp=2)
    res["tp2"] = [generate(llm, [A])[0] for _ in range(2)] + [generate(llm, [B1])[0], generate(llm, [B2])[0]]
    res["stats_tp2"] = [settled_stats(eid, rank) for rank in (0, 1)]
    shutdown(llm)
    del os.environ["VLLM_CPU_OMP_THREADS_BIND"]

    # One failed load (a corrupted chunk), then none: the step that found it
    # must not store the blocks it could not fill, or later rounds would load them.
    eid = f"fault-once-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "verify_l1_checksums": True,
                           "fault_load_rate": 1.0, "fault_seed": 7, "fault_load_max": 1}, eid)
    res["fault_once_rounds"] = [generate(llm, [A])[0] for _ in range(4)]
    res["stats_fault_once"] = query_worker_stats(eid)
    shutdown(llm)

    # SGLang's key scheme (what a vLLM engine uses to share chunks with SGLang).
    eid = f"sgkeys-{uuid.uuid4()}"
    llm = make_llm(model, {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "key_scheme": "sglang"}, eid)
    res["sgkeys_first"] = generate(llm, [A])[0]
    res["sgkeys_second"] = generate(llm, [A])[0]
    res["sgkeys_partial"] = [generate(llm, [B1])[0], generate(llm, [B2])[0]]
    res["stats_sgkeys"] = settled_stats(eid)
    shutdown(llm)

    # Disk tier: one engine process computes and stores; a second, fresh one
    # on the same directory is served from disk.
    import tempfile
    import time

    disk_dir = tempfile.mkdtemp(prefix="lmcache-vllm-disk-")
    disk_cfg = {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "local_disk_path": disk_dir}
    eid = f"disk1-{uuid.uuid4()}"
    llm = make_llm(model, disk_cfg, eid)
    res["disk_first"] = generate(llm, [A])[0]
    deadline = time.monotonic() + 60
    while query_worker_stats(eid)["disk_writes"] < 9 and time.monotonic() < deadline:
        time.sleep(0.1)  # write-behind is asynchronous
    res["stats_disk1"] = query_worker_stats(eid)
    shutdown(llm)
    eid = f"disk2-{uuid.uuid4()}"
    llm = make_llm(model, disk_cfg, eid)
    res["disk_second_process"] = generate(llm, [A])[0]
    res["stats_disk2"] = query_worker_stats(eid)
    shutdown(llm)

    # Remote tier: two engine processes share one Redis server (no disk), with
    # SGLang's key scheme (so chunks are shareable with SGLang engines too).
    if len(sys.argv) > 2:
        remote_cfg = {"chunk_size": CHUNK, "l1_capacity_gb": 0.5, "remote_url": sys.argv[2],
                      "auth_secret": "vllm-test-remote-secret-0123456", "key_scheme": "sglang"}
        eid = f"remote1-{uuid.uuid4()}"
        llm = make_llm(model, remote_cfg, eid)
        res["remote_first"] = generate(llm, [A])[0]
        deadline = time.monotonic() + 60
        while query_worker_stats(eid)["remote_puts"] < 9 and time.monotonic() < deadline:
            time.sleep(0.1)
        res["stats_remote1"] = query_worker_stats(eid)
        shutdown(llm)
        eid = f"remote2-{uuid.uuid4()}"
        llm = make_llm(model, remote_cfg, eid)
        res["remote_second_process"] = generate(llm, [A])[0]
        res["stats_remote2"] = settled_stats(eid)
        shutdown(llm)

    print("RESULTS " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
