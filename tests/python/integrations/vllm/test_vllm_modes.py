"""The pieces of the vLLM connector that decide and drive asynchronous work,
on real engines and threads (the end-to-end runs are in vllm/)."""

import threading

import pytest
from kv_helpers import flash_attn_cache

import lmcache
from lmcache import _core

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

from lmcache.integrations.vllm import modes  # noqa: E402  (imports vLLM)
from lmcache.integrations.vllm.async_stores import AsyncStores  # noqa: E402


@pytest.mark.parametrize("mode,on_gpu", [("auto", False), ("on", False), ("off", False), ("auto", True),
                                         ("on", True), ("off", True)])
def test_modes_agree_with_the_build(mode, on_gpu):
    config = lmcache.Config(layerwise_load=mode, async_store=mode)
    if on_gpu and _core.device_backend() != "cuda":
        expected = False  # the torch fallback moves whole steps, synchronously
    else:
        expected = mode == "on" or (mode == "auto" and on_gpu)
    assert modes.layerwise_loads(config, on_gpu) is expected
    assert modes.async_stores(config, on_gpu) is expected


def test_async_stores_publish_in_order_and_release_requests_once(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    stored = []
    stores = AsyncStores(stored.append)
    toks = [[s * 1000 + i for i in range(32)] for s in range(5)]
    for s, t in enumerate(toks):
        stores.expect(f"req-{s}")
        stores.submit(f"req-{s}", engine.begin_store(t, block_ids=[0, 1, 2, 3]))

    class FailingStore:  # a store whose copy failed: still counted out, or its blocks stay held
        def finish(self):
            raise RuntimeError("copy failed")

    stores.expect("req-broken")
    stores.submit("req-broken", FailingStore())
    stores.expect("req-never-begun")  # begin_store raised: nothing submitted
    stores.drain()
    assert stored == [32] * 5 + [0]
    assert all(engine.lookup(t) == 32 for t in toks)
    assert stores.holding() == 7
    assert stores.finished({"req-0", "req-broken", "req-never-begun", "unrelated"}) == {
        "req-0", "req-broken", "req-never-begun"}
    assert stores.finished({"req-0"}) is None  # each request is released once
    assert stores.holding() == 4

    # A finished request with a store still queued is released only after it.
    gate = threading.Event()

    class SlowStore:
        def finish(self):
            gate.wait(10)
            return 32

    stores.expect("req-slow")
    stores.submit("req-slow", SlowStore())
    assert stores.finished({"req-slow"}) is None
    gate.set()
    stores.drain()
    assert stores.finished(set()) == {"req-slow"}

    # A store still open when the engine closes is given back: 0 tokens, no crash.
    late = engine.begin_store([7] * 32, block_ids=[0, 1, 2, 3])
    engine.close()
    stores.close()
    stores.submit("req-late", late)  # after close: finished on the caller's thread
    assert stored[-1] == 0
