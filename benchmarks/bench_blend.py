"""KV blending benchmark: answer quality with reused segment KV.

Quality: the tiny Llama of benchmarks/blend_model/ (trained by its train.py)
answers "which token followed k?" where k ends one passage, so the answer
starts the next passage (see benchmarks/blend_model/README.md). Each passage's
KV is computed once on its own, as a cache would hold it, and the prompt is
prefilled three ways:

- acc_full: normal prefill of the whole prompt;
- acc_reuse: cached passage KV reused as is (recompute share 0);
- acc_blend: cached passage KV blended (recompute share 0.15, check layer 1).

Speed: time to first token of RAG-shaped 8K-token prompts in vLLM, with
full prefill, lmcache's prefix reuse only, and blending (blend_speed.py):
ttft_full_ms, ttft_prefix_only_ms, ttft_blend_ms.

    python benchmarks/bench_blend.py --json blend.json            # ~12 minutes
    python benchmarks/bench_blend.py --no-vllm --json blend.json  # quality only, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch
from transformers import LlamaForCausalLM

from lmcache.blend import blend_prefill, segment_kv
from report import report

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "blend_model"))
import task  # noqa: E402

BENCH_SEED = 20261206  # neither training (train.py --seed) nor its held-out check uses it


def bench_quality(model: LlamaForCausalLM, n_prompts: int, share: float, check_layer: int) -> dict:
    """Accuracy of full prefill, plain reuse and blending on held-out boundary questions."""
    gen = torch.Generator().manual_seed(BENCH_SEED)
    sweep = sorted({0.05, 0.1, share, 0.3})
    correct = {"full": 0, "reuse": 0, **{s: 0 for s in sweep}}
    recomputed = firsts = 0.0
    for _ in range(n_prompts):
        prompt = task.boundary_prompt(gen)
        ids = torch.tensor(prompt.ids)
        store = {}

        def cached_kv(seg: torch.Tensor):
            # What a segment cache returns: the passage's KV computed alone, once.
            key = tuple(seg.tolist())
            if key not in store:
                store[key] = segment_kv(model, seg)
            return store[key]

        with torch.no_grad():
            logits = {"full": model(input_ids=ids[None]).logits[0, -1]}
        reuse = blend_prefill(model, ids, prompt.spans, cached_kv, recompute_share=0.0, check_layer=check_layer)
        logits["reuse"] = reuse.logits
        for s in sweep:
            out = blend_prefill(model, ids, prompt.spans, cached_kv, recompute_share=s, check_layer=check_layer)
            logits[s] = out.logits
            if s == share:
                in_passages = torch.zeros(len(prompt.ids), dtype=torch.bool)
                for start, end in prompt.spans:
                    in_passages[start:end] = True
                recomputed += float(out.recomputed[in_passages].float().mean())
                # Did the deviation pick the tokens that lost the most: each passage's first?
                firsts += sum(bool(out.recomputed[start]) for start, _ in prompt.spans) / len(prompt.spans)
        for name, value in logits.items():
            correct[name] += int(value.argmax()) == prompt.answer
    return {
        "acc_full": correct["full"] / n_prompts,
        "acc_reuse": correct["reuse"] / n_prompts,
        "acc_blend": correct[share] / n_prompts,
        "blend_share": share,
        "blend_recomputed_share": recomputed / n_prompts,  # of passage tokens, measured
        "blend_first_tokens_recomputed": firsts / n_prompts,  # share of passages whose first token was picked
        "acc_blend_by_share": {str(s): correct[s] / n_prompts for s in sweep},
        "prompts": n_prompts,
    }


def bench_inner_control(model: LlamaForCausalLM, n_prompts: int) -> dict:
    """Control: questions whose answer is not the first token of a passage.

    Plain reuse answers most of these, unlike boundary questions: what reuse
    loses is mostly the link across a passage boundary.
    """
    gen = torch.Generator().manual_seed(BENCH_SEED + 1)
    asked = correct_full = correct_reuse = 0
    for _ in range(n_prompts):
        prompt = task.inner_prompt(gen)
        answer_pos = prompt.ids.index(prompt.answer)
        if any(answer_pos == start for start, _ in prompt.spans):
            continue  # a boundary question: measured by bench_quality
        ids = torch.tensor(prompt.ids)
        store = {tuple(ids[s:e].tolist()): segment_kv(model, ids[s:e]) for s, e in prompt.spans}
        with torch.no_grad():
            full = model(input_ids=ids[None]).logits[0, -1]
        reuse = blend_prefill(model, ids, prompt.spans, lambda seg: store[tuple(seg.tolist())],
                              recompute_share=0.0)
        asked += 1
        correct_full += int(full.argmax()) == prompt.answer
        correct_reuse += int(reuse.logits.argmax()) == prompt.answer
    return {"acc_full_inner": correct_full / asked, "acc_reuse_inner": correct_reuse / asked, "inner_prompts": asked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--prompts", type=int, default=200, help="held-out prompts")
    ap.add_argument("--share", type=float, default=0.15, help="recompute share for acc_blend")
    ap.add_argument("--check-layer", type=int, default=1)
    ap.add_argument("--model", default=os.path.join(HERE, "blend_model"), help="folder of the trained weights")
    ap.add_argument("--no-vllm", action="store_true", help="quality only (the speed part takes ~10 minutes)")
    ap.add_argument("--repeats", type=int, default=5, help="timed prompts per vLLM configuration")
    ap.add_argument("--vllm-model-dir", default=os.path.join(tempfile.gettempdir(), "lmcache-bench-llama"))
    args = ap.parse_args()

    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    results = bench_quality(model, args.prompts, args.share, args.check_layer)
    results.update(bench_inner_control(model, args.prompts))
    checks = [
        ("acc_blend >= 0.95 * acc_full", results["acc_blend"] >= 0.95 * results["acc_full"]),
        ("acc_reuse <= 0.5 * acc_full", results["acc_reuse"] <= 0.5 * results["acc_full"]),
    ]
    if not args.no_vllm:
        import blend_speed  # benchmarks/blend_speed.py: vLLM in child processes

        results.update(blend_speed.measure(args.vllm_model_dir, args.repeats))
        results["ttft_blend_vs_full"] = results["ttft_blend_ms"] / results["ttft_full_ms"]
        checks += [
            ("ttft_blend_ms <= 0.4 * ttft_full_ms", results["ttft_blend_ms"] <= 0.4 * results["ttft_full_ms"]),
            ("ttft_blend_ms < ttft_prefix_only_ms", results["ttft_blend_ms"] < results["ttft_prefix_only_ms"]),
        ]
    report(results, checks, args.json)


if __name__ == "__main__":
    main()
