"""Runs real vLLM CPU engines with lmcache's blending on a tiny float32 Llama
and prints one JSON line of results. Driven by test_vllm_blend.py (vLLM
spawns processes, so it runs as its own script).

    python blend_driver.py MODEL_DIR
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")

CHUNK = 128
SEP = [7, 7]  # content tokens below never include 7


def text(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 500) for _ in range(n)]


def prompt(system: list[int], passages: list[list[int]], question: list[int]) -> list[int]:
    out = list(system)
    for p in passages:
        out += SEP + p
    return out + SEP + question


def generate(llm, prompts: list[list[int]], offsets: list | None = None) -> list[dict]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = []
    for i in range(len(prompts)):
        extra = {"kv_transfer_params": {"lmcache_segment_offsets": offsets[i]}} if offsets else None
        params.append(SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, extra_args=extra))
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [{"ids": list(o.outputs[0].token_ids), "cached": o.num_cached_tokens or 0} for o in outs]


def main() -> None:
    from lmcache.demo.vllm_runs import make_llm, shutdown
    from lmcache.integrations.vllm import query_worker_stats

    model = sys.argv[1]
    A, B, C = text(1, 3 * CHUNK), text(2, 2 * CHUNK + 20), text(3, 4 * CHUNK)
    first = prompt(text(4, 30), [A, B, C], text(5, 12))
    second = prompt(text(6, 50), [C, A, B], text(7, 9))  # another system prompt, order and question
    plain = text(8, 5 * CHUNK)  # no separator: an ordinary prompt
    res: dict = {}

    def make(extra: dict | None, prefix_caching: bool = False):
        return make_llm(model, lmcache=extra, dtype="float32", max_model_len=4096,
                        engine_id=f"blend-{uuid.uuid4()}", prefix_caching=prefix_caching)

    llm = make(None)
    res["baseline"] = generate(llm, [first, second, plain])
    shutdown(llm)

    base = {"chunk_size": CHUNK, "l1_capacity_gb": 0.25, "enable_blending": True, "blend_separator": "7,7"}
    for share in (1.0, 0.15):
        llm = make({**base, "blend_recompute_share": share})
        eid = llm.llm_engine.vllm_config.kv_transfer_config.engine_id
        run = {"first": generate(llm, [first])[0], "second": generate(llm, [second])[0],
               "plain": generate(llm, [plain])[0], "plain_again": generate(llm, [plain])[0]}
        run["stats"] = query_worker_stats(eid)
        res[f"share_{share}"] = run
        shutdown(llm)

    # Offsets given per request instead of a separator.
    llm = make({"chunk_size": CHUNK, "l1_capacity_gb": 0.25, "enable_blending": True, "blend_recompute_share": 1.0})
    eid = llm.llm_engine.vllm_config.kv_transfer_config.engine_id
    glue = text(9, 10)
    p1, p2 = glue + A + B, text(10, 17) + B + A
    res["offsets"] = generate(llm, [p1], [[10, 10 + len(A)]]) + generate(llm, [p2], [[17, 17 + len(B)]])
    res["offsets_baseline_ids"] = None
    res["offsets_stats"] = query_worker_stats(eid)
    shutdown(llm)
    llm = make(None)
    res["offsets_baseline"] = generate(llm, [p1, p2])
    shutdown(llm)

    # Blending with vLLM's prefix cache on is refused (said once), prefixes still work.
    llm = make(base, prefix_caching=True)
    res["with_prefix_cache"] = [generate(llm, [first])[0], generate(llm, [second])[0]]
    shutdown(llm)
    if len(sys.argv) > 2:
        res["trained"] = trained_model_answers(sys.argv[2])
    print("RESULTS " + json.dumps(res), flush=True)


def trained_model_answers(model: str, n_prompts: int = 40) -> dict:
    """The tiny Llama trained to read across passages (benchmarks/blend_model):
    the answer to each question is the first token of a passage, which that
    passage's cached KV computed alone cannot point to. Each prompt's passages
    are first seen in reverse order (so lmcache holds them as segments), then
    the prompt is answered with full prefill, with blending (share 0.15), and
    with cached segments reused as they are (share 0)."""
    import torch
    from vllm import LLM

    from lmcache.demo.vllm_runs import shutdown

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "benchmarks", "blend_model"))
    import task

    # vLLM's CPU backend takes blocks of a multiple of 32 tokens, so chunks are
    # 32 tokens and passages 32-40 (the model was trained on 8-24 and reads
    # these as well: full prefill answers them all). The first 32 tokens of
    # each passage are cached, the boundary token among them.
    task.PASSAGE_LEN = (32, 40)
    gen = torch.Generator().manual_seed(20261207)
    prompts = [task.boundary_prompt(gen) for _ in range(n_prompts)]

    def warm(p) -> tuple[list[int], list[int]]:
        first = p.spans[0][0]
        passages = [p.ids[s:e] for s, e in p.spans][::-1]
        ids, offsets = p.ids[:first], []
        for passage in passages:
            offsets.append(len(ids))
            ids = ids + passage
        return ids + [task.Q, passages[0][0]], offsets

    answers = {}
    for name, share in (("full", None), ("blend", 0.15), ("reuse", 0.0)):
        extra = None if share is None else {"chunk_size": 32, "l1_capacity_gb": 0.1, "enable_blending": True,
                                            "blend_recompute_share": share}
        from vllm.config import KVTransferConfig

        kw = {} if extra is None else {"kv_transfer_config": KVTransferConfig(
            kv_connector="LMCacheConnector", kv_connector_module_path="lmcache.integrations.vllm",
            kv_role="kv_both", engine_id=f"trained-{uuid.uuid4()}", kv_connector_extra_config=extra)}
        llm = LLM(model=model, skip_tokenizer_init=True, enforce_eager=True, gpu_memory_utilization=0.2,
                  dtype="float32", block_size=32, enable_prefix_caching=False, max_model_len=512, seed=0, **kw)
        got = []
        for p in prompts:
            if extra is not None:
                ids, offsets = warm(p)
                generate(llm, [ids], [offsets])
            offsets = [s for s, _ in p.spans]
            got.append(generate(llm, [p.ids], [offsets] if extra is not None else None)[0])
        answers[name] = got
        shutdown(llm)
    expected = [p.answer for p in prompts]
    return {"expected": expected, **{k: [r["ids"][0] for r in v] for k, v in answers.items()},
            "blend_cached": [r["cached"] for r in answers["blend"]]}


if __name__ == "__main__":
    main()
