"""lmcache's Python API on GPU tensors (tests/gpu/check.sh runs it when the
package could be built there). Checks, against plain torch indexing, a store
and load of a vLLM flash-attention cache in GPU memory, a layer-by-layer load
whose layers are waited for with events on the compute stream, and a store in
two steps finished on another thread; then prints store/load GB/s next to a
torch copy of the same bytes to and from pinned host memory.

    python tests/gpu/python_gpu_check.py        # exit code 0 = pass
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import torch

import lmcache
from lmcache import _core

LAYERS, BLOCKS, BLOCK, HEADS, DIM = 32, 512, 16, 8, 128  # Llama-3.1-8B-shaped, bf16
CHUNK = 256


def slots_of(blocks: list[int]) -> torch.Tensor:
    b = torch.tensor(blocks, dtype=torch.int64)
    return (b[:, None] * BLOCK + torch.arange(BLOCK)).reshape(-1)


def gathered(caches, slots) -> list[torch.Tensor]:
    """The tokens at `slots` of each layer, as torch sees them: (2, n, heads, dim)."""
    return [c.flatten(1, 2)[:, slots.to(c.device)] for c in caches]


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    assert _core.device_backend() == "cuda", "lmcache was built without CUDA"
    dev = torch.device("cuda", 0)
    src = [torch.randn(2, BLOCKS, BLOCK, HEADS, DIM, device=dev).to(torch.bfloat16) for _ in range(LAYERS)]
    dst = [torch.zeros_like(t) for t in src]
    engine = lmcache.CacheEngine(lmcache.Config(chunk_size=CHUNK, l1_capacity_gb=8), model_id="gpu-check")
    engine.register_kv_caches(src, layout="vllm_flash_attn")
    n = 4 * CHUNK
    tokens = list(range(1, n + 1))
    src_blocks = list(range(0, n // BLOCK))
    dst_blocks = list(range(BLOCKS - 1, BLOCKS - 1 - n // BLOCK, -1))

    # Whole store and load.
    assert engine.store(tokens, block_ids=src_blocks) == n
    assert engine.lookup(tokens) == n
    assert engine.load(tokens, dst, block_ids=dst_blocks) == n
    for a, b in zip(gathered(src, slots_of(src_blocks)), gathered(dst, slots_of(dst_blocks))):
        assert torch.equal(a, b)
    print("ok: store and load of GPU caches match torch")

    # Layer by layer: every layer enqueued on a load stream with an event;
    # the compute stream waits on each layer's event only.
    for t in dst:
        t.zero_()
    load_stream = torch.cuda.Stream(dev)
    load_stream.wait_stream(torch.cuda.current_stream(dev))
    events = []
    with engine.begin_load(tokens, dst, block_ids=dst_blocks, stream=load_stream.cuda_stream) as load:
        assert load.tokens == n
        for layer in range(LAYERS):
            load.load_layers(layer + 1)
            e = torch.cuda.Event()
            e.record(load_stream)
            events.append(e)
        sums = []
        for layer in range(LAYERS):
            torch.cuda.current_stream(dev).wait_event(events[layer])
            sums.append(dst[layer].float().sum())  # "compute" that reads the layer
        torch.cuda.synchronize()
    for a, b in zip(gathered(src, slots_of(src_blocks)), gathered(dst, slots_of(dst_blocks))):
        assert torch.equal(a, b)
    print("ok: layer-by-layer load with per-layer events matches torch")

    # A store in two steps, finished on another thread.
    other = list(range(10_000, 10_000 + n))
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    store = engine.begin_store(other, block_ids=src_blocks, stream=side.cuda_stream)
    assert store.tokens == n and engine.lookup(other) == 0
    finisher = threading.Thread(target=store.finish)
    finisher.start()
    finisher.join()
    assert engine.lookup(other) == n
    print("ok: a store in two steps is published by finish() on another thread")

    # Bandwidth: 32 MiB chunks (256 tokens x 32 layers x K,V x 8 heads x 128 x bf16).
    n = 16 * CHUNK
    src_blocks = list(range(n // BLOCK))
    chunk_bytes = CHUNK * LAYERS * 2 * HEADS * DIM * 2
    total = (n // CHUNK) * chunk_bytes
    pinned = torch.empty(total, dtype=torch.uint8, pin_memory=True)
    flat = torch.empty(total, dtype=torch.uint8, device=dev)

    def timed(fn, reps=7):
        times = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return total / statistics.median(times) / 1e9

    d2h = timed(lambda: pinned.copy_(flat, non_blocking=True))
    h2d = timed(lambda: flat.copy_(pinned, non_blocking=True))
    seq = [0]

    def store_once():
        seq[0] += 1
        engine.store([seq[0] * 100_000 + i for i in range(n)], block_ids=src_blocks)

    toks = [7_000_000 + i for i in range(n)]
    engine.store(toks, block_ids=src_blocks)
    st = timed(store_once)
    ld = timed(lambda: engine.load(toks, dst, block_ids=src_blocks))
    print(f"{'':24}{'GB/s':>8}{'vs torch copy':>16}")
    print(f"{'torch D2H (pinned)':24}{d2h:8.1f}")
    print(f"{'torch H2D (pinned)':24}{h2d:8.1f}")
    print(f"{'lmcache store (D2H)':24}{st:8.1f}{st / d2h:15.2f}x")
    print(f"{'lmcache load (H2D)':24}{ld:8.1f}{ld / h2d:15.2f}x")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
