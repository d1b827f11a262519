"""vLLM benchmark: TTFT of repeated and multi-document prompts, recompute vs
vLLM's own prefix cache vs lmcache, lmcache's overhead with no reuse, and its
cost per request where vLLM's prefix cache already covers the prompt (paired).

Bench model: random-weight Llama, 8 layers, hidden 512, 8 heads, 2 KV heads,
intermediate 1536, vocab 2048, bf16, max_model_len 16384. Each configuration
runs in its own process with VLLM_CPU_NUM_OF_RESERVED_CPU=1; figures are
medians over repeats.

    python benchmarks/bench_vllm.py --json vllm.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"

from report import report  # noqa: E402  (benchmarks/report.py)

# lmcache runs twice: with vLLM's prefix cache off (what lmcache alone does)
# and on (how one deploys it: vLLM's cache first, lmcache for the rest).
CONFIGS = ("recompute", "vllm_prefix", "lmcache", "lmcache_with_prefix")
# --step-modes: lmcache as above against lmcache with layer-wise loads and
# asynchronous stores forced on (they are on by default only on GPUs).
STEP_MODE_CONFIGS = ("lmcache", "lmcache_steps")
LMCACHE_CONFIG = {"l1_capacity_gb": 4}
STEP_MODES = {"layerwise_load": "on", "async_store": "on"}


def tokens(seed: int, n: int, vocab: int = 2048) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, vocab) for _ in range(n)]


def run_config(config: str, model: str, repeats: int) -> dict:
    """Runs every workload on one engine configuration (in this process)."""
    from lmcache.demo.vllm_runs import make_llm, shutdown, time_first_token

    extra = None
    if config.startswith("lmcache"):
        extra = {**LMCACHE_CONFIG, **(STEP_MODES if config == "lmcache_steps" else {})}
    llm = make_llm(model, lmcache=extra, prefix_caching=config in ("vllm_prefix", "lmcache_with_prefix"))
    time_first_token(llm, tokens(999, 300))  # warm-up
    out: dict = {}

    # A repeated 8K-token prompt: the first request fills the caches, the repeats are timed.
    prompt = tokens(1, 8192)
    first = time_first_token(llm, prompt)
    runs = [time_first_token(llm, prompt) for _ in range(repeats)]
    out["ttft_8k_first_ms"] = first.ttft_s * 1e3
    out["ttft_8k_repeat_ms"] = statistics.median(r.ttft_s for r in runs) * 1e3
    out["cached_8k_repeat"] = runs[-1].cached_tokens

    # Multi-document QA: 4 documents of 4K tokens, 3 questions each, round-robin.
    docs = [tokens(10 + d, 4096) for d in range(4)]
    rounds = []
    for q in range(3):
        rounds.append([time_first_token(llm, docs[d] + tokens(100 + 10 * d + q, 64)).ttft_s for d in range(4)])
    # Medians, as everywhere else here: one request stalled by another process
    # on the 2 cores (394 ms once) moved the mean of these 8 by up to 60 ms.
    later = [t * 1e3 for r in rounds[1:] for t in r]
    out["multi_later_ms"] = statistics.median(later)
    out["multi_later_all_ms"] = [round(t, 1) for t in later]
    out["multi_first_round_ms"] = statistics.median(rounds[0]) * 1e3

    # No reuse at all: fresh 2K-token prompts, 16 output tokens, batches of 4.
    if config in ("recompute", "lmcache", "lmcache_steps"):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sp = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
        rates = []
        for r in range(repeats):
            batch = [TokensPrompt(prompt_token_ids=tokens(1000 + 10 * r + i, 2048)) for i in range(4)]
            t0 = time.perf_counter()
            llm.generate(batch, sp, use_tqdm=False)
            rates.append(4 * (2048 + 16) / (time.perf_counter() - t0))
        out["zero_reuse_tokens_per_s"] = statistics.median(rates)
    shutdown(llm)
    return out


def run_paired(model: str, repeats: int) -> dict:
    """lmcache's cost per request where vLLM's prefix cache already covers
    the prompt: vLLM's prefix cache alone and lmcache with it, two engines in
    this one process, each multi-document QA request sent to both in turn
    (alternating which goes first), so that a stall of the machine hits both
    sides of a pair alike. Reports the median of the per-pair differences."""
    from lmcache.demo.vllm_runs import make_llm, shutdown, time_first_token

    engines = {"vllm_prefix": make_llm(model, lmcache=None, prefix_caching=True),
               "lmcache_with_prefix": make_llm(model, lmcache=LMCACHE_CONFIG, prefix_caching=True)}
    for llm in engines.values():
        time_first_token(llm, tokens(999, 300))  # warm-up
    docs = [tokens(10 + d, 4096) for d in range(4)]
    times: dict = {name: [] for name in engines}
    for rep in range(repeats):
        for q in range(3):
            for d in range(4):
                prompt = docs[d] + tokens(100 + 1000 * rep + 10 * d + q, 64)
                order = list(engines) if (rep + q + d) % 2 == 0 else list(reversed(engines))
                pair = {name: time_first_token(engines[name], prompt).ttft_s * 1e3 for name in order}
                if rep > 0 or q > 0:  # the first round fills both caches
                    for name, t in pair.items():
                        times[name].append(t)
    for llm in engines.values():
        shutdown(llm)
    diffs = [b - a for a, b in zip(times["vllm_prefix"], times["lmcache_with_prefix"])]
    return {"paired_vllm_prefix_ms": statistics.median(times["vllm_prefix"]),
            "paired_lmcache_with_prefix_ms": statistics.median(times["lmcache_with_prefix"]),
            "paired_overhead_ms": statistics.median(diffs), "paired_requests": len(diffs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "lmcache-bench-llama"))
    ap.add_argument("--step-modes", action="store_true",
                    help="compare lmcache with layer-wise loads and async stores on against the defaults (CPU: off)")
    ap.add_argument("--config", choices=CONFIGS + STEP_MODE_CONFIGS[1:] + ("paired",),
                    help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    from lmcache.demo.models import BENCH_BF16, make_llama

    model = make_llama(args.model_dir, BENCH_BF16)
    if args.config:
        if args.config == "paired":
            run = run_paired(model, args.repeats)
        else:
            run = run_config(args.config, model, args.repeats)
        with open(args.child_out, "w") as f:
            json.dump(run, f)
        return

    per = {}
    for config in STEP_MODE_CONFIGS if args.step_modes else CONFIGS + ("paired",):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            print(f"running {config} ...", flush=True)
            subprocess.run([sys.executable, __file__, "--config", config, "--child-out", tmp.name,
                            "--repeats", str(args.repeats), "--model-dir", args.model_dir],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            per[config] = json.load(open(tmp.name))

    if args.step_modes:
        base, steps = per["lmcache"], per["lmcache_steps"]
        r = {
            "ttft_lmcache_l1_ms": base["ttft_8k_repeat_ms"],
            "ttft_lmcache_steps_ms": steps["ttft_8k_repeat_ms"],
            "ttft_steps_ratio": steps["ttft_8k_repeat_ms"] / base["ttft_8k_repeat_ms"],
            "multi_later_lmcache_ms": base["multi_later_ms"],
            "multi_later_steps_ms": steps["multi_later_ms"],
            "zero_reuse_steps_ratio": steps["zero_reuse_tokens_per_s"] / base["zero_reuse_tokens_per_s"],
            "per_config": per,
        }
        report(r, [], args.json)
        return

    r = {
        "ttft_recompute_ms": per["recompute"]["ttft_8k_repeat_ms"],
        "ttft_vllm_prefix_ms": per["vllm_prefix"]["ttft_8k_repeat_ms"],
        "ttft_lmcache_l1_ms": per["lmcache"]["ttft_8k_repeat_ms"],
        "multi_later_recompute_ms": per["recompute"]["multi_later_ms"],
        "multi_later_vllm_prefix_ms": per["vllm_prefix"]["multi_later_ms"],
        "multi_later_lmcache_ms": per["lmcache_with_prefix"]["multi_later_ms"],
        "multi_later_lmcache_only_ms": per["lmcache"]["multi_later_ms"],
        "zero_reuse_overhead": 1 - per["lmcache"]["zero_reuse_tokens_per_s"] / per["recompute"]["zero_reuse_tokens_per_s"],
        "lmcache_cached_tokens_8k": per["lmcache"]["cached_8k_repeat"],
        "vllm_prefix_cached_tokens_8k": per["vllm_prefix"]["cached_8k_repeat"],
        **per.pop("paired"),
        "per_config": per,
    }
    checks = [
        ("ttft_lmcache_l1_ms <= ttft_recompute_ms / 50", r["ttft_lmcache_l1_ms"] <= r["ttft_recompute_ms"] / 50),
        ("ttft_lmcache_l1_ms <= 0.7 * ttft_vllm_prefix_ms", r["ttft_lmcache_l1_ms"] <= 0.7 * r["ttft_vllm_prefix_ms"]),
        # Separate processes a minute apart: 5% is this machine's noise between them.
        ("multi_later_lmcache_ms <= 1.05 * multi_later_vllm_prefix_ms",
         r["multi_later_lmcache_ms"] <= 1.05 * r["multi_later_vllm_prefix_ms"]),
        # The same requests, paired in one process: what lmcache adds on top of vLLM's cache.
        ("paired_overhead_ms <= 0.02 * paired_vllm_prefix_ms",
         r["paired_overhead_ms"] <= 0.02 * r["paired_vllm_prefix_ms"]),
        ("zero_reuse_overhead <= 0.02", r["zero_reuse_overhead"] <= 0.02),
    ]
    print(f"recompute / lmcache TTFT: {r['ttft_recompute_ms'] / r['ttft_lmcache_l1_ms']:.1f}x; "
          f"vLLM prefix / lmcache: {r['ttft_vllm_prefix_ms'] / r['ttft_lmcache_l1_ms']:.2f}x")
    report(r, checks, args.json)


if __name__ == "__main__":
    main()
