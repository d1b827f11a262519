"""Remote tier benchmark against a local redis-server started for the run:

- raw SET / GET of 32 MiB values with the same client (redis-py + hiredis,
  one value per round trip): `raw_set_gbps`, `raw_get_gbps`;
- lmcache L3 store / load of 32 MiB chunks (Llama-3.1-8B shape, 256 tokens,
  bf16): `l3_store_gbps` is the write-behind from host memory to the server
  (export, encode, pipelined SET), timed from the end of the L1 store until
  every chunk is on the server; `l3_load_gbps` loads chunks only the server
  has into a paged cache (pipelined GET, checks, import, copy);
- the same store and load through the C API (liblmcache.so and its native
  Redis client, driven through ctypes): `c_l3_store_gbps`,
  `c_l3_load_gbps` (the load in a fresh engine, so every chunk comes from
  the server);
- codecs: size ratio per codec and, for fp8, the relative error.

    python benchmarks/bench_remote.py --json remote.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
from report import report

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python", "c_api"))

from lmcache.record_key import derive_record_key  # noqa: E402

# The remote tier seals every value; a benchmark's own secret (never one of a deployment).
BENCH_SECRET = "bench-remote-secret-0123456789ab"


def native_client(url: str, args, r: dict) -> None:
    """L3 store and load of the same chunks through the C API's native client."""
    from c_engine import CEngine

    layers, heads, head_dim, block, chunk = 32, 8, 128, 16, 256
    n = args.chunks * chunk
    blocks = n // block
    rng = np.random.default_rng(2)
    src = [rng.standard_normal((2, blocks, block, heads, head_dim), dtype=np.float32).astype(np.float16)
           for _ in range(layers)]
    dst = [np.zeros_like(a) for a in src]
    config = dict(chunk_size=chunk, l1_capacity_gb=(args.chunks + 2) * 32.01 / 1024, remote_url=url,
                  remote_timeout_s=30, remote_queue_chunks=4 * args.chunks, auth_secret=BENCH_SECRET,
                  model_id="bench-l3-c")
    stores, loads = [], []
    for rep in range(args.repeats + 1):
        tokens = rng.integers(0, 128000, size=n).tolist()
        with CEngine(src, **config) as a:
            a.store(tokens, range(blocks))
            t0 = time.perf_counter()
            a.flush()
            t1 = time.perf_counter()
            assert a.stat("remote_puts") == args.chunks and a.stat("remote_errors") == 0
        with CEngine(dst, **config) as b:
            t2 = time.perf_counter()
            loaded = b.load(tokens, range(blocks))
            t3 = time.perf_counter()
            assert loaded == n and b.stat("remote_gets") == args.chunks, loaded
        if rep > 0:
            stores.append(t1 - t0)
            loads.append(t3 - t2)
    assert all(np.array_equal(x, y) for x, y in zip(src, dst))
    gb = args.chunks * layers * 2 * chunk * heads * head_dim * 2 / 1e9
    r["c_l3_store_gbps"] = gb / statistics.median(stores)
    r["c_l3_load_gbps"] = gb / statistics.median(loads)
    r["c_l3_store_vs_raw"] = r["c_l3_store_gbps"] / r["raw_set_gbps"]
    r["c_l3_load_vs_raw"] = r["c_l3_load_gbps"] / r["raw_get_gbps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import redis
    import torch

    import lmcache
    from redis_servers import RedisServer

    server = RedisServer("--maxmemory", "0")
    try:
        r = {}
        client = redis.Redis(port=server.port, socket_timeout=30)
        value = np.random.default_rng(0).integers(0, 255, size=32 << 20, dtype=np.uint8).tobytes()
        sets, gets = [], []
        for i in range(args.repeats * args.chunks):
            t0 = time.perf_counter()
            client.set(f"raw:{i}", value)
            t1 = time.perf_counter()
            got = client.get(f"raw:{i}")
            t2 = time.perf_counter()
            assert len(got) == len(value)
            sets.append(t1 - t0)
            gets.append(t2 - t1)
        client.flushall()
        gb = len(value) / 1e9
        r["raw_set_gbps"] = gb / statistics.median(sets)
        r["raw_get_gbps"] = gb / statistics.median(gets)

        layers, heads, head_dim, block, chunk = 32, 8, 128, 16, 256
        n = args.chunks * chunk
        blocks = n // block
        kv = [torch.randn(2, blocks, block, heads, head_dim).to(torch.bfloat16) for _ in range(layers)]
        dst = [torch.zeros_like(t) for t in kv]
        chunk_bytes = layers * 2 * chunk * heads * head_dim * 2
        cfg = lmcache.Config(chunk_size=chunk, l1_capacity_gb=(args.chunks + 2) * 32.01 / 1024,
                             remote_url=server.url, remote_timeout_s=30, remote_queue_chunks=4 * args.chunks,
                             auth_secret=BENCH_SECRET)
        rng = np.random.default_rng(1)
        stores, loads = [], []
        with lmcache.CacheEngine(cfg, model_id="bench-l3") as e:
            e.register_kv_caches(kv)
            for rep in range(args.repeats + 1):
                tokens = rng.integers(0, 128000, size=n, dtype=np.int32)
                e.store(tokens, block_ids=np.arange(blocks))
                t0 = time.perf_counter()
                e.flush_writes()
                t1 = time.perf_counter()
                e.clear()
                t2 = time.perf_counter()
                loaded = e.load(tokens, dst, block_ids=np.arange(blocks))
                t3 = time.perf_counter()
                assert loaded == n, loaded
                e.clear()
                if rep > 0:
                    stores.append(t1 - t0)
                    loads.append(t3 - t2)
            s = e.stats()
            assert s["remote_bad_values"] == 0 and s["remote_errors"] == 0 and s["load_errors"] == 0
        assert all(torch.equal(a, b) for a, b in zip(kv, dst))
        gb = args.chunks * chunk_bytes / 1e9
        r["l3_store_gbps"] = gb / statistics.median(stores)
        r["l3_load_gbps"] = gb / statistics.median(loads)
        r["l3_store_vs_raw"] = r["l3_store_gbps"] / r["raw_set_gbps"]
        r["l3_load_vs_raw"] = r["l3_load_gbps"] / r["raw_get_gbps"]

        native_client(server.url, args, r)

        # Codecs on one chunk of real-looking KV (random normal, bf16).
        from lmcache.remote import wire

        with lmcache.CacheEngine(lmcache.Config(chunk_size=chunk, l1_capacity_gb=0.1), model_id="codec") as e:
            e.register_kv_caches(kv)
            tokens = list(range(chunk))
            e.store(tokens, block_ids=np.arange(chunk // block))
            chunk_key = e.chunk_keys(tokens)[0]
            record = e._runtime.export_record(chunk_key)
        key = wire.RecordKey(derive_record_key(BENCH_SECRET.encode()))
        for codec in ("zstd", "lz4", "fp8"):
            t0 = time.perf_counter()
            enc = wire.encode(record, codec, chunk_key=chunk_key, key=key)
            t1 = time.perf_counter()
            dec = wire.decode(enc, chunk_key=chunk_key, expected_record_bytes=len(record), key=key)
            t2 = time.perf_counter()
            r[f"{codec}_size_ratio"] = len(enc) / len(record)
            r[f"{codec}_encode_gbps"] = len(record) / 1e9 / (t1 - t0)
            r[f"{codec}_decode_gbps"] = len(record) / 1e9 / (t2 - t1)
            if codec == "fp8":
                a = torch.frombuffer(bytearray(record[wire.RECORD_HEADER_BYTES:]), dtype=torch.bfloat16).float()
                b = torch.frombuffer(bytearray(dec[wire.RECORD_HEADER_BYTES:]), dtype=torch.bfloat16).float()
                r["fp8_max_abs_error_rel"] = float((a - b).abs().max() / a.abs().max())
                r["fp8_rms_error_rel"] = float(((a - b) ** 2).mean().sqrt() / (a**2).mean().sqrt())
            else:
                assert bytes(dec) == record
    finally:
        server.stop()

    report(r, [("l3_store_gbps >= 0.8 * raw_set_gbps", r["l3_store_vs_raw"] >= 0.8),
               ("l3_load_gbps >= 0.8 * raw_get_gbps", r["l3_load_vs_raw"] >= 0.8),
               ("c_l3_store_gbps >= 0.8 * raw_set_gbps", r["c_l3_store_vs_raw"] >= 0.8),
               ("c_l3_load_gbps >= 0.8 * raw_get_gbps", r["c_l3_load_vs_raw"] >= 0.8)], args.json)


if __name__ == "__main__":
    main()
