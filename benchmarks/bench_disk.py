"""Disk tier benchmark, everything on the same directory in one run:

- fio: sequential 1 MiB O_DIRECT writes and reads at queue depth 32
  (`fio_write_gbps`, `fio_read_gbps`) -- what the drive can do;
- lmcache L2 store and load of 32 MiB chunks (Llama-3.1-8B shape, 256 tokens,
  bf16): `l2_store_gbps` is the write-behind from L1 to disk, timed from the
  end of the L1 store until every record is on disk; `l2_load_gbps` loads
  chunks that are only on disk into a paged cache (read, checksum, copy);
- vLLM on the bench model (8K-token prompt, VLLM_CPU_NUM_OF_RESERVED_CPU=1):
  `ttft_lmcache_disk_ms` (a fresh engine process served from disk, the host
  tier emptied before each timed request) next to `ttft_lmcache_l1_ms` and
  `ttft_recompute_ms` from the same runs.

    python benchmarks/bench_disk.py --json disk.json [--dir DIR] [--no-vllm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from report import report

os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"


def fio(directory: str, rw: str, size_mb: int) -> float:
    out = subprocess.run(
        ["fio", "--name=lmcache-bench", f"--directory={directory}", f"--rw={rw}", "--bs=1M", "--iodepth=32",
         "--ioengine=io_uring", "--direct=1", f"--size={size_mb}M", "--numjobs=1", "--output-format=json"],
        check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return job["write" if rw == "write" else "read"]["bw_bytes"] / 1e9


def bench_l2(directory: str, num_chunks: int, repeats: int) -> dict:
    import torch

    import lmcache

    layers, heads, head_dim, block, chunk = 32, 8, 128, 16, 256
    num_tokens = num_chunks * chunk
    blocks = num_tokens // block
    chunk_bytes = layers * 2 * chunk * heads * head_dim * 2
    kv = [torch.randn(2, blocks, block, heads, head_dim).to(torch.bfloat16) for _ in range(layers)]
    dst = [torch.zeros_like(t) for t in kv]
    path = os.path.join(directory, "lmcache-l2")
    shutil.rmtree(path, ignore_errors=True)
    cfg = lmcache.Config(chunk_size=chunk, l1_capacity_gb=(num_chunks + 2) * 32.01 / 1024, local_disk_path=path,
                         disk_capacity_gb=4 * num_chunks * 32 / 1024, write_behind_chunks=2 * num_chunks)
    rng = np.random.default_rng(0)
    stores, loads = [], []
    with lmcache.CacheEngine(cfg, model_id="bench-l2") as engine:
        engine.register_kv_caches(kv)
        backend = engine.disk_backend
        for r in range(repeats + 1):
            tokens = rng.integers(0, 128000, size=num_tokens, dtype=np.int32)
            engine.store(tokens, block_ids=np.arange(blocks))
            t0 = time.perf_counter()
            engine.flush_writes()
            t1 = time.perf_counter()
            engine.clear(include_disk=False)  # only the disk holds them now
            t2 = time.perf_counter()
            loaded = engine.load(tokens, dst, block_ids=np.arange(blocks))
            t3 = time.perf_counter()
            assert loaded == num_tokens, loaded
            s = engine.stats()
            assert s["load_errors"] == 0 and s["write_behind_dropped"] == 0
            engine.clear()
            if r > 0:
                stores.append(t1 - t0)
                loads.append(t3 - t2)
        assert all(torch.equal(a, b) for a, b in zip(kv, dst))
    shutil.rmtree(path, ignore_errors=True)
    gb = num_chunks * chunk_bytes / 1e9
    return {"l2_store_gbps": gb / statistics.median(stores), "l2_load_gbps": gb / statistics.median(loads),
            "l2_backend": backend}


def vllm_child(model: str, disk_dir: str, phase: str, repeats: int, out_path: str) -> None:
    import random
    import uuid

    from lmcache.demo.vllm_runs import make_llm, shutdown, time_first_token
    from lmcache.integrations.vllm import clear_worker_cache, query_worker_stats

    rng = random.Random(1)
    prompt = [rng.randrange(1, 2048) for _ in range(8192)]
    if phase == "recompute":
        llm = make_llm(model, lmcache=None)
        time_first_token(llm, prompt[:300])
        out = {"ttft_recompute_ms": statistics.median(time_first_token(llm, prompt).ttft_s for _ in range(repeats)) * 1e3}
        shutdown(llm)
    else:
        eid = f"bench-disk-{uuid.uuid4()}"
        llm = make_llm(model, lmcache={"l1_capacity_gb": 4, "local_disk_path": disk_dir}, engine_id=eid)
        time_first_token(llm, prompt[::-1][:300])  # warm-up, on other tokens
        if phase == "fill":
            time_first_token(llm, prompt)
            while query_worker_stats(eid)["disk_writes"] < 32:
                time.sleep(0.1)
            out = {}
        else:  # a fresh process: the first timed request is served from disk
            disk, l1 = [], []
            for _ in range(repeats):
                clear_worker_cache(eid, include_disk=False)
                disk.append(time_first_token(llm, prompt).ttft_s)
                l1.append(time_first_token(llm, prompt).ttft_s)
            s = query_worker_stats(eid)
            out = {"ttft_lmcache_disk_ms": statistics.median(disk) * 1e3,
                   "ttft_lmcache_l1_ms": statistics.median(l1) * 1e3,
                   "disk_promoted_chunks": s["promoted_chunks"], "disk_load_errors": s["load_errors"]}
        shutdown(llm)
    with open(out_path, "w") as f:
        json.dump(out, f)


def bench_vllm_disk(directory: str, repeats: int) -> dict:
    from lmcache.demo.models import BENCH_BF16, make_llama

    model = make_llama(os.path.join(tempfile.gettempdir(), "lmcache-bench-llama"), BENCH_BF16)
    disk_dir = os.path.join(directory, "lmcache-vllm")
    shutil.rmtree(disk_dir, ignore_errors=True)
    results = {}
    for phase in ("recompute", "fill", "fresh"):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            subprocess.run([sys.executable, __file__, "--child", phase, "--model", model, "--dir", disk_dir,
                            "--repeats", str(repeats), "--child-out", tmp.name],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results.update(json.load(open(tmp.name)))
    shutil.rmtree(disk_dir, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="a directory on the drive to measure")
    ap.add_argument("--chunks", type=int, default=16, help="32 MiB chunks per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        vllm_child(args.model, args.dir, args.child, args.repeats, args.child_out)
        return

    work = tempfile.mkdtemp(prefix="lmcache-bench-disk-", dir=args.dir)
    size_mb = args.chunks * 32
    r = {"fio_write_gbps": fio(work, "write", size_mb), "fio_read_gbps": fio(work, "read", size_mb)}
    for f in os.listdir(work):
        os.unlink(os.path.join(work, f))
    r.update(bench_l2(work, args.chunks, args.repeats))
    r["l2_store_vs_fio"] = r["l2_store_gbps"] / r["fio_write_gbps"]
    r["l2_load_vs_fio"] = r["l2_load_gbps"] / r["fio_read_gbps"]
    if not args.no_vllm:
        r.update(bench_vllm_disk(work, args.repeats))
        r["disk_vs_l1_ttft"] = r["ttft_lmcache_disk_ms"] / r["ttft_lmcache_l1_ms"]
    shutil.rmtree(work, ignore_errors=True)
    checks = [("l2_store_gbps >= 0.8 * fio_write_gbps", r["l2_store_vs_fio"] >= 0.8),
              ("l2_load_gbps >= 0.8 * fio_read_gbps", r["l2_load_vs_fio"] >= 0.8)]
    if "disk_vs_l1_ttft" in r:
        checks.append(("ttft_lmcache_disk_ms <= 1.2 * ttft_lmcache_l1_ms", r["disk_vs_l1_ttft"] <= 1.2))
    report(r, checks, args.json)


if __name__ == "__main__":
    main()
