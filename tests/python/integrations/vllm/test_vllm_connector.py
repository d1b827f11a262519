"""A real vLLM CPU engine with lmcache, against one without, on a tiny float32
Llama made at test time (vLLM's own prefix caching off except in the scenario
that tests lmcache beside it).

The engines run in one driver subprocess (vLLM spawns processes of its own);
each test below checks one scenario of its results.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from lmcache.demo.models import TINY_F32, make_llama

    from redis_servers import RedisServer

    model = make_llama(str(tmp_path_factory.mktemp("model") / "tiny-llama"), TINY_F32)
    redis = RedisServer()
    try:
        proc = subprocess.run([sys.executable, os.path.join(HERE, "driver.py"), model, redis.url],
                              capture_output=True, text=True, timeout=1500, cwd=HERE)
    finally:
        redis.stop()
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"driver failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


def test_repeated_prompt_is_served_from_lmcache(results):
    base = results["baseline"]["A"]["ids"]
    assert results["repeat_first"]["ids"] == base
    assert results["repeat_first"]["cached"] == 0
    # 2304 tokens = 9 chunks; vLLM must compute the last token itself.
    assert results["repeat_second"]["cached"] == 2303
    assert results["repeat_second"]["ids"] == base
    s = results["stats_after_repeat"]
    assert s["lookup_hit_tokens"] == 2304 and s["loaded_tokens"] == 2303 and s["stored_chunks"] == 9


def test_shared_prefix_partial_hit(results):
    assert results["partial_b1"]["ids"] == results["baseline"]["B1"]["ids"]
    assert results["partial_b2"]["cached"] == 1024  # the shared 4 chunks
    assert results["partial_b2"]["ids"] == results["baseline"]["B2"]["ids"]


def test_batch_of_hits_and_misses(results):
    batch = results["batch"]
    for name in ("A", "C", "B2", "D"):
        assert batch[name]["ids"] == results["baseline"][name]["ids"], name
    assert batch["A"]["cached"] == 2303 and batch["B2"]["cached"] > 1024
    assert batch["C"]["cached"] == 0 and batch["D"]["cached"] == 0


def test_with_vllm_prefix_cache_only_new_chunks_are_stored(results):
    base = results["baseline"]
    assert [r["ids"] for r in results["with_prefix"]] == [base["B1"]["ids"], base["B2"]["ids"], base["B1"]["ids"]]
    s = results["stats_with_prefix"]
    # B1: its 6 whole chunks. B2: vLLM's cache holds the shared 1024 tokens,
    # so only its 3 chunks after them are sent to store (none skipped as
    # already there). B1 again: vLLM's cache covers every whole chunk: no
    # store work at all.
    assert s["stored_chunks"] == 9 and s["store_skipped_chunks"] == 0
    assert s["connector_store_requests"] == 2


def test_small_l1_evicts_and_outputs_stay_identical(results):
    for r in results["evict_rounds"]:
        assert r["ids"] == results["baseline"][r["doc"]]["ids"], r["doc"]
    s = results["stats_evict"]
    assert s["evicted_chunks"] > 40 and s["l1_chunks"] <= 6
    again = results["evict_again_last"]
    assert again["cached"] == 1279 and again["ids"] == results["baseline"]["E5"]["ids"]


def test_failed_loads_are_recomputed(results):
    base = results["baseline"]["A"]["ids"]
    assert results["fault_first"]["ids"] == base
    for r in results["fault_rounds"]:
        assert r["ids"] == base  # blocks whose load failed were poisoned with NaN: vLLM recomputed them
    s = results["stats_fault"]
    assert s["connector_load_failed_tokens"] > 0
    assert s["load_errors"] > 0  # at least one corruption caught by the checksum


def test_tensor_parallel_two_ranks(results):
    first, second, b1, b2 = results["tp2"]
    # TP=2 sums partial results in another order than TP=1: compare with its own uncached run.
    assert first["cached"] == 0 and second["cached"] == 2303 and second["ids"] == first["ids"]
    assert b2["cached"] == 1024
    for rank, s in enumerate(results["stats_tp2"]):
        # Each rank holds its half of the heads under keys of its own.
        assert s["stored_chunks"] == 9 + 6 + 3, rank  # A, B1 (6 whole chunks), B2 past the shared 4
        assert s["connector_loaded_tokens"] == 2303 + 1024, rank
        assert s["connector_requests_holding_blocks"] == 0 and s["connector_layer_waits"] > 0, rank


def test_blocks_that_failed_to_load_are_not_stored(results):
    base = results["baseline"]["A"]["ids"]
    rounds = results["fault_once_rounds"]
    assert [r["ids"] for r in rounds] == [base] * 4  # the poisoned blocks never came back
    # The fault hit chunk 7, the last whole chunk of the 2303 tokens loaded;
    # round 2 recomputed and stored it again, round 3 loads everything.
    assert rounds[2]["cached"] == 7 * 256 and rounds[3]["cached"] == 2303
    s = results["stats_fault_once"]
    assert s["load_errors"] == 1 and s["connector_load_failed_tokens"] == 2303 - 7 * 256


def test_layer_by_layer_loads_and_async_stores(results):
    base = results["baseline"]
    assert results["lw_first"]["ids"] == base["A"]["ids"]
    assert results["lw_second"]["cached"] == 2303 and results["lw_second"]["ids"] == base["A"]["ids"]
    b1, b2 = results["lw_partial"]
    assert b1["ids"] == base["B1"]["ids"] and b2["ids"] == base["B2"]["ids"] and b2["cached"] == 1024
    for name, r in results["lw_batch"].items():
        assert r["ids"] == base[name]["ids"], name
    s = results["stats_lw"]
    # Every layer of every step with loads was waited for, one call per layer (2 layers).
    assert s["connector_layerwise_steps"] >= 3
    assert s["connector_layer_waits"] == 2 * s["connector_layerwise_steps"]
    assert s["connector_load_failed_tokens"] == 0
    assert s["loaded_tokens"] == s["connector_loaded_tokens"] > 0
    # Stores were begun after each forward pass and published by the finisher
    # thread; vLLM held each finished request's blocks until lmcache reported
    # its stores done, and none is held any more. 7 requests had stores: not
    # the batch's B2, whose whole chunks were all loaded from lmcache (what a
    # request starts with cached is never sent to store again).
    assert s["stored_chunks"] > 9 and s["connector_stored_tokens"] == 256 * s["stored_chunks"]
    assert s["connector_blocks_released_after_stores"] == 7
    assert s["connector_requests_holding_blocks"] == 0


def test_layer_by_layer_failed_loads_are_recomputed(results):
    for r in results["lw_fault_rounds"]:
        assert r["ids"] == results["baseline"]["A"]["ids"]
    s = results["stats_lw_fault"]
    assert s["connector_load_failed_tokens"] > 0 and s["load_errors"] > 0


def test_second_engine_process_is_served_from_disk(results):
    base = results["baseline"]["A"]["ids"]
    assert results["disk_first"]["ids"] == base
    assert results["stats_disk1"]["disk_writes"] == 9
    second = results["disk_second_process"]
    assert second["cached"] == 2303 and second["ids"] == base
    s = results["stats_disk2"]
    assert s["disk_recovered_records"] == 9
    assert s["promoted_chunks"] == 9 and s["lookup_disk_hit_tokens"] == 2304
    assert s["load_errors"] == 0


def test_two_engine_processes_share_the_remote_tier(results):
    base = results["baseline"]["A"]["ids"]
    assert results["remote_first"]["ids"] == base
    assert results["stats_remote1"]["remote_puts"] == 9
    second = results["remote_second_process"]
    assert second["cached"] == 2303 and second["ids"] == base
    s = results["stats_remote2"]
    assert s["imported_chunks"] == 9 and s["remote_bad_values"] == 0 and s["load_errors"] == 0


def test_sglang_key_scheme_serves_hits_too(results):
    base = results["baseline"]
    assert results["sgkeys_first"]["ids"] == base["A"]["ids"]
    assert results["sgkeys_second"]["cached"] == 2303 and results["sgkeys_second"]["ids"] == base["A"]["ids"]
    b1, b2 = results["sgkeys_partial"]
    assert b1["ids"] == base["B1"]["ids"] and b2["ids"] == base["B2"]["ids"]
    assert b2["cached"] == 1024  # the shared prefix, named by SGLang's page hashes


def test_each_request_is_hashed_once(results):
    # The worker keeps a request's keys from its lookup to its last store: one
    # native pass over its tokens, with SGLang's key scheme and the remote tier too.
    assert results["stats_sgkeys"]["hash_passes"] == 4  # four requests
    assert results["stats_remote1"]["hash_passes"] == 1
    assert results["stats_remote2"]["hash_passes"] == 1
    assert [s["hash_passes"] for s in results["stats_tp2"]] == [4, 4]  # four requests, on each rank
