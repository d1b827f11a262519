"""A soak under faults: worker threads store, look up, load (every byte
checked), pin, clear and flush on one engine with host memory, disk and Redis
tiers while Redis is killed and restarted and disk and remote records are
damaged. LMCACHE_SOAK_SECONDS sets its length (default 60; CI uses at most 150)."""

import os

from redis_servers import free_port
from soak_driver import run_soak

SECONDS = float(os.environ.get("LMCACHE_SOAK_SECONDS", "60"))
SEED = int(os.environ.get("LMCACHE_SOAK_SEED", "20240"))
# Far above what a minute of steady work should add once warm, far below what
# a leak of one chunk per operation would (tens of thousands of operations).
RSS_GROWTH_LIMIT_MIB = 64


def test_soak_with_redis_restarts_and_disk_faults(tmp_path):
    result = run_soak(SECONDS, threads=4, workdir=tmp_path, redis_port=free_port(), seed=SEED)
    details = "\n".join(result["crash_details"])
    shown = {k: v for k, v in result.items() if k != "crash_details"}
    print(shown)  # the figures, in the log of every run
    assert result["crashes"] == 0, f"seed {SEED}: {shown}\n{details}"
    assert result["bytes_wrong"] == 0, f"seed {SEED}: {shown}"
    assert result["bytes_lost"] == 0, f"seed {SEED}: {shown}"
    assert result["bytes_verified"] > 0, shown
    assert result["faults_injected"] > 0 and result["faults_redis_restart"] > 0, shown
    assert result["engine_evicted_chunks"] > 0, shown  # host memory was under pressure all along
    assert result["rss_growth_mib"] < RSS_GROWTH_LIMIT_MIB, shown
