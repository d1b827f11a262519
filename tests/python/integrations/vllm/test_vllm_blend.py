"""Blending in a real vLLM CPU engine (tiny float32 Llamas: a random one, and
the one trained to read across passages): segments cached
on their own are reused in another order, after another system prompt and
before another question; with every token recomputed the output equals full
prefill, and prompts without segments behave exactly as before.

The engines run in one driver subprocess (blend_driver.py); each test below
checks one scenario of its results.
"""

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from lmcache.demo.models import TINY_F32, make_llama

    model = make_llama(str(tmp_path_factory.mktemp("model") / "tiny-llama"), TINY_F32)
    trained = os.path.join(HERE, "..", "..", "..", "..", "benchmarks", "blend_model")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "blend_driver.py"), model, trained],
                          capture_output=True, text=True, timeout=1500, cwd=HERE)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"driver failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULTS "):]) | {"stderr": proc.stderr}


def test_full_recompute_share_equals_full_prefill(results):
    base, run = results["baseline"], results["share_1.0"]
    assert run["first"]["ids"] == base[0]["ids"] and run["first"]["cached"] == 0  # nothing cached yet
    # The passages come back in another order after another system prompt: all
    # of [0, end of the last passage) is made by the blend prefill.
    assert run["second"]["cached"] == 1208
    assert run["second"]["ids"] == base[1]["ids"]
    s = run["stats"]
    assert s["blended_requests"] == 1 and s["blended_tokens"] == 1208 and s["blend_recomputed_tokens"] == 1208
    assert s["segments_stored"] == 3 and s["segment_loaded_chunks"] == 3 + 2 + 4  # B's 20-token tail is not cached
    assert s["blend_failed_requests"] == 0


def test_default_share_recomputes_a_few_tokens(results):
    run = results["share_0.15"]
    s = run["stats"]
    assert run["second"]["cached"] == 1208 and s["blended_requests"] == 1
    # From the check layer on: the uncached tokens (system prompt, separators),
    # the last claimed one, and 15% of the other cached ones.
    cached = 3 * 128 + 2 * 128 + 4 * 128
    assert s["blend_recomputed_tokens"] == (1208 - cached) + 1 + math.ceil(0.15 * (cached - 1))
    assert run["second"]["ids"][0] == results["baseline"][1]["ids"][0]


def test_prompts_without_segments_behave_as_before(results):
    base = results["baseline"][2]["ids"]
    for share in ("share_1.0", "share_0.15"):
        run = results[share]
        assert run["plain"]["ids"] == base and run["plain"]["cached"] == 0
        assert run["plain_again"]["ids"] == base and run["plain_again"]["cached"] == 5 * 128 - 1  # a prefix hit


def test_segments_from_offsets_in_the_request(results):
    assert [r["ids"] for r in results["offsets"]] == [r["ids"] for r in results["offsets_baseline"]]
    # 17 glue tokens, B (2 whole chunks and a 20-token tail, computed), and A's
    # first 2 chunks: its third ends the prompt, whose last token vLLM computes.
    assert results["offsets"][1]["cached"] == 17 + 2 * 128 + 20 + 2 * 128
    s = results["offsets_stats"]
    assert s["blended_requests"] == 1 and s["segments_stored"] == 2


def test_blending_with_vllm_prefix_cache_is_refused_once(results):
    assert [r["ids"] for r in results["with_prefix_cache"]] == [r["ids"] for r in results["baseline"][:2]]
    assert results["stderr"].count("enable_blending needs vLLM's prefix caching off") >= 1


def test_trained_model_answers_as_full_prefill_when_blended(results):
    """The tiny Llama trained to read across passages (benchmarks/blend_model):
    each answer is a passage's first token, which the passage's own cached KV
    cannot point to. Blending recovers every answer full prefill gives;
    reusing the cached segments as they are recovers none (the test's proof
    that it can fail)."""
    r = results["trained"]
    n = len(r["expected"])
    agree = sum(a == b for a, b in zip(r["blend"], r["full"])) / n
    assert sum(a == b for a, b in zip(r["full"], r["expected"])) / n >= 0.95
    assert agree >= 0.95  # bench_blend.py: acc_blend 1.0 of acc_full 1.0
    assert sum(a == b for a, b in zip(r["reuse"], r["full"])) / n <= 0.5
    assert min(r["blend_cached"]) > 150  # most of each prompt came from the blend prefill
