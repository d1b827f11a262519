"""vLLM's own metrics show lmcache's hit rate: a real engine with
LMCacheConnector exports vllm:lmcache_* counters through vLLM's KV-connector
stats (and vLLM's periodic log prints them)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

HERE = os.path.dirname(__file__)


def test_vllm_metrics_carry_lmcache_counters(tmp_path):
    from lmcache.demo.models import TINY_F32, make_llama

    model = make_llama(str(tmp_path / "tiny-llama"), TINY_F32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "stats_driver.py"), model], capture_output=True,
                          text=True, timeout=600, cwd=HERE, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"driver failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    c = json.loads(lines[-1][len("RESULTS "):])
    # Two requests of 1280 tokens: the second finds all 5 chunks and loads 1279 (vLLM computes the last).
    assert c["vllm:lmcache_lookup_tokens"] == 2 * 1280
    assert c["vllm:lmcache_hit_tokens"] == 1280
    assert c["vllm:lmcache_loaded_tokens"] == 1279
    assert c["vllm:lmcache_stored_tokens"] == 1280
    assert c["vllm:lmcache_load_failed_tokens"] == 0


def test_the_logged_summary_has_the_hit_rate():
    # What vLLM's periodic "KV Transfer metrics: ..." line prints (an offline
    # LLM never reaches its logging interval, so this is checked directly).
    from lmcache.integrations.vllm.connector import LMCacheConnector

    stats = LMCacheConnector.build_kv_connector_stats({"lookup_tokens": 1000, "hit_tokens": 250})
    stats = stats.aggregate(LMCacheConnector.build_kv_connector_stats({"lookup_tokens": 1000, "hit_tokens": 750,
                                                                       "loaded_tokens": 749}))
    summary = stats.reduce()
    assert summary["lmcache hit rate"] == 0.5 and summary["lmcache loaded tokens"] == 749
    assert not stats.is_empty() and LMCacheConnector.build_kv_connector_stats({}).is_empty()
