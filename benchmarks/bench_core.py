"""Core benchmark: key hashing + lookup, and L1 store/load bandwidth, in
process and through a node server (`lmcache server`, shared memory).

Everything is measured in one run and reported next to its baseline:
- lookup of a 100K-token prompt (all hits) vs the Python sha256 block-hash
  chain engines use (16-token blocks, pickle of (parent, tuple(block)));
- L1 store/load of 256-token Llama-3.1-8B-shaped chunks (32 layers, 8 KV
  heads, head dim 128, bf16: 32 MiB a chunk) between a paged CPU cache and
  L1, vs one plain memcpy of the same bytes;
- the same store/load through a node server in another process (the engine
  maps the server's shared pool and copies records itself), vs in-process L1.

    python benchmarks/bench_core.py --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import statistics
import time

import numpy as np
import torch

import lmcache
from report import report


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_lookup(num_tokens: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 128000, size=num_tokens, dtype=np.int32)
    chunk = 256
    # A tiny KV shape: the lookup cost does not depend on the KV size.
    cfg = lmcache.Config(chunk_size=chunk, l1_capacity_gb=0.25)
    with lmcache.CacheEngine(cfg, model_id="bench") as engine:
        kv = [torch.zeros(2, num_tokens // 16 + 1, 16, 1, 32, dtype=torch.float16)]
        engine.register_kv_caches(kv)
        slots = np.arange(num_tokens, dtype=np.int64)
        engine.store(tokens, slot_mapping=slots)
        hit = engine.lookup(tokens)
        assert hit == num_tokens // chunk * chunk, hit
        lookup_s = median_time(lambda: engine.lookup(tokens), repeats)
        token_list = tokens.tolist()
        lookup_list_s = median_time(lambda: engine.lookup(token_list), repeats)

    def sha256_chain():
        parent = b""
        for i in range(0, num_tokens - 15, 16):
            parent = hashlib.sha256(pickle.dumps((parent, tuple(token_list[i : i + 16])))).digest()

    sha_s = median_time(sha256_chain, max(3, repeats // 10))
    return {
        "lookup_ns_per_token_100k": lookup_s / num_tokens * 1e9,
        "lookup_list_ns_per_token_100k": lookup_list_s / num_tokens * 1e9,
        "sha256_ns_per_token_100k": sha_s / num_tokens * 1e9,
    }


def _store_load(cfg: "lmcache.Config", num_chunks: int, repeats: int, prefix: str) -> dict:
    """Median store and load bandwidth of num_chunks chunks between a paged
    CPU cache and lmcache (configured by `cfg`)."""
    layers, heads, head_dim, block, chunk = 32, 8, 128, 16, 256
    num_tokens = num_chunks * chunk
    blocks = num_tokens // block
    kv = [torch.randn(2, blocks, block, heads, head_dim).to(torch.bfloat16) for _ in range(layers)]
    dst = [torch.zeros_like(t) for t in kv]
    perm = np.random.default_rng(1).permutation(blocks).astype(np.int64)  # scattered blocks, as in an engine
    rng = np.random.default_rng(2)
    store_times, load_times = [], []
    with lmcache.CacheEngine(cfg, model_id="bench-l1") as engine:
        engine.register_kv_caches(kv)
        for r in range(repeats + 1):
            tokens = rng.integers(0, 128000, size=num_tokens, dtype=np.int32)  # fresh keys: a real store
            t0 = time.perf_counter()
            stored = engine.store(tokens, block_ids=perm)
            t1 = time.perf_counter()
            loaded = engine.load(tokens, dst, block_ids=perm)
            t2 = time.perf_counter()
            assert stored == loaded == num_tokens, (stored, loaded)
            engine.clear()
            if r > 0:  # the first round warms the pool's pages
                store_times.append(t1 - t0)
                load_times.append(t2 - t1)
        assert all(torch.equal(a, b) for a, b in zip(kv, dst))
    gb = num_chunks * layers * 2 * chunk * heads * head_dim * 2 / 1e9
    return {f"{prefix}_store_gbps": gb / statistics.median(store_times),
            f"{prefix}_load_gbps": gb / statistics.median(load_times)}


def bench_l1(num_chunks: int, repeats: int) -> dict:
    chunk_bytes = 32 * 2 * 256 * 8 * 128 * 2
    capacity_gb = (num_chunks + 1) * chunk_bytes / 2**30
    out = _store_load(lmcache.Config(chunk_size=256, l1_capacity_gb=capacity_gb), num_chunks, repeats, "l1")
    total = num_chunks * chunk_bytes
    src = np.random.default_rng(3).integers(0, 255, size=total, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    memcpy_s = median_time(lambda: np.copyto(dst, src), repeats)
    out.update(memcpy_gbps=total / 1e9 / memcpy_s, chunk_mib=chunk_bytes / 2**20, chunks_per_call=num_chunks)
    return out


def bench_shm(num_chunks: int, repeats: int) -> dict:
    """The same through `lmcache server` in another process."""
    import os
    import subprocess
    import sys
    import tempfile

    chunk_bytes = 32 * 2 * 256 * 8 * 128 * 2
    capacity_gb = (num_chunks + 1) * chunk_bytes / 2**30
    work = tempfile.mkdtemp(prefix="lmcache-bench-shm-")
    sock = os.path.join(work, "run", "lmcache.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMCACHE_")}
    env.update(LMCACHE_CHUNK_SIZE="256", LMCACHE_L1_CAPACITY_GB=str(capacity_gb))
    server = subprocess.Popen([sys.executable, "-m", "lmcache.cli", "server", "--socket", sock], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        if "serving" not in server.stdout.readline():
            raise RuntimeError("lmcache server did not start")
        cfg = lmcache.Config(chunk_size=256, server_socket=sock)
        return _store_load(cfg, num_chunks, repeats, "shm")
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--chunks", type=int, default=8, help="32 MiB chunks per store/load call")
    args = ap.parse_args()

    results = {}
    results.update(bench_lookup(100_000, args.repeats * 5))
    results.update(bench_l1(args.chunks, args.repeats))
    results.update(bench_shm(args.chunks, args.repeats))
    results["lookup_speedup_vs_sha256"] = results["sha256_ns_per_token_100k"] / results["lookup_ns_per_token_100k"]
    results["l1_store_vs_memcpy"] = results["l1_store_gbps"] / results["memcpy_gbps"]
    results["l1_load_vs_memcpy"] = results["l1_load_gbps"] / results["memcpy_gbps"]
    results["shm_store_vs_l1"] = results["shm_store_gbps"] / results["l1_store_gbps"]
    results["shm_load_vs_l1"] = results["shm_load_gbps"] / results["l1_load_gbps"]

    targets = {
        "lookup_ns_per_token_100k": ("<=", 10.0),
        "lookup_speedup_vs_sha256": (">=", 7.0),
        "l1_store_vs_memcpy": (">=", 0.8),
        "l1_load_vs_memcpy": (">=", 0.8),
        "shm_store_vs_l1": (">=", 0.8),
        "shm_load_vs_l1": (">=", 0.8),
    }
    checks = [(f"{key} {op} {bound:g}", results[key] <= bound if op == "<=" else results[key] >= bound)
              for key, (op, bound) in targets.items()]
    report(results, checks, args.json)


if __name__ == "__main__":
    main()
