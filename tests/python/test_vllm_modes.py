"""The pieces of the vLLM connector that decide and drive asynchronous work,
on real engines and threads (the end-to-end runs are in vllm/)."""

import threading

import pytest
from kv_helpers import flash_attn_cache

import lmcache
from lmcache import _core

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

from lmcache.integrations.vllm import modes  # noqa: E402  (imports vLLM)
from lmcache.integrations.vllm.store_finisher import StoreFinisher  # noqa: E402


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


def test_finisher_publishes_in_order_and_reports_failures(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    done = []
    lock = threading.Lock()

    def on_done(req_id, tokens):
        with lock:
            done.append((req_id, tokens))

    finisher = StoreFinisher(on_done)
    toks = [[s * 1000 + i for i in range(32)] for s in range(5)]
    for s, t in enumerate(toks):
        finisher.submit(f"req-{s}", engine.begin_store(t, block_ids=[0, 1, 2, 3]))

    class Broken:
        def finish(self):
            raise RuntimeError("copy failed")

    finisher.submit("req-broken", Broken())
    finisher.drain()
    assert done == [(f"req-{s}", 32) for s in range(5)] + [("req-broken", 0)]
    assert all(engine.lookup(t) == 32 for t in toks)
    # A store still open when the engine closes is given back: 0 tokens, no crash.
    late = engine.begin_store([7] * 32, block_ids=[0, 1, 2, 3])
    engine.close()
    finisher.submit("req-late", late)
    finisher.close()
    assert done[-1] == ("req-late", 0)
