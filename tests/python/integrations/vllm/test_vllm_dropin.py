"""A real vLLM engine started with exactly the configuration of vLLM's
LMCache example -- `kv_connector: LMCacheConnectorV1` and nothing else in
kv_transfer_config, LMCache's LMCACHE_* variables and YAML file -- is served
by this package: repeated prompts hit, outputs equal a run without it
(float32)."""

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

    model = make_llama(str(tmp_path_factory.mktemp("model") / "tiny-llama"), TINY_F32)
    work = tmp_path_factory.mktemp("dropin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "dropin_driver.py"), model, str(work)],
                          capture_output=True, text=True, timeout=900, cwd=HERE, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"driver failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULTS "):]), proc.stderr


def test_outputs_equal_a_run_without_lmcache(results):
    res, _ = results
    base = [r["ids"] for r in res["baseline"]]
    for run in ("first", "second", "new_process"):
        assert [r["ids"] for r in res[run]] == base, run


def test_repeated_prompts_are_served_from_lmcache(results):
    res, _ = results
    assert [r["cached"] for r in res["first"]] == [0, 0, 1024]  # q2 shares 4 chunks with q1
    # Every whole chunk of each prompt (vLLM computes the last token itself).
    assert [r["cached"] for r in res["second"]] == [2303, 1536, 1792]
    s = res["stats"]
    assert s["loaded_tokens"] == 1024 + 2303 + 1536 + 1792 and s["load_errors"] == 0
    # The LMCache settings reached lmcache: 256-token chunks, 5 GB of host memory, the disk tier.
    assert s["chunk_size"] == 256 and s["l1_capacity_bytes"] >= 4 * 2**30 and s["disk_enabled"]


def test_a_new_engine_hits_lmcache_disk_tier(results):
    res, _ = results
    assert [r["cached"] for r in res["new_process"]] == [2303, 1536, 1792]
    s = res["stats_new_process"]
    assert s["disk_recovered_records"] >= 9 + 6 + 3 and s["promoted_chunks"] > 0


def test_lmcache_settings_without_equivalent_do_not_stop_startup(results):
    _, stderr = results
    assert "Traceback" not in stderr
