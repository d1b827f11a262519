"""CacheEngine on real torch tensors: round trips, partial hits, eviction, errors."""

import threading

import numpy as np
import pytest
import torch
from kv_helpers import flash_attn_cache

import lmcache
from lmcache import ClosedError, InvalidArgumentError, InvalidStateError


def tokens_of(n, seed=0):
    return np.random.default_rng(seed).integers(0, 32000, size=n).tolist()


def slots_for(block_ids, block_size, n):
    return [b * block_size + i % block_size for i, b in ((i, block_ids[i // block_size]) for i in range(n))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_store_then_load_into_zeroed_cache_is_identical(make_engine, dtype):
    engine = make_engine()
    src = flash_attn_cache(dtype=dtype)
    dst = [torch.zeros_like(t) for t in src]
    engine.register_kv_caches(src)
    toks = tokens_of(64)
    blocks = list(range(8))
    assert engine.store(toks, block_ids=blocks) == 64
    assert engine.lookup(toks) == 64
    assert engine.load(toks, dst, block_ids=blocks) == 64
    for a, b in zip(src, dst):
        assert torch.equal(a[:, :8], b[:, :8])
        assert not b[:, 8:].any()  # nothing else written


def test_load_into_other_blocks(make_engine):
    engine = make_engine()
    src = flash_attn_cache()
    dst = [torch.zeros_like(t) for t in src]
    engine.register_kv_caches(src)
    toks = tokens_of(48)
    engine.store(toks, block_ids=[9, 3, 30, 1, 2, 7])
    assert engine.load(toks, dst, block_ids=[0, 10, 11, 12, 13, 14]) == 48
    for a, b in zip(src, dst):
        assert torch.equal(b[:, 0], a[:, 9]) and torch.equal(b[:, 11], a[:, 30]) and torch.equal(b[:, 14], a[:, 7])


def test_partial_hits(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    shared = tokens_of(32, seed=1)
    a = shared + tokens_of(32, seed=2)
    b = shared + tokens_of(32, seed=3)
    engine.store(a, block_ids=list(range(8)))
    assert engine.lookup(b) == 32  # the shared first two chunks
    assert engine.lookup(a[:40]) == 32  # a partial last chunk is not a hit
    assert engine.lookup(tokens_of(64, seed=9)) == 0
    # Loading b fills only the shared prefix.
    dst = [torch.zeros_like(t) for t in engine._kv_caches]
    assert engine.load(b, dst, block_ids=list(range(8, 16))) == 32
    assert engine.stats()["lookup_hit_tokens"] == 64


def test_load_skips_negative_slots_and_stops_at_slots_given(make_engine):
    engine = make_engine()
    src = flash_attn_cache()
    engine.register_kv_caches(src)
    toks = tokens_of(64)
    engine.store(toks, block_ids=list(range(8)))
    dst = [torch.zeros_like(t) for t in src]
    slots = np.array(slots_for(list(range(8, 16)), 8, 63))  # all but the last token
    slots[:16] = -1  # the engine already holds the first chunk
    assert engine.load(toks, dst, slot_mapping=slots) == 63
    for a, b in zip(src, dst):
        assert not b[:, 8:10].any()  # skipped
        assert torch.equal(b[:, 10:15], a[:, 2:7])
        assert torch.equal(b[:, 15, :7], a[:, 7, :7]) and not b[:, 15, 7].any()  # last token not written


def test_eviction_under_pressure_keeps_serving(make_engine):
    # Each 16-token chunk of this cache is 2*2*16*2*32*4 bytes (+ header) = 16 KiB + 4 KiB slab.
    engine = make_engine(l1_capacity_gb=10 * 20480 / 2**30)  # 10 slabs
    src = flash_attn_cache(blocks=64)
    engine.register_kv_caches(src)
    docs = [tokens_of(32, seed=s) for s in range(20)]  # 40 chunks for 10 slabs
    for i, d in enumerate(docs):
        assert engine.store(d, block_ids=[2 * i % 64, (2 * i + 1) % 64, (2 * i + 2) % 64, (2 * i + 3) % 64]) == 32
    s = engine.stats()
    assert s["evicted_chunks"] >= 30 and s["l1_chunks"] <= 10
    assert engine.lookup(docs[-1]) == 32  # the newest survives
    assert engine.lookup(docs[0]) == 0  # the oldest went
    dst = [torch.zeros_like(t) for t in src]
    i = 19
    blocks = [2 * i % 64, (2 * i + 1) % 64, (2 * i + 2) % 64, (2 * i + 3) % 64]
    assert engine.load(docs[-1], dst, block_ids=list(range(4))) == 32
    for a, b in zip(src, dst):
        assert torch.equal(b[:, :4], a[:, blocks])


def test_pinned_chunks_survive_pressure(make_engine):
    engine = make_engine(l1_capacity_gb=4 * 20480 / 2**30)
    engine.register_kv_caches(flash_attn_cache(blocks=64))
    keep = tokens_of(32, seed=100)
    engine.store(keep, block_ids=[0, 1, 2, 3])
    assert engine.pin(keep) == 2
    for s in range(10):
        engine.store(tokens_of(32, seed=s), block_ids=[4, 5, 6, 7])
    assert engine.lookup(keep) == 32
    assert engine.unpin(keep) == 2


@pytest.mark.parametrize("kind", ["list", "numpy32", "numpy64", "torch"])
def test_token_types(make_engine, kind):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    toks = tokens_of(32)
    engine.store(toks, block_ids=[0, 1, 2, 3])
    given = {
        "list": toks,
        "numpy32": np.array(toks, dtype=np.int32),
        "numpy64": np.array(toks, dtype=np.int64),
        "torch": torch.tensor(toks),
    }[kind]
    assert engine.lookup(given) == 32
    assert engine.chunk_keys(given) == engine.chunk_keys(toks)


def test_keys_depend_on_namespace():
    cache = flash_attn_cache()
    keys = {}
    for name, kwargs in {
        "base": {},
        "tenant": {"tenant_salt": "acme"},
        "model": {"model_id": "other"},
    }.items():
        cfg = lmcache.Config(chunk_size=16, l1_capacity_gb=0.01, **kwargs)
        with lmcache.CacheEngine(cfg, model_id="m") as e:
            e.register_kv_caches(cache)
            keys[name] = e.chunk_keys(list(range(16)))[0]
    with lmcache.CacheEngine(lmcache.Config(chunk_size=16, l1_capacity_gb=0.01), model_id="m", tp_rank=1, tp_size=2) as e:
        e.register_kv_caches(cache)
        keys["tp"] = e.chunk_keys(list(range(16)))[0]
    assert len(set(keys.values())) == 4


def test_wrong_input_raises_clear_errors(make_engine):
    engine = make_engine()
    cache = flash_attn_cache()
    with pytest.raises(InvalidStateError, match="register"):
        engine.lookup([1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="no KV caches"):
        engine.store(tokens_of(16), block_ids=[0, 1])
    engine.register_kv_caches(cache)
    toks = tokens_of(32)
    # wrong shapes
    with pytest.raises(InvalidArgumentError, match="5-D"):
        engine.store(toks, [t[0] for t in cache], block_ids=[0, 1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="differs from the registered"):
        engine.store(toks, flash_attn_cache(heads=4), block_ids=[0, 1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="same shape"):
        engine.store(toks, [cache[0], cache[1][:, :4]], block_ids=[0, 1, 2, 3])
    # wrong dtypes
    with pytest.raises(InvalidArgumentError, match="unsupported KV dtype"):
        engine.store(toks, [t.to(torch.float64) for t in cache], block_ids=[0, 1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="differs from the registered"):
        engine.store(toks, [t.to(torch.float16) for t in cache], block_ids=[0, 1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="integers"):
        engine.store(toks, slot_mapping=np.zeros(32, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="tokens"):
        engine.lookup([1.5, 2])
    with pytest.raises(InvalidArgumentError, match="out of range"):
        engine.lookup([-1, 2])
    # wrong lengths
    with pytest.raises(InvalidArgumentError, match="cannot hold"):
        engine.store(toks, block_ids=[0])
    with pytest.raises(InvalidArgumentError, match="more slots than tokens"):
        engine.store(toks[:8], slot_mapping=list(range(16)))
    with pytest.raises(InvalidArgumentError, match="outside the KV cache"):
        engine.store(toks, slot_mapping=[10**6] * 32)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        engine.store(toks)
    with pytest.raises(InvalidArgumentError, match="unknown KV layout"):
        engine.store(toks, cache, layout="nope", block_ids=[0, 1, 2, 3])
    assert engine.stats()["stored_chunks"] == 0  # nothing half-done
    # closed engine
    engine.close()
    for call in (lambda: engine.lookup(toks), lambda: engine.store(toks, block_ids=[0, 1, 2, 3]), engine.clear):
        with pytest.raises(ClosedError):
            call()


def test_too_small_capacity_is_a_clear_error():
    engine = lmcache.CacheEngine(lmcache.Config(chunk_size=256, l1_capacity_gb=0.0001))
    with pytest.raises(InvalidArgumentError, match="smaller than one chunk"):
        engine.register_kv_caches(flash_attn_cache(head_dim=128, heads=8, layers=32, blocks=4, block_size=64))
    engine.close()


def test_concurrent_threads(make_engine):
    engine = make_engine(l1_capacity_gb=20 * 20480 / 2**30)
    src = flash_attn_cache(blocks=64)
    engine.register_kv_caches(src)
    errors = []

    def work(seed):
        try:
            dst = [torch.zeros_like(t) for t in src]
            for r in range(30):
                d = r % 7
                toks = tokens_of(32, seed=d)
                blocks = [4 * d, 4 * d + 1, 4 * d + 2, 4 * d + 3]
                engine.store(toks, block_ids=blocks)
                n = engine.load(toks, dst, block_ids=[60, 61, 62, 63])
                for a, b in zip(src, dst):
                    got = b[:, 60:64].reshape(2, -1, 2, 32)[:, :n]
                    want = a[:, blocks].reshape(2, -1, 2, 32)[:, :n]
                    if not torch.equal(got, want):
                        errors.append("mismatch")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    # Each thread loads into its own copy; stores read the shared source.
    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_layer_by_layer_load(make_engine):
    """begin_load holds the prefix; layers arrive only when asked for, in order."""
    engine = make_engine()
    src = flash_attn_cache()
    engine.register_kv_caches(src)
    toks = tokens_of(64, seed=4)
    engine.store(toks, block_ids=list(range(8)))
    dst = [torch.zeros_like(t) for t in src]
    with engine.begin_load(toks + [1, 2, 3], dst, block_ids=list(range(8, 17))) as load:
        assert load.tokens == 64 and load.num_layers == len(src) and load.layers_done == 0
        assert not any(t.any() for t in dst)
        load.load_layers(1)
        assert torch.equal(dst[0][:, 8:16], src[0][:, :8])
        assert not any(t.any() for t in dst[1:])
        engine.clear()  # held chunks are not dropped while the load is open
        load.load_layers(len(src))
    for a, b in zip(src, dst):
        assert torch.equal(b[:, 8:16], a[:, :8])
    with pytest.raises(InvalidStateError):
        load.load_layers(len(src))  # finished
    assert engine.lookup(toks) == 64  # clear above left the held chunks
    engine.clear()
    assert engine.lookup(toks) == 0


def test_layer_by_layer_load_by_ids(make_engine):
    engine = make_engine()
    src = flash_attn_cache()
    engine.register_kv_caches(src)
    ids = ["page-a", "page-b"]
    cs = engine.chunk_size
    engine.store(engine.keys_from_ids(ids), slot_mapping=np.arange(2 * cs))
    dst = [torch.zeros_like(t) for t in src]
    load = engine.begin_load(engine.keys_from_ids(ids + ["page-missing"]), dst, slot_mapping=np.arange(2 * cs, 5 * cs))
    assert load.tokens == 2 * cs
    load.load_layers(len(src))
    load.finish()
    for a, b in zip(src, dst):
        a, b = a.flatten(1, 2), b.flatten(1, 2)  # (planes, slots, heads, head_dim)
        assert torch.equal(b[:, 2 * cs: 4 * cs], a[:, : 2 * cs])
        assert not b[:, 4 * cs:].any()


def test_pending_load_outlives_a_closed_engine(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    toks = tokens_of(32)
    engine.store(toks, block_ids=[0, 1, 2, 3])
    load = engine.begin_load(toks, block_ids=[4, 5, 6, 7])
    engine.close()
    with pytest.raises(ClosedError):
        load.load_layers(1)
    load.finish()  # a no-op: close finished it
    del load


def test_store_in_two_steps(make_engine):
    engine = make_engine()
    src = flash_attn_cache()
    engine.register_kv_caches(src)
    toks = tokens_of(64, seed=5)
    store = engine.begin_store(toks, block_ids=list(range(8)))
    assert store.tokens == 64
    assert engine.lookup(toks) == 0  # not published yet
    assert engine.store(toks, block_ids=list(range(8))) == 0  # being written by the pending store
    assert store.finish() == 64 and store.finish() == 64
    assert engine.lookup(toks) == 64
    dst = [torch.zeros_like(t) for t in src]
    assert engine.load(toks, dst, block_ids=list(range(8))) == 64
    for a, b in zip(src, dst):
        assert torch.equal(a[:, :8], b[:, :8])
    xy = engine.keys_from_ids(["x", "y"])
    ids_store = engine.begin_store(xy, slot_mapping=np.arange(2 * engine.chunk_size))
    assert ids_store.finish() == 2 * engine.chunk_size and engine.lookup(xy) == 2 * engine.chunk_size


def test_store_finished_on_another_thread(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    stores = [engine.begin_store(tokens_of(32, seed=s), block_ids=[0, 1, 2, 3]) for s in range(4)]
    threads = [threading.Thread(target=s.finish) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(engine.lookup(tokens_of(32, seed=s)) == 32 for s in range(4))


@pytest.mark.parametrize("scheme", ["lmcache", "sglang"])
def test_a_request_is_hashed_once(make_engine, scheme):
    engine = make_engine(key_scheme=scheme)
    src = flash_attn_cache()
    dst = [torch.zeros_like(t) for t in src]
    engine.register_kv_caches(src)
    toks = tokens_of(64, seed=11)
    keys = engine.keys(toks)  # the one pass: lookup, store and load reuse the keys
    assert len(keys) == 64 // engine.chunk_size
    assert engine.lookup(keys) == 0
    assert engine.store(keys, block_ids=list(range(8))) == 64
    assert engine.lookup(keys) == 64
    assert engine.load(keys, dst, block_ids=list(range(8))) == 64
    with engine.begin_load(keys[:2], dst, slot_mapping=np.arange(2 * engine.chunk_size)) as load:
        assert load.tokens == 2 * engine.chunk_size
    s = engine.stats()
    assert s["hash_passes"] == 1 and s["hashed_tokens"] == 64
    for a, b in zip(src, dst):
        assert torch.equal(a[:, :8], b[:, :8])
    # Token ids are hashed on each call that takes them.
    assert engine.lookup(toks) == 64 and engine.stats()["hash_passes"] == 2


def test_sglang_scheme_keys_are_sglang_page_names(make_engine):
    import hashlib

    from lmcache.keys import sglang_page_hashes

    engine = make_engine(key_scheme="sglang")
    engine.register_kv_caches(flash_attn_cache())
    cs, toks = engine.chunk_size, tokens_of(3 * 16 + 5, seed=3)
    names, prev = [], b""
    for p in range(len(toks) // cs):  # SGLang's definition, page by page
        h = hashlib.sha256(prev + np.asarray(toks[p * cs:(p + 1) * cs], dtype="<u4").tobytes())
        prev = h.digest()
        names.append(h.hexdigest())
    assert sglang_page_hashes(toks, cs) == names
    assert engine.keys(toks) == engine.keys_from_ids(names)


def test_chunk_keys_cross_as_one_buffer(make_engine):
    engine = make_engine()
    engine.register_kv_caches(flash_attn_cache())
    keys = engine.keys(tokens_of(64))
    raw = keys.to_bytes()
    assert len(raw) == 16 * len(keys) and lmcache._core.ChunkKeys.from_bytes(raw) == keys
    assert keys[1:3].hex() == keys.hex()[1:3] and len(keys[10:]) == 0
    with pytest.raises(InvalidArgumentError):
        lmcache._core.ChunkKeys.from_bytes(b"x" * 17)
    with pytest.raises(InvalidArgumentError):
        keys[::2]
