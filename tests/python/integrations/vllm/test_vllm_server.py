"""Two real vLLM CPU engines on one node server (`lmcache server`): what one
stores the other hits, outputs identical to a run without lmcache (float32)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "server"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from node_server import BASE_ENV, NodeServerProcess

    from lmcache.demo.models import TINY_F32, make_llama

    model = make_llama(str(tmp_path_factory.mktemp("model") / "tiny-llama"), TINY_F32)
    work = tmp_path_factory.mktemp("server")
    server = NodeServerProcess(str(work / "run" / "lmcache.sock"), chunk_size=256, l1_capacity_gb=0.5,
                               local_disk_path=work / "disk")
    try:
        proc = subprocess.run([sys.executable, os.path.join(HERE, "server_driver.py"), model, server.socket_path],
                              capture_output=True, text=True, timeout=900, cwd=HERE, env=BASE_ENV)
    finally:
        assert server.stop() == 0
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"driver failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


def test_what_one_engine_stores_the_other_hits(results):
    base = results["baseline"]
    assert results["engine1"]["ids"] == base[0]["ids"] and results["engine1"]["cached"] == 0
    assert results["engine2"]["ids"] == base[0]["ids"] and results["engine2"]["cached"] == 2303
    assert results["engine2_other"]["ids"] == base[1]["ids"] and results["engine2_other"]["cached"] == 0
    assert results["engine1_other"]["ids"] == base[1]["ids"] and results["engine1_other"]["cached"] == 1279


def test_both_engines_see_one_cache(results):
    s1, s2 = results["stats1"], results["stats2"]
    assert s1["server_connected"] and s2["server_connected"]
    # One pool for the node: both engines report the server's counters.
    assert s2["loaded_tokens"] >= 2303 + 1279 and s2["load_errors"] == 0
    assert s1["stored_chunks"] == s2["stored_chunks"] == 9 + 5


def test_every_tensor_parallel_rank_attaches(results):
    first, second = results["tp2"]
    base = results["baseline"][0]["ids"]
    assert first["ids"] == second["ids"] == base
    assert first["cached"] == 0 and second["cached"] == 2303
    for s in results["stats_tp2"]:
        assert s["server_connected"] and s["load_errors"] == 0
