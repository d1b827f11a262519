"""The speed half of bench_blend.py: time to first token of RAG-shaped
prompts in vLLM, with full prefill, with lmcache's prefix reuse only, and
with blending.

Bench model: bench_vllm.py's (random Llama, 8 layers, hidden 512, bf16).
Prompts: one system prompt, 6 passages of ~1300 tokens in shuffled order,
a new question each time (~8K tokens), separated by a two-token separator.
The passages are first seen in other orders (the warm-up prompts), so
lmcache has them cached beforehand; then each timed prompt brings them in an
order of its own. Each configuration runs in its own process with
VLLM_CPU_NUM_OF_RESERVED_CPU=1; figures are medians.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"

SEPARATOR = [1, 1]  # passages' tokens are drawn from 2..vocab-1
PASSAGES, PASSAGE_TOKENS, SYSTEM_TOKENS, QUESTION_TOKENS = 6, 1300, 200, 48
CONFIGS = ("full", "prefix_only", "blend")
LMCACHE = {"l1_capacity_gb": 4, "chunk_size": 256}
BLEND = {"enable_blending": True, "blend_separator": "1,1", "blend_recompute_share": 0.15}


def _tokens(seed: int, n: int, vocab: int = 2048) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(2, vocab) for _ in range(n)]


def rag_prompt(order: list[int], question_seed: int) -> list[int]:
    out = _tokens(7, SYSTEM_TOKENS)
    for p in order:
        out += SEPARATOR + _tokens(100 + p, PASSAGE_TOKENS)
    return out + SEPARATOR + _tokens(question_seed, QUESTION_TOKENS)


def orders(seed: int, n: int) -> list[list[int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        order = list(range(PASSAGES))
        rng.shuffle(order)
        out.append(order)
    return out


def run_config(config: str, model: str, repeats: int) -> dict:
    from lmcache.demo.vllm_runs import make_llm, shutdown, time_first_token

    extra = None if config == "full" else {**LMCACHE, **(BLEND if config == "blend" else {})}
    llm = make_llm(model, lmcache=extra, prefix_caching=False)
    for i, order in enumerate(orders(1, 2)):  # the passages, seen first in other orders
        time_first_token(llm, rag_prompt(order, 1000 + i))
    timed = [time_first_token(llm, rag_prompt(order, 2000 + i)) for i, order in enumerate(orders(2, repeats))]
    shutdown(llm)
    return {"ttft_ms": statistics.median(t.ttft_s for t in timed) * 1e3,
            "cached_tokens": statistics.median(t.cached_tokens for t in timed),
            "prompt_tokens": timed[0].prompt_tokens}


def measure(model_dir: str, repeats: int, progress=print) -> dict:
    """Runs each configuration in a child process; returns the speed keys."""
    from lmcache.demo.models import BENCH_BF16, make_llama

    model = make_llama(model_dir, BENCH_BF16)
    per = {}
    for config in CONFIGS:
        progress(f"vLLM speed: {config} ...")
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            subprocess.run([sys.executable, __file__, config, model, tmp.name, str(repeats)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            per[config] = json.load(open(tmp.name))
    return {"ttft_full_ms": per["full"]["ttft_ms"], "ttft_prefix_only_ms": per["prefix_only"]["ttft_ms"],
            "ttft_blend_ms": per["blend"]["ttft_ms"], "speed_per_config": per}


if __name__ == "__main__":  # child mode: CONFIG MODEL OUT REPEATS
    config, model, out, repeats = sys.argv[1:5]
    with open(out, "w") as f:
        json.dump(run_config(config, model, int(repeats)), f)
